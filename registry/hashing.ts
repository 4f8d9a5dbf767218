// Digest computation while bytes stream. Uploads that span several requests (and processes) and
// copies that resume after a crash need the hash state saved between chunks, which Node's crypto
// cannot do; hash-wasm's hashers can save and restore their state.
import { createHash } from 'node:crypto';
import { createSHA256, createSHA512, type IHasher } from 'hash-wasm';
import type { DigestAlgorithm } from './digest.ts';

export interface ResumableHasher {
  readonly algorithm: DigestAlgorithm;
  update(chunk: Uint8Array): void;
  /** The state after everything passed to update so far. */
  save(): Buffer;
  /** `algorithm:hex` of everything passed to update. Ends the hasher. */
  digest(): string;
}

const STATE_TAG = 'hw1';

function wrap(algorithm: DigestAlgorithm, h: IHasher): ResumableHasher {
  return {
    algorithm,
    update: (chunk) => void h.update(chunk),
    save: () => Buffer.concat([Buffer.from(`${STATE_TAG}:${algorithm}:`), Buffer.from(h.save())]),
    digest: () => `${algorithm}:${h.digest('hex')}`,
  };
}

async function rawHasher(algorithm: DigestAlgorithm): Promise<IHasher> {
  const h = algorithm === 'sha256' ? await createSHA256() : await createSHA512();
  h.init();
  return h;
}

export async function createResumableHasher(algorithm: DigestAlgorithm): Promise<ResumableHasher> {
  return wrap(algorithm, await rawHasher(algorithm));
}

export async function restoreHasher(state: Buffer): Promise<ResumableHasher> {
  const text = state.subarray(0, 16).toString('latin1');
  const m = /^hw1:(sha256|sha512):/.exec(text);
  if (!m) throw new Error('unrecognised hash state');
  const algorithm = m[1] as DigestAlgorithm;
  const h = await rawHasher(algorithm);
  h.load(state.subarray(m[0].length));
  return wrap(algorithm, h);
}

/** A one-shot digest of bytes in memory (manifests). */
export function digestOf(bytes: Uint8Array, algorithm: DigestAlgorithm = 'sha256'): string {
  return `${algorithm}:${createHash(algorithm).update(bytes).digest('hex')}`;
}

/** A non-resumable streaming hasher, several times faster, for copies done in one go. */
export function createStreamingHasher(algorithm: DigestAlgorithm): { update(c: Uint8Array): void; digest(): string } {
  const h = createHash(algorithm);
  return { update: (c) => void h.update(c), digest: () => `${algorithm}:${h.digest('hex')}` };
}
