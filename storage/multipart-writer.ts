// Turns a stream of chunks of any size into S3 multipart parts of a fixed size, uploading up to
// `maxInFlight` parts at once while the next one fills. Incoming chunks are kept by reference
// until they make a part, then copied once into a part buffer taken from a small pool; buffers go
// back to the pool when their part is uploaded, so memory stays at about (maxInFlight + 2) ×
// partSize whatever the size of the object, with little garbage for the collector to chase. A
// writer that never fills a part (a small chunk of an upload) allocates no part buffer at all.
// Chunks passed to write() must not be modified afterwards (network reads never are).
import { type CompletedPart, type StorageDriver, DEFAULT_PART_SIZE } from './driver.ts';

/** Part sizes grow with the part number so that S3's 10,000-part limit still allows ~1 TiB:
 * 16 MiB for parts 1–2000, 32 MiB for the next 2000, and so on. */
export function partSizeFor(partNumber: number, base = DEFAULT_PART_SIZE): number {
  return base * 2 ** Math.min(4, Math.floor((partNumber - 1) / 2000));
}

export interface MultipartWriterOptions {
  /** Size of the first parts; later parts grow (partSizeFor). */
  partSize?: number;
  maxInFlight?: number;
  /** An existing multipart upload to continue; created on the first full part otherwise. */
  uploadId?: string;
  /** Parts already in that upload. */
  parts?: CompletedPart[];
  /** Called when a part is durably uploaded (heartbeats, progress). */
  onPart?: (part: CompletedPart) => void;
  /** Called, in order, with the exact bytes of each part as it is cut from the stream — before
   * it is uploaded. Lets a resumable copy hash part by part and know the state at each part
   * boundary. */
  onCut?: (bytes: Buffer, partNumber: number) => void;
}

export class MultipartWriter {
  private readonly basePartSize: number;
  private readonly maxInFlight: number;
  /** Chunks of the part being filled (by reference) and their total size. */
  private pending: Buffer[] = [];
  private filled = 0;
  private readonly pool: Buffer[] = [];
  private inFlight = new Set<Promise<void>>();
  private failure: unknown;
  private nextPartNumber: number;
  private _uploadId: string | undefined;
  private readonly done: CompletedPart[];

  constructor(
    private readonly driver: StorageDriver,
    private readonly key: string,
    private readonly opts: MultipartWriterOptions = {},
  ) {
    this.basePartSize = opts.partSize ?? DEFAULT_PART_SIZE;
    this.maxInFlight = opts.maxInFlight ?? 2;
    this._uploadId = opts.uploadId;
    this.done = [...(opts.parts ?? [])];
    this.nextPartNumber = this.done.reduce((n, p) => Math.max(n, p.partNumber), 0) + 1;
  }

  /** The size the next full part will have. */
  get partSize(): number {
    return partSizeFor(this.nextPartNumber, this.basePartSize);
  }

  get uploadId(): string | undefined {
    return this._uploadId;
  }

  /** Bytes accepted but not yet part of an uploaded (or uploading) part. */
  get bufferedBytes(): number {
    return this.filled;
  }

  async write(chunk: Buffer): Promise<void> {
    if (this.failure) throw this.failure;
    let offset = 0;
    while (offset < chunk.length) {
      const size = this.partSize;
      const n = Math.min(size - this.filled, chunk.length - offset);
      this.pending.push(offset === 0 && n === chunk.length ? chunk : chunk.subarray(offset, offset + n));
      this.filled += n;
      offset += n;
      if (this.filled === size) await this.startPart(size);
    }
  }

  /** Uploads whatever is buffered as one more part (the last part may be small). */
  async flushRemainder(): Promise<void> {
    if (this.filled > 0) await this.startPart(this.filled);
  }

  /** Takes the buffered bytes out of the writer (to keep them elsewhere until more arrive). */
  takeBuffered(): Buffer {
    const out = this.pending.length === 1 ? this.pending[0]! : Buffer.concat(this.pending, this.filled);
    this.pending = [];
    this.filled = 0;
    return out;
  }

  /** Waits for every started part; returns all parts in order. */
  async parts(): Promise<CompletedPart[]> {
    await Promise.all(this.inFlight);
    if (this.failure) throw this.failure;
    return [...this.done].sort((a, b) => a.partNumber - b.partNumber);
  }

  /** Uploads the remainder, then completes the multipart upload. */
  async complete(opts: { ifAbsent?: boolean } = {}): Promise<CompletedPart[]> {
    await this.flushRemainder();
    const parts = await this.parts();
    if (!this._uploadId) throw new Error('nothing was written');
    await this.driver.completeMultipart(this.key, this._uploadId, parts, opts);
    return parts;
  }

  async abort(): Promise<void> {
    await Promise.allSettled(this.inFlight);
    if (this._uploadId) await this.driver.abortMultipart(this.key, this._uploadId).catch(() => {});
  }

  /** A full part's buffer comes from the pool; a short last part gets one of its own size. */
  private takeBuffer(length: number): { buffer: Buffer; pooled: boolean } {
    if (length !== this.partSize) return { buffer: Buffer.allocUnsafe(length), pooled: false };
    const i = this.pool.findIndex((b) => b.length === length);
    return { buffer: i >= 0 ? this.pool.splice(i, 1)[0]! : Buffer.allocUnsafe(length), pooled: true };
  }

  private async startPart(length: number): Promise<void> {
    while (this.inFlight.size >= this.maxInFlight) await Promise.race(this.inFlight);
    if (this.failure) throw this.failure;
    const { buffer, pooled } = this.takeBuffer(length);
    let at = 0;
    for (const c of this.pending) at += c.copy(buffer, at);
    const body = buffer.subarray(0, length);
    this.pending = [];
    this.filled = 0;
    if (!this._uploadId) this._uploadId = await this.driver.createMultipart(this.key);
    const partNumber = this.nextPartNumber++;
    this.opts.onCut?.(body, partNumber);
    const p = this.driver.uploadPart(this.key, this._uploadId, partNumber, body).then(
      (etag) => {
        const part = { partNumber, etag, size: length };
        this.done.push(part);
        this.opts.onPart?.(part);
      },
      (e: unknown) => {
        this.failure ??= e;
      },
    );
    const tracked = p.finally(() => {
      this.inFlight.delete(tracked);
      if (pooled && this.pool.length < this.maxInFlight + 1) this.pool.push(buffer);
    });
    this.inFlight.add(tracked);
  }
}
