// The chunk writer: streams a request's bytes into the session's multipart upload (parts in
// flight to storage while the digest is computed beside the event loop) and keeps what does not
// fill a part yet in small tail objects. PATCH is appendChunk; the final PUT uses the same state.
import type { Readable } from 'node:stream';
import type { Services } from '../platform/services.ts';
import { MIN_PART_SIZE, type StorageDriver } from '../storage/driver.ts';
import type { Location } from '../storage/locations.ts';
import { MultipartWriter } from '../storage/multipart-writer.ts';
import { uploadTailKey } from '../storage/paths.ts';
import { type ResumableHasher, restoreHasher } from './hashing.ts';
import type { Repository } from './repositories.ts';
import { acquire, BUSY_LEASE_SECONDS, partsGone, release, renewLease, sessionLocation, tailKeysOf, UploadError, type UploadSession } from './upload-sessions.ts';

/** Parts of one upload being written to storage at once, as many as the SDK's own managed
 * upload sends (its default): with two, the request mostly waited for the storage server's
 * per-part latency rather than moved bytes. Bounds an upload's memory to about
 * (PARTS_IN_FLIGHT + 2) x 16 MiB. */
export const PARTS_IN_FLIGHT = 4;

async function readSmall(driver: StorageDriver, key: string): Promise<Buffer> {
  const r = await driver.read(key);
  const chunks: Buffer[] = [];
  for await (const c of r.body) chunks.push(c as Buffer);
  return Buffer.concat(chunks);
}

/**
 * One request's view of a session: the writer continuing its multipart upload and the hash
 * state. The tail objects are read only when their bytes are needed — when, with the new
 * bytes, they make a part, or at the end — so a small chunk reads nothing back and only adds
 * its own bytes as one more tail object.
 */
export class ChunkState {
  readonly writer: MultipartWriter;
  size: number;
  /** Tail objects not yet read, and their total size. */
  private unread: string[];
  private unreadSize: number;
  /** New bytes held back while the unread tail must go in front of them. */
  private held: Buffer[] = [];
  private heldSize = 0;

  constructor(
    private readonly loc: Location,
    readonly session: UploadSession,
    readonly hasher: ResumableHasher,
  ) {
    this.writer = new MultipartWriter(loc.driver, session.objectKey, {
      uploadId: session.multipartUploadId ?? undefined,
      parts: session.parts,
      maxInFlight: PARTS_IN_FLIGHT,
    });
    this.size = session.size;
    this.unread = tailKeysOf(session);
    this.unreadSize = this.unread.length > 0 ? session.tailSize : 0;
  }

  async write(chunk: Buffer): Promise<void> {
    if (this.unread.length === 0) return this.writer.write(chunk);
    this.held.push(chunk);
    this.heldSize += chunk.length;
    if (this.unreadSize + this.heldSize >= MIN_PART_SIZE) await this.readTail();
  }

  /** Puts the tail objects' bytes, then the held new bytes, into the writer. */
  async readTail(): Promise<void> {
    const keys = this.unread;
    this.unread = [];
    this.unreadSize = 0;
    for (const piece of await Promise.all(keys.map((k) => readSmall(this.loc.driver, k)))) await this.writer.write(piece);
    const held = this.held;
    this.held = [];
    this.heldSize = 0;
    for (const c of held) await this.writer.write(c);
  }

  /**
   * After the last byte of a PATCH: bytes that make a part (at least the minimum part size) are
   * uploaded as one; the rest becomes one more tail object. Returns the session's new tail.
   */
  async settle(version: number): Promise<{ tailKey: null; tailKeys: string[]; tailSize: number; written?: string }> {
    if (this.unread.length > 0) {
      // Still short of a part: the old tail stays as it is, the new bytes are appended to it.
      const keys = [...this.unread];
      if (this.heldSize === 0) return { tailKey: null, tailKeys: keys, tailSize: this.unreadSize };
      const key = uploadTailKey(this.loc.pathPrefix, this.session.id, version);
      await this.loc.driver.write(key, Buffer.concat(this.held, this.heldSize));
      return { tailKey: null, tailKeys: [...keys, key], tailSize: this.unreadSize + this.heldSize, written: key };
    }
    if (this.writer.bufferedBytes >= MIN_PART_SIZE) await this.writer.flushRemainder();
    await this.writer.parts();
    const tail = this.writer.takeBuffered();
    if (tail.length === 0) return { tailKey: null, tailKeys: [], tailSize: 0 };
    const key = uploadTailKey(this.loc.pathPrefix, this.session.id, version);
    await this.loc.driver.write(key, tail);
    return { tailKey: null, tailKeys: [key], tailSize: tail.length, written: key };
  }
}

