// Digest computation while bytes stream. Uploads that span several requests (and processes) and
// copies that resume after a crash need the hash state saved between chunks, which Node's crypto
// cannot do. A small native addon (native/sha, built by the setup script against the system
// OpenSSL, so SHA-NI where the CPU has it) keeps the OpenSSL context in a Buffer we can save;
// hash-wasm, about five times slower, stands in where the addon could not be built.
//
// Large uploads hash with queue(): the addon hashes batches of chunks on a libuv thread-pool
// thread, so SHA-256 (the largest CPU cost of a push) runs beside the event loop's socket reads
// and storage writes instead of between them. The chunks are hashed in order, where they are
// (no copies); network reads are never modified afterwards.
import { createHash } from 'node:crypto';
import { createRequire } from 'node:module';
import { createSHA256, createSHA512, type IHasher } from 'hash-wasm';
import type { DigestAlgorithm } from './digest.ts';

export interface ResumableHasher {
  readonly algorithm: DigestAlgorithm;
  update(chunk: Uint8Array): void;
  /** Hashes `chunk` after everything before it, off the event loop where the native addon can;
   * the chunk must not change afterwards. settled() before update, save or digest. */
  queue(chunk: Uint8Array): void;
  /** Bytes queued and not hashed yet (for back-pressure). */
  readonly queuedBytes: number;
  /** Resolves once every queued chunk is hashed. */
  settled(): Promise<void>;
  /** The state after everything passed to update so far. */
  save(): Buffer;
  /** `algorithm:hex` of everything passed to update. Ends the hasher. */
  digest(): string;
}

interface NativeSha {
  init(alg: 256 | 512): Buffer;
  update(alg: 256 | 512, ctx: Buffer, data: Uint8Array): void;
  /** Absent from an addon built before it was added (setup rebuilds it when sha.c changes). */
  updateAsync?(alg: 256 | 512, ctx: Buffer, chunks: Uint8Array[]): Promise<void>;
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

/** Queued bytes handed to one thread-pool job: large enough that the job's overhead (a few
 * microseconds) is noise, small enough that hashing keeps pace with the socket. */
const BATCH_BYTES = 1024 * 1024;

class NativeHasher implements ResumableHasher {
  private readonly alg: 256 | 512;
  private batch: Uint8Array[] = [];
  private batchBytes = 0;
  private running: Promise<void> | undefined;
  private failure: unknown;
  queuedBytes = 0;

  constructor(
    private readonly n: NativeSha,
    readonly algorithm: DigestAlgorithm,
    private readonly ctx: Buffer,
  ) {
    this.alg = bits(algorithm);
  }

  update(chunk: Uint8Array): void {
    this.idle();
    this.n.update(this.alg, this.ctx, chunk);
  }

  queue(chunk: Uint8Array): void {
    if (!this.n.updateAsync) return this.update(chunk);
    this.batch.push(chunk);
    this.batchBytes += chunk.length;
    this.queuedBytes += chunk.length;
    if (!this.running && this.batchBytes >= BATCH_BYTES) this.run();
  }

  async settled(): Promise<void> {
    while (this.failure === undefined && (this.running || this.batch.length > 0)) {
      if (!this.running) this.run();
      await this.running;
    }
    if (this.failure !== undefined) throw this.failure;
  }

  save(): Buffer {
    this.idle();
    return Buffer.concat([tag('ossl1', this.algorithm), this.ctx]);
  }

  digest(): string {
    this.idle();
    return `${this.algorithm}:${this.n.final(this.alg, this.ctx).toString('hex')}`;
  }

  /** One job at a time: they share the context, and order matters. */
  private run(): void {
    const chunks = this.batch;
    const bytes = this.batchBytes;
    this.batch = [];
    this.batchBytes = 0;
    this.running = this.n.updateAsync!(this.alg, this.ctx, chunks).then(
      () => {
        this.queuedBytes -= bytes;
        this.running = undefined;
        if (this.batchBytes >= BATCH_BYTES) this.run();
      },
      (e: unknown) => {
        this.failure = e;
        this.running = undefined;
      },
    );
  }

  private idle(): void {
    if (this.running || this.batch.length > 0) throw new Error('hasher used while queued chunks are being hashed: await settled() first');
  }
}

function wasmHasher(algorithm: DigestAlgorithm, h: IHasher): ResumableHasher {
  return {
    algorithm,
    update: (chunk) => void h.update(chunk),
    queue: (chunk) => void h.update(chunk),
    queuedBytes: 0,
    settled: () => Promise.resolve(),
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
  if (native) return new NativeHasher(native, algorithm, native.init(bits(algorithm)));
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
    return new NativeHasher(native, alg, Buffer.from(body));
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
