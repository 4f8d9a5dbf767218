// Authenticated encryption of secrets at rest (upstream registry passwords, S3 keys, webhook
// signing secrets): AES-256-GCM under MERIDIAN_SECRET_KEY. Each ciphertext names the key it was
// sealed with (a fingerprint), so the key can be rotated: start with the new key in
// MERIDIAN_SECRET_KEY and the old one in MERIDIAN_SECRET_KEY_PREVIOUS, run
// `meridian secrets rotate`, then drop the previous key.
import { createCipheriv, createDecipheriv, createHash, randomBytes } from 'node:crypto';

const VERSION = 1;
const FINGERPRINT_BYTES = 8;
const IV_BYTES = 12;
const TAG_BYTES = 16;

export class SecretBoxError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'SecretBoxError';
  }
}

function fingerprint(key: Buffer): Buffer {
  return createHash('sha256').update('meridian-secretbox').update(key).digest().subarray(0, FINGERPRINT_BYTES);
}

export class SecretBox {
  private readonly keys: { key: Buffer; fp: Buffer }[];

  /** The first key seals; all of them open. */
  constructor(current: Buffer, ...previous: Buffer[]) {
    this.keys = [current, ...previous].map((key) => {
      if (key.length !== 32) throw new SecretBoxError('secret keys must be 32 bytes');
      return { key, fp: fingerprint(key) };
    });
  }

  seal(plaintext: string, context: string): Buffer {
    const { key, fp } = this.keys[0]!;
    const iv = randomBytes(IV_BYTES);
    const cipher = createCipheriv('aes-256-gcm', key, iv);
    // The context (e.g. "mirror:42:password") is bound in, so a ciphertext cannot be moved to
    // another row and decrypt there.
    cipher.setAAD(Buffer.from(context));
    const body = Buffer.concat([cipher.update(plaintext, 'utf8'), cipher.final()]);
    return Buffer.concat([Buffer.from([VERSION]), fp, iv, body, cipher.getAuthTag()]);
  }

  open(sealed: Buffer, context: string): string {
    if (sealed.length < 1 + FINGERPRINT_BYTES + IV_BYTES + TAG_BYTES || sealed[0] !== VERSION) {
      throw new SecretBoxError('not a sealed secret');
    }
    const fp = sealed.subarray(1, 1 + FINGERPRINT_BYTES);
    const entry = this.keys.find((k) => k.fp.equals(fp));
    if (!entry) throw new SecretBoxError('sealed with a key that is not configured (MERIDIAN_SECRET_KEY / MERIDIAN_SECRET_KEY_PREVIOUS)');
    const iv = sealed.subarray(1 + FINGERPRINT_BYTES, 1 + FINGERPRINT_BYTES + IV_BYTES);
    const tag = sealed.subarray(sealed.length - TAG_BYTES);
    const body = sealed.subarray(1 + FINGERPRINT_BYTES + IV_BYTES, sealed.length - TAG_BYTES);
    const decipher = createDecipheriv('aes-256-gcm', entry.key, iv);
    decipher.setAAD(Buffer.from(context));
    decipher.setAuthTag(tag);
    try {
      return Buffer.concat([decipher.update(body), decipher.final()]).toString('utf8');
    } catch {
      throw new SecretBoxError('secret failed authentication (wrong key or tampered data)');
    }
  }

  /** True when the secret was sealed with a key other than the current one. */
  needsRotation(sealed: Buffer): boolean {
    return !sealed.subarray(1, 1 + FINGERPRINT_BYTES).equals(this.keys[0]!.fp);
  }
}
