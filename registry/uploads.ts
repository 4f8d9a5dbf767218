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
import { type CompletedPart, MIN_PART_SIZE, ObjectExistsError, type StorageDriver } from '../storage/driver.ts';
import type { Location } from '../storage/locations.ts';
import { MultipartWriter } from '../storage/multipart-writer.ts';
import { blobKey, uploadDataKey, uploadTailKey } from '../storage/paths.ts';
import { placementAdded } from '../replication/placements.ts';
import { commitBlob } from './blobs.ts';
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
/** Sessions untouched this long are abandoned (cleaned up by the upload janitor). */
export const UPLOAD_TTL_HOURS = 24;

export interface CommittedBlob {
  digest: string;
  size: number;
  location: Location;
}

function placementDeps(s: Services) {
  return { locations: s.locations, health: s.health, preference: s.config.storagePreference };
}

export async function startUpload(
  s: Services,
  repo: Repository,
  by: { userId?: number; robotId?: number },
  algorithm: DigestAlgorithm = 'sha256',
): Promise<UploadSession> {
  const location = await writeLocation(placementDeps(s));
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

export async function getUpload(s: Services, repo: Repository, id: string): Promise<UploadSession> {
  if (!/^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/.test(id)) {
    throw new UploadError('BLOB_UPLOAD_UNKNOWN', 'upload unknown');
  }
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

/** Takes the session for one request: no two requests write its parts at once. */
async function acquire(s: Services, session: UploadSession): Promise<UploadSession> {
  const [row] = await s.db
    .update(uploadSessions)
    .set({ version: sql`${uploadSessions.version} + 1`, busyUntil: sql`now() + make_interval(secs => ${BUSY_LEASE_SECONDS})` })
    .where(
      and(
        eq(uploadSessions.id, session.id),
        sql`(${uploadSessions.busyUntil} is null or ${uploadSessions.busyUntil} < now())`,
      ),
    )
    .returning();
  if (!row) throw new UploadError('BLOB_UPLOAD_INVALID', 'another request is writing to this upload');
  return row;
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

interface ChunkState {
  writer: MultipartWriter;
  hasher: ResumableHasher;
  size: number;
}

/** Opens the session's writer with its previous tail bytes in front. */
async function openChunkState(s: Services, session: UploadSession, loc: Location): Promise<ChunkState> {
  const writer = new MultipartWriter(loc.driver, session.objectKey, {
    uploadId: session.multipartUploadId ?? undefined,
    parts: session.parts,
  });
  if (session.tailSize > 0 && session.tailKey) await writer.write(await readSmall(loc.driver, session.tailKey));
  const hasher = await restoreHasher(session.hashState!);
  return { writer, hasher, size: session.size };
}

/** Streams a request body into the chunk state, renewing the session lease while it flows. */
async function pump(s: Services, session: UploadSession, state: ChunkState, body: Readable, maxBytes?: number): Promise<number> {
  let received = 0;
  let lastRenew = Date.now();
  for await (const raw of body) {
    const chunk = raw as Buffer;
    received += chunk.length;
    if (maxBytes !== undefined && received > maxBytes) throw new UploadError('SIZE_INVALID', 'more bytes than Content-Length announced');
    state.hasher.update(chunk);
    state.size += chunk.length;
    await state.writer.write(chunk);
    if (Date.now() - lastRenew > (BUSY_LEASE_SECONDS * 1000) / 3) {
      lastRenew = Date.now();
      await s.db
        .update(uploadSessions)
        .set({ busyUntil: sql`now() + make_interval(secs => ${BUSY_LEASE_SECONDS})` })
        .where(and(eq(uploadSessions.id, session.id), eq(uploadSessions.version, session.version)));
    }
  }
  return received;
}

export interface ChunkInput {
  body: Readable;
  /** From Content-Range `start-end`, when sent. */
  range?: { start: number; end: number };
  contentLength?: number;
}

/** PATCH: appends a chunk. Returns the session with its new size. */
export async function appendChunk(s: Services, session: UploadSession, input: ChunkInput): Promise<UploadSession> {
  if (input.range) {
    if (input.range.start !== session.size) {
      throw new UploadError('RANGE_INVALID', `chunk starts at ${input.range.start}, upload has ${session.size} bytes`, session);
    }
    if (input.contentLength !== undefined && input.range.end - input.range.start + 1 !== input.contentLength) {
      throw new UploadError('RANGE_INVALID', 'Content-Range and Content-Length disagree', session);
    }
  }
  await s.locations.fresh();
  const loc = sessionLocation(s, session);
  const held = await acquire(s, session);
  let state: ChunkState | undefined;
  try {
    state = await openChunkState(s, held, loc);
    const received = await pump(s, held, state, input.body, input.contentLength);
    if (input.contentLength !== undefined && received !== input.contentLength) {
      throw new UploadError('SIZE_INVALID', `received ${received} bytes, Content-Length said ${input.contentLength}`);
    }
    // Keep what does not make a part in a side object; flush it as a part if it is big enough to be one.
    if (state.writer.bufferedBytes >= MIN_PART_SIZE) await state.writer.flushRemainder();
    const parts = await state.writer.parts();
    const tail = state.writer.takeBuffered();
    const tailKey = tail.length > 0 ? uploadTailKey(loc.pathPrefix, held.id, held.version) : null;
    if (tailKey) await loc.driver.write(tailKey, tail);
    const updated = await release(s, held, {
      parts,
      multipartUploadId: state.writer.uploadId ?? null,
      size: state.size,
      tailSize: tail.length,
      tailKey,
      hashState: state.hasher.save(),
    });
    if (held.tailKey && held.tailKey !== tailKey) await loc.driver.delete(held.tailKey).catch(() => {});
    return updated;
  } catch (e) {
    // Parts uploaded by this failed request are simply not recorded; the next chunk reuses their
    // numbers. The session stays as it was before the request.
    await release(s, held).catch(() => {});
    throw e;
  }
}

/**
 * PUT: the final chunk (optional) and the digest. Verifies, moves the bytes under the blob's
 * content-addressed key, and commits the blob. On a digest mismatch the partial object is
 * deleted and the session ends.
 */
export async function completeUpload(
  s: Services,
  repo: Repository,
  session: UploadSession,
  digest: string,
  last?: ChunkInput,
): Promise<CommittedBlob> {
  const { algorithm } = parseDigest(digest);
  await s.locations.fresh();
  const loc = sessionLocation(s, session);
  // Nothing received yet and the whole blob in this request: stream it straight to its key.
  if (session.size === 0 && last) {
    const held = await acquire(s, session);
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

  const held = await acquire(s, session);
  let state: ChunkState | undefined;
  try {
    state = await openChunkState(s, held, loc);
    if (last) {
      const received = await pump(s, held, state, last.body, last.contentLength);
      if (last.contentLength !== undefined && received !== last.contentLength) {
        throw new UploadError('SIZE_INVALID', `received ${received} bytes, Content-Length said ${last.contentLength}`);
      }
    }
    const size = state.size;
    let actual: string;
    const key = blobKey(loc.pathPrefix, digest);
    if (!state.writer.uploadId) {
      // Small blob: everything is in memory (less than a part), write it under its key directly.
      const bytes = state.writer.takeBuffered();
      actual = algorithm === state.hasher.algorithm ? state.hasher.digest() : digestOfBuffer(bytes, algorithm);
      if (actual !== digest) throw digestMismatch(digest, actual);
      await writeIfAbsent(loc.driver, key, bytes);
    } else {
      await state.writer.complete();
      actual = algorithm === state.hasher.algorithm ? state.hasher.digest() : await digestOfObject(loc.driver, held.objectKey, algorithm);
      if (actual !== digest) throw digestMismatch(digest, actual);
      await moveIfAbsent(loc.driver, held.objectKey, key, size);
    }
    await s.db.transaction((tx) =>
      commitBlob(tx, { digest, size, locationId: loc.id, repositoryId: repo.id, repositoryName: repo.fullName }),
    );
    await placementAdded(s.redis, digest);
    await deleteSession(s, held, loc);
    return { digest, size, location: loc };
  } catch (e) {
    if (e instanceof UploadError && e.code === 'DIGEST_INVALID') {
      await state?.writer.abort();
      await deleteSession(s, held, loc);
    } else {
      await release(s, held).catch(() => {});
    }
    throw e;
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

async function moveIfAbsent(driver: StorageDriver, from: string, to: string, size: number): Promise<void> {
  try {
    await driver.copy(from, to, size, { ifAbsent: true });
  } catch (e) {
    if (!(e instanceof ObjectExistsError)) throw e;
  }
  await driver.delete(from);
}

/**
 * A whole blob in one request with its digest known up front (POST ?digest=, or PUT on an empty
 * session): streamed straight to its content-addressed key, verified before it becomes visible.
 * If the location already holds the blob the bytes are only hashed (to prove the client has
 * them) and not stored again.
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
  const key = blobKey(loc.pathPrefix, digest);
  const exists = (await loc.driver.stat(key)) !== null;
  const hasher = createStreamingHasher(algorithm);
  const writer = exists ? undefined : new MultipartWriter(loc.driver, key);
  let size = 0;
  try {
    for await (const raw of body) {
      const chunk = raw as Buffer;
      size += chunk.length;
      if (contentLength !== undefined && size > contentLength) throw new UploadError('SIZE_INVALID', 'more bytes than Content-Length announced');
      hasher.update(chunk);
      await writer?.write(chunk);
    }
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
  await s.db.transaction((tx) => commitBlob(tx, { digest, size, locationId: loc.id, repositoryId: repo.id, repositoryName: repo.fullName }));
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
  const loc = await writeLocation(placementDeps(s));
  return putBlob(s, repo, loc, digest, body, contentLength);
}

export async function cancelUpload(s: Services, session: UploadSession): Promise<void> {
  const loc = sessionLocation(s, session);
  const held = await acquire(s, session);
  await deleteSession(s, held, loc);
}

async function deleteSession(s: Services, session: UploadSession, loc: Location): Promise<void> {
  await s.db.delete(uploadSessions).where(eq(uploadSessions.id, session.id));
  const cleanup: Promise<unknown>[] = [];
  if (session.multipartUploadId) cleanup.push(loc.driver.abortMultipart(session.objectKey, session.multipartUploadId));
  cleanup.push(loc.driver.deleteMany(session.tailKey ? [session.objectKey, session.tailKey] : [session.objectKey]));
  await Promise.allSettled(cleanup);
}

export type { CompletedPart };
