// OCI digests: `algorithm:encoded`. We accept the registered algorithms sha256 and sha512.
export type DigestAlgorithm = 'sha256' | 'sha512';

const HEX_LENGTH: Record<DigestAlgorithm, number> = { sha256: 64, sha512: 128 };
// The spec's grammar; we then restrict to the algorithms we can verify.
const DIGEST_GRAMMAR = /^[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[a-zA-Z0-9=_-]+$/;

export class InvalidDigestError extends Error {
  constructor(readonly digest: string, reason: string) {
    super(`invalid digest "${digest.slice(0, 200)}": ${reason}`);
    this.name = 'InvalidDigestError';
  }
}

export interface ParsedDigest {
  algorithm: DigestAlgorithm;
  hex: string;
}

export function parseDigest(digest: string): ParsedDigest {
  if (!DIGEST_GRAMMAR.test(digest)) throw new InvalidDigestError(digest, 'does not match algorithm:encoded');
  const [algorithm, hex] = digest.split(':') as [string, string];
  if (algorithm !== 'sha256' && algorithm !== 'sha512') throw new InvalidDigestError(digest, `unsupported algorithm ${algorithm}`);
  if (hex.length !== HEX_LENGTH[algorithm] || !/^[a-f0-9]+$/.test(hex)) {
    throw new InvalidDigestError(digest, `${algorithm} needs ${HEX_LENGTH[algorithm]} lowercase hex characters`);
  }
  return { algorithm, hex };
}

export function isDigest(s: string): boolean {
  try {
    parseDigest(s);
    return true;
  } catch {
    return false;
  }
}
