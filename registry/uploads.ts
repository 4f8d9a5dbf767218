// Blob uploads (OCI "push a blob"): sessions that collect bytes over one or many requests, then
// commit under the content-addressed key once the client names the digest.
//
// Bytes go straight to the session's storage location as S3 multipart parts; bytes that do not
// fill a part yet wait in a small side object (the "tail") until the next chunk. The digest is
// computed while the bytes stream and its state saved after every chunk, so any instance can
// continue the upload and nothing is read back to be hashed (except for a sha512 digest on an
// upload begun without saying so: we hash sha256 as we go, as the distribution registry does).
import { createHash, randomUUID } from 'node:crypto';
import type { Readable } from 'node:stream';
import { and, eq, sql } from 'drizzle-orm';
import { uploadSessions } from '../db/schema.ts';
import type { Services } from '../platform/services.ts';
import { type CompletedPart, MIN_PART_SIZE, ObjectExistsError, ObjectNotFoundError, type StorageDriver } from '../storage/driver.ts';
import type { Location } from '../storage/locations.ts';
import { MultipartWriter } from '../storage/multipart-writer.ts';
import { blobKey, uploadDataKey, uploadTailKey } from '../storage/paths.ts';
import { placementAdded } from '../replication/placements.ts';
import { commitBlob, needsOwnObject, placementStateAt } from './blobs.ts';
import { type DigestAlgorithm, parseDigest } from './digest.ts';
import { createResumableHasher, createStreamingHasher, type ResumableHasher, restoreHasher } from './hashing.ts';
import { writeLocation } from './placement.ts';
import type { Repository } from './repositories.ts';

export type UploadSession = typeof uploadSessions.$inferSelect;

export class UploadError extends Error {
  constructor(
    readonly code: 'BLOB_UPLOAD_UNKNOWN' | 'BLOB_UPLOAD_INVALID' | 'DIGEST_INVALID' | 'RANGE_INVALID' | 'SIZE_INVALID',
    message: string,
    /** For RANGE_INVALID: the bytes the session holds. */
    readonly session?: UploadSession,
  ) {
    super(message);
    this.name = 'UploadError';
  }
}

/** How long a chunk request may hold a session before another may take over. Renewed while
 * bytes flow. */
const BUSY_LEASE_SECONDS = 60;
/** Advertised to clients (distribution spec 1.1 OCI-Chunk-Min-Length): a chunk at least this
 * long becomes a storage part at once; shorter ones wait in side objects until a part's worth
 * has arrived. */
export const CHUNK_MIN_LENGTH = MIN_PART_SIZE;

/** Parts of one upload being written to storage at once, as many as the SDK's own managed
 * upload sends (its default): with two, the request mostly waited for the storage server's
 * per-part latency rather than moved bytes. Bounds an upload's memory to about
 * (PARTS_IN_FLIGHT + 2) x 16 MiB. */
const PARTS_IN_FLIGHT = 4;

/** Sessions untouched this long are abandoned (cleaned up by the upload janitor). */
export const UPLOAD_TTL_HOURS = 24;

export interface CommittedBlob {
  digest: string;
  size: number;
  location: Location;
}