export async function openChunkState(session: UploadSession, loc: Location): Promise<ChunkState> {
  return new ChunkState(loc, session, await restoreHasher(session.hashState!));
}

/** Unhashed bytes a request may have queued before it waits for the hashing to catch up. */
export const HASH_BACKLOG_BYTES = 16 * 1024 * 1024;

/** Streams a request body into the chunk state, renewing the session lease while it flows. */
export async function pump(s: Services, session: UploadSession, state: ChunkState, body: Readable, maxBytes?: number): Promise<number> {
  let received = 0;
  let lastRenew = Date.now();
  for await (const raw of body) {
    const chunk = raw as Buffer;
    received += chunk.length;
    if (maxBytes !== undefined && received > maxBytes) throw new UploadError('SIZE_INVALID', 'more bytes than Content-Length announced');
    state.hasher.queue(chunk);
    state.size += chunk.length;
    await state.write(chunk);
    // Hashing runs beside the event loop; do not let it fall far behind (chunks it still holds
    // stay in memory).
    if (state.hasher.queuedBytes > HASH_BACKLOG_BYTES) await state.hasher.settled();
    if (Date.now() - lastRenew > (BUSY_LEASE_SECONDS * 1000) / 3) {
      lastRenew = Date.now();
      await renewLease(s, session);
    }
  }
  await state.hasher.settled();
  return received;
}

export interface ChunkInput {
  body: Readable;
  /** From Content-Range `start-end`, when sent. */
  range?: { start: number; end: number };
  contentLength?: number;
}

/** A chunk must start where the upload ends, and its range agree with its length. */
export function checkRange(session: UploadSession, input: ChunkInput): void {
  if (!input.range) return;
  if (input.range.start !== session.size) {
    throw new UploadError('RANGE_INVALID', `chunk starts at ${input.range.start}, upload has ${session.size} bytes`, session);
  }
  if (input.contentLength !== undefined && input.range.end - input.range.start + 1 !== input.contentLength) {
    throw new UploadError('RANGE_INVALID', 'Content-Range and Content-Length disagree', session);
  }
}

/** PATCH: appends a chunk to upload `id`. Returns the session with its new size. */
export async function appendChunk(s: Services, repo: Repository, id: string, input: ChunkInput): Promise<UploadSession> {
  await s.locations.fresh();
  const held = await acquire(s, repo, id);
  let written: string | undefined;
  try {
    checkRange(held, input);
    const loc = sessionLocation(s, held);
    const state = await openChunkState(held, loc);
    const received = await pump(s, held, state, input.body, input.contentLength);
    if (input.contentLength !== undefined && received !== input.contentLength) {
      throw new UploadError('SIZE_INVALID', `received ${received} bytes, Content-Length said ${input.contentLength}`);
    }
    const tail = await state.settle(held.version);
    written = tail.written;
    const updated = await release(s, held, {
      parts: await state.writer.parts(),
      multipartUploadId: state.writer.uploadId ?? null,
      size: state.size,
      tailSize: tail.tailSize,
      tailKey: tail.tailKey,
      tailKeys: tail.tailKeys,
      hashState: state.hasher.save(),
    });
    // Tail objects now inside a part are scratch; the response need not wait for their removal.
    const dropped = tailKeysOf(held).filter((k) => !tail.tailKeys.includes(k));
    if (dropped.length > 0) void loc.driver.deleteMany(dropped).catch(() => {});
    return updated;
  } catch (e) {
    // Parts uploaded by this failed request are simply not recorded; the next chunk reuses their
    // numbers. The session stays as it was before the request.
    const restored = await release(s, held).catch(() => held);
    if (written) void sessionLocation(s, held).driver.delete(written).catch(() => {});
    if (e instanceof UploadError && e.code === 'RANGE_INVALID') throw new UploadError('RANGE_INVALID', e.message, restored);
    throw partsGone(e);
  }
}
