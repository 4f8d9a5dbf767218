// Digest computation while bytes stream. Uploads that span several requests (and processes) and
// copies that resume after a crash need the hash state saved between chunks, which Node's crypto
// cannot do. A small native addon (native/sha, built by the setup script against the system
// OpenSSL, so SHA-NI where the CPU has it) keeps the OpenSSL context in a Buffer we can save;
// hash-wasm, about five times slower, stands in where the addon could not be built.
import { createHash } from 'node:crypto';
import { createRequire } from 'node:module';
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

interface NativeSha {
  init(alg: 256 | 512): Buffer;
  update(alg: 256 | 512, ctx: Buffer, data: Uint8Array): void;
  final(alg: 256 | 512, ctx: Buffer): Buffer;
  contextSize(alg: 256 | 512): number;
}

function loadNative(): NativeSha | undefined {
  if (process.env.MERIDIAN_DISABLE_NATIVE_SHA === '1') return undefined;
  try {
    return createRequire(import.meta.url)('../native/sha/build/sha.node') as NativeSha;
  } catch {
    return undefined;
  }
}

const native = loadNative();
export const HASHER_IMPLEMENTATION = native ? 'openssl' : 'hash-wasm';

const bits = (a: DigestAlgorithm): 256 | 512 => (a === 'sha256' ? 256 : 512);

/** State format: `<impl>:<algorithm>:` then the implementation's own state bytes. */
function tag(impl: string, algorithm: DigestAlgorithm): Buffer {
  return Buffer.from(`${impl}:${algorithm}:`);
}

function nativeHasher(n: NativeSha, algorithm: DigestAlgorithm, ctx: Buffer): ResumableHasher {
  const alg = bits(algorithm);
  return {
    algorithm,
    update: (chunk) => n.update(alg, ctx, chunk),
    save: () => Buffer.concat([tag('ossl1', algorithm), ctx]),
    digest: () => `${algorithm}:${n.final(alg, ctx).toString('hex')}`,
  };
}

function wasmHasher(algorithm: DigestAlgorithm, h: IHasher): ResumableHasher {
  return {
    algorithm,
    update: (chunk) => void h.update(chunk),
    save: () => Buffer.concat([tag('hw1', algorithm), Buffer.from(h.save())]),
    digest: () => `${algorithm}:${h.digest('hex')}`,
  };
}

async function rawWasm(algorithm: DigestAlgorithm): Promise<IHasher> {
  const h = algorithm === 'sha256' ? await createSHA256() : await createSHA512();
  h.init();
  return h;
}

export async function createResumableHasher(algorithm: DigestAlgorithm): Promise<ResumableHasher> {
  if (native) return nativeHasher(native, algorithm, native.init(bits(algorithm)));
  return wasmHasher(algorithm, await rawWasm(algorithm));
}

export async function restoreHasher(state: Buffer): Promise<ResumableHasher> {
  const m = /^(ossl1|hw1):(sha256|sha512):/.exec(state.subarray(0, 16).toString('latin1'));
  if (!m) throw new Error('unrecognised hash state');
  const [prefix, impl, alg] = m as unknown as [string, string, DigestAlgorithm];
  const body = state.subarray(prefix.length);
  if (impl === 'ossl1') {
    if (!native) throw new Error('this hash state was saved by the native hasher, which this process could not load; run `npm run setup`');
    if (body.length !== native.contextSize(bits(alg))) throw new Error('hash state from an incompatible OpenSSL build');
    return nativeHasher(native, alg, Buffer.from(body));
  }
  const h = await rawWasm(alg);
  h.load(body);
  return wasmHasher(alg, h);
}

/** A one-shot digest of bytes in memory (manifests). */
export function digestOf(bytes: Uint8Array, algorithm: DigestAlgorithm = 'sha256'): string {
  return `${algorithm}:${createHash(algorithm).update(bytes).digest('hex')}`;
}

/** A non-resumable streaming hasher for copies done in one go. */
export function createStreamingHasher(algorithm: DigestAlgorithm): { update(c: Uint8Array): void; digest(): string } {
  const h = createHash(algorithm);
  return { update: (c) => void h.update(c), digest: () => `${algorithm}:${h.digest('hex')}` };
}