export async function startUpload(
  s: Services,
  repo: Repository,
  by: { userId?: number; robotId?: number },
  algorithm: DigestAlgorithm = 'sha256',
): Promise<UploadSession> {
  const location = await writeLocation(s.placement);
  const id = randomUUID();
  const hasher = await createResumableHasher(algorithm);
  const [row] = await s.db
    .insert(uploadSessions)
    .values({
      id,
      repositoryId: repo.id,
      locationId: location.id,
      objectKey: uploadDataKey(location.pathPrefix, id),
      hashAlgorithm: algorithm,
      hashState: hasher.save(),
      createdByUserId: by.userId ?? null,
      createdByRobotId: by.robotId ?? null,
    })
    .returning();
  return row!;
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

export async function getUpload(s: Services, repo: Repository, id: string): Promise<UploadSession> {
  if (!UUID.test(id)) throw new UploadError('BLOB_UPLOAD_UNKNOWN', 'upload unknown');
  const [row] = await s.db
    .select()
    .from(uploadSessions)
    .where(and(eq(uploadSessions.id, id), eq(uploadSessions.repositoryId, repo.id)));
  if (!row) throw new UploadError('BLOB_UPLOAD_UNKNOWN', 'upload unknown');
  return row;
}

function sessionLocation(s: Services, session: UploadSession): Location {
  const loc = s.locations.get(session.locationId);
  if (!loc) throw new UploadError('BLOB_UPLOAD_UNKNOWN', 'the storage location of this upload no longer exists');
  return loc;
}

/** Takes the session for one request, no two requests writing its parts at once: one round trip
 * (a second only to tell an unknown upload from a busy one). */
async function acquire(s: Services, repo: Repository, id: string): Promise<UploadSession> {
  if (!UUID.test(id)) throw new UploadError('BLOB_UPLOAD_UNKNOWN', 'upload unknown');
  const [row] = await s.db
    .update(uploadSessions)
    .set({ version: sql`${uploadSessions.version} + 1`, busyUntil: sql`now() + make_interval(secs => ${BUSY_LEASE_SECONDS})` })
    .where(
      and(
        eq(uploadSessions.id, id),
        eq(uploadSessions.repositoryId, repo.id),
        sql`(${uploadSessions.busyUntil} is null or ${uploadSessions.busyUntil} < now())`,
      ),
    )
    .returning();
  if (row) return row;
  await getUpload(s, repo, id);
  throw new UploadError('BLOB_UPLOAD_INVALID', 'another request is writing to this upload');
}

async function release(s: Services, session: UploadSession, changes: Partial<UploadSession> = {}): Promise<UploadSession> {
  const [row] = await s.db
    .update(uploadSessions)
    .set({ ...changes, busyUntil: null, updatedAt: sql`now()` })
    .where(and(eq(uploadSessions.id, session.id), eq(uploadSessions.version, session.version)))
    .returning();
  if (!row) throw new UploadError('BLOB_UPLOAD_INVALID', 'the upload was changed by another request');
  return row;
}

async function readSmall(driver: StorageDriver, key: string): Promise<Buffer> {
  const r = await driver.read(key);
  const chunks: Buffer[] = [];
  for await (const c of r.body) chunks.push(c as Buffer);
  return Buffer.concat(chunks);
}

/** The session's tail objects, in order. */
export function tailKeysOf(session: UploadSession): string[] {
  return [...(session.tailKey ? [session.tailKey] : []), ...session.tailKeys];
}

/**
 * One request's view of a session: the writer continuing its multipart upload and the hash
 * state. The tail objects are read only when their bytes are needed — when, with the new
 * bytes, they make a part, or at the end — so a small chunk reads nothing back and only adds
 * its own bytes as one more tail object.
 */
class ChunkState {
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

async function openChunkState(session: UploadSession, loc: Location): Promise<ChunkState> {
  return new ChunkState(loc, session, await restoreHasher(session.hashState!));
}

/** Unhashed bytes a request may have queued before it waits for the hashing to catch up. */
const HASH_BACKLOG_BYTES = 16 * 1024 * 1024;

/** Streams a request body into the chunk state, renewing the session lease while it flows. */
async function pump(s: Services, session: UploadSession, state: ChunkState, body: Readable, maxBytes?: number): Promise<number> {
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
      await s.db
        .update(uploadSessions)
        .set({ busyUntil: sql`now() + make_interval(secs => ${BUSY_LEASE_SECONDS})` })
        .where(and(eq(uploadSessions.id, session.id), eq(uploadSessions.version, session.version)));
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
function checkRange(session: UploadSession, input: ChunkInput): void {
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

/** The session's multipart upload or tail vanished from storage (completed by an attempt that
 * then failed, or removed by hand): the client can only start again. */
function partsGone(e: unknown): unknown {
  return e instanceof ObjectNotFoundError ? new UploadError('BLOB_UPLOAD_UNKNOWN', "the upload's stored parts are gone; start the upload again") : e;
}

/**
 * PUT: the final chunk (optional) and the digest. Verifies the digest, then makes the upload's
 * own object the blob: the multipart upload is completed where its parts already are and the
 * placement records that key, so nothing is copied (a copy to the content address cost as much as
 * the push itself for large blobs). On a digest mismatch the partial object is deleted and the
 * session ends.
 *
 * Crash safety: the placement is recorded and the session row deleted in one transaction, so a
 * session's object is never a placement's object. Until that commit nothing is visible and the
 * client's retry (or the upload janitor) finds the session as it was; after it, the blob is
 * served from the recorded key and only scratch objects (tails) may be left for the orphan scan.
 */
export async function completeUpload(s: Services, repo: Repository, id: string, digest: string, last?: ChunkInput): Promise<CommittedBlob> {
  const { algorithm } = parseDigest(digest);
  await s.locations.fresh();
  const held = await acquire(s, repo, id);
  let loc: Location;
  try {
    if (last) checkRange(held, last);
    loc = sessionLocation(s, held);
  } catch (e) {
    const restored = await release(s, held).catch(() => held);
    if (e instanceof UploadError && e.code === 'RANGE_INVALID') throw new UploadError('RANGE_INVALID', e.message, restored);
    throw e;
  }
  // Nothing received yet and the whole blob in this request: stream it straight to its key.
  if (held.size === 0 && last) {
    try {
      const committed = await putBlob(s, repo, loc, digest, last.body, last.contentLength);
      await deleteSession(s, held, loc);
      return committed;
    } catch (e) {
      if (e instanceof UploadError && e.code === 'DIGEST_INVALID') await deleteSession(s, held, loc);
      else await release(s, held).catch(() => {});
      throw e;
    }
  }

  let state: ChunkState | undefined;
  /** Another request took the session over (our lease ran out): it is theirs to finish. */
  let lost = false;
  try {
    state = await openChunkState(held, loc);
    if (last) {
      const received = await pump(s, held, state, last.body, last.contentLength);
      if (last.contentLength !== undefined && received !== last.contentLength) {
        throw new UploadError('SIZE_INVALID', `received ${received} bytes, Content-Length said ${last.contentLength}`);
      }
    }
    await state.readTail();
    const size = state.size;
    let completed = false;
    let small: Buffer | undefined;
    if (algorithm === state.hasher.algorithm) {
      const actual = state.hasher.digest();
      if (actual !== digest) throw digestMismatch(digest, actual);
    } else if (!state.writer.uploadId) {
      small = state.writer.takeBuffered();
      const actual = digestOfBuffer(small, algorithm);
      if (actual !== digest) throw digestMismatch(digest, actual);
    } else {
      // A digest in an algorithm the upload was not hashed with: store, then read back to check.
      await completeMultipart(state.writer, loc, held, size);
      completed = true;
      const actual = await digestOfObject(loc.driver, held.objectKey, algorithm);
      if (actual !== digest) throw digestMismatch(digest, actual);
    }

    // Verified. Unless this location already holds the blob, store it: small blobs (less than
    // a part, all in memory) at the content address, larger ones where their parts already are.
    // A copy GC is purging is about to lose its object at the content address, and a damaged
    // one's object there may hold wrong bytes: then even a small blob goes to the session's own
    // key (which nobody else writes).
    let objectKey: string | null = null;
    const existing = await placementStateAt(s.db, digest, loc.id);
    const reuse = existing === 'available' || existing === 'deleting';
    if (!reuse) {
      if (!state.writer.uploadId) {
        const bytes = small ?? state.writer.takeBuffered();
        if (needsOwnObject(existing)) {
          await loc.driver.write(held.objectKey, bytes);
          objectKey = held.objectKey;
        } else {
          await writeIfAbsent(loc.driver, blobKey(loc.pathPrefix, digest), bytes);
        }
      } else {
        if (!completed) await completeMultipart(state.writer, loc, held, size);
        objectKey = held.objectKey;
      }
    }
    const placed = await s.db.transaction(async (tx) => {
      const ended = await tx
        .delete(uploadSessions)
        .where(and(eq(uploadSessions.id, held.id), eq(uploadSessions.version, held.version)))
        .returning({ id: uploadSessions.id });
      lost = ended.length === 0;
      if (lost) throw new UploadError('BLOB_UPLOAD_INVALID', 'the upload was changed by another request');
      return commitBlob(tx, { digest, size, locationId: loc.id, objectKey, reuse, repositoryId: repo.id, repositoryName: repo.fullName });
    });
    await placementAdded(s.redis, digest);
    // The session is gone: remove its scratch objects, and its object unless it became the blob.
    await removeSessionObjects(loc, held, { keepObject: objectKey !== null && placed.usesObject });
    return { digest, size, location: loc };
  } catch (e) {
    if (e instanceof UploadError && e.code === 'DIGEST_INVALID') {
      await state?.writer.abort();
      await deleteSession(s, held, loc);
    } else if (!lost) {
      await release(s, held).catch(() => {});
    }
    throw partsGone(e);
  }
}

/**
 * Completes the session's multipart upload at its own key. An earlier attempt may have completed
 * it already and then failed before committing (the parts are gone, the object is there): an
 * object of the right size at the session's key is that completion.
 */
async function completeMultipart(writer: MultipartWriter, loc: Location, session: UploadSession, size: number): Promise<void> {
  try {
    await writer.complete();
  } catch (e) {
    if (!(e instanceof ObjectNotFoundError)) throw e;
    const stat = await loc.driver.stat(session.objectKey);
    if (stat?.size !== size) throw e;
  }
}

function digestMismatch(expected: string, actual: string): UploadError {
  return new UploadError('DIGEST_INVALID', `content digest ${actual} does not match ${expected}`);
}

function digestOfBuffer(bytes: Buffer, algorithm: DigestAlgorithm): string {
  return `${algorithm}:${createHash(algorithm).update(bytes).digest('hex')}`;
}

/** Only for a digest algorithm the upload was not hashed with: reads the object back. */
async function digestOfObject(driver: StorageDriver, key: string, algorithm: DigestAlgorithm): Promise<string> {
  const h = createStreamingHasher(algorithm);
  const r = await driver.read(key);
  for await (const c of r.body) h.update(c as Buffer);
  return h.digest();
}

async function writeIfAbsent(driver: StorageDriver, key: string, bytes: Buffer): Promise<void> {
  try {
    await driver.write(key, bytes, { ifAbsent: true });
  } catch (e) {
    // Already stored by an earlier push: same digest, same bytes.
    if (!(e instanceof ObjectExistsError)) throw e;
  }
}

/**
 * A whole blob in one request with its digest known up front (POST ?digest=, or PUT on an empty
 * session): streamed straight to its content-addressed key, verified before it becomes visible.
 * If the location already holds the blob (its placement says so: no storage round trip) the
 * bytes are only hashed, to prove the client has them, and not stored again.
 */
export async function putBlob(
  s: Services,
  repo: Repository,
  loc: Location,
  digest: string,
  body: Readable,
  contentLength: number | undefined,
): Promise<CommittedBlob> {
  const { algorithm } = parseDigest(digest);
  // An available or GC-marked copy is reused; one GC is purging loses its content-address
  // object, and a damaged one's may be wrong, so the bytes go to a key of their own instead.
  const existing = await placementStateAt(s.db, digest, loc.id);
  const exists = existing === 'available' || existing === 'deleting';
  const ownKey = needsOwnObject(existing) ? uploadDataKey(loc.pathPrefix, randomUUID()) : null;
  const key = ownKey ?? blobKey(loc.pathPrefix, digest);
  const hasher = await createResumableHasher(algorithm);
  const writer = exists ? undefined : new MultipartWriter(loc.driver, key, { maxInFlight: PARTS_IN_FLIGHT });
  let size = 0;
  try {
    for await (const raw of body) {
      const chunk = raw as Buffer;
      size += chunk.length;
      if (contentLength !== undefined && size > contentLength) throw new UploadError('SIZE_INVALID', 'more bytes than Content-Length announced');
      hasher.queue(chunk);
      await writer?.write(chunk);
      if (hasher.queuedBytes > HASH_BACKLOG_BYTES) await hasher.settled();
    }
    await hasher.settled();
    if (contentLength !== undefined && size !== contentLength) {
      throw new UploadError('SIZE_INVALID', `received ${size} bytes, Content-Length said ${contentLength}`);
    }
    const actual = hasher.digest();
    if (actual !== digest) throw digestMismatch(digest, actual);
    if (writer) {
      if (!writer.uploadId) await writeIfAbsent(loc.driver, key, writer.takeBuffered());
      else {
        try {
          await writer.complete({ ifAbsent: true });
        } catch (e) {
          if (!(e instanceof ObjectExistsError)) throw e;
          await writer.abort();
        }
      }
    }
  } catch (e) {
    await writer?.abort();
    throw e;
  }
  const committed = await s.db.transaction((tx) =>
    commitBlob(tx, { digest, size, locationId: loc.id, objectKey: ownKey, reuse: exists, repositoryId: repo.id, repositoryName: repo.fullName }),
  ).catch(async (e: unknown) => {
    if (ownKey) await loc.driver.delete(ownKey).catch(() => {});
    throw e;
  });
  if (ownKey && !committed.usesObject) await loc.driver.delete(ownKey).catch(() => {});
  await placementAdded(s.redis, digest);
  return { digest, size, location: loc };
}

/** Monolithic upload in a single POST with ?digest=. */
export async function putBlobToPreferred(
  s: Services,
  repo: Repository,
  digest: string,
  body: Readable,
  contentLength: number | undefined,
): Promise<CommittedBlob> {
  const loc = await writeLocation(s.placement);
  return putBlob(s, repo, loc, digest, body, contentLength);
}

export async function cancelUpload(s: Services, repo: Repository, id: string): Promise<void> {
  const held = await acquire(s, repo, id);
  await deleteSession(s, held, sessionLocation(s, held));
}

async function deleteSession(s: Services, session: UploadSession, loc: Location): Promise<void> {
  await s.db.delete(uploadSessions).where(eq(uploadSessions.id, session.id));
  await removeSessionObjects(loc, session, { keepObject: false });
}

/** Best effort: what is left behind is found by the orphan scan. */
async function removeSessionObjects(loc: Location, session: UploadSession, opts: { keepObject: boolean }): Promise<void> {
  const cleanup: Promise<unknown>[] = [];
  // Aborting a completed upload is a no-op; an uncompleted one still holds parts.
  if (session.multipartUploadId && !opts.keepObject) cleanup.push(loc.driver.abortMultipart(session.objectKey, session.multipartUploadId));
  const keys = [...(opts.keepObject ? [] : [session.objectKey]), ...tailKeysOf(session)];
  if (keys.length > 0) cleanup.push(loc.driver.deleteMany(keys));
  await Promise.allSettled(cleanup);
}

export type { CompletedPart };
