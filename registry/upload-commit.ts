// Finishing an upload: the digest verified, then the bytes become the blob (completed where
// their parts are, or written at the content address when small) and the placement recorded —
// for a chunked session (completeUpload) and for a whole blob in one request (putBlob).
import { createHash, randomUUID } from 'node:crypto';
import type { Readable } from 'node:stream';
import { and, eq } from 'drizzle-orm';
import { uploadSessions } from '../db/schema.ts';
import type { Services } from '../platform/services.ts';
import { ObjectExistsError, ObjectNotFoundError, type StorageDriver } from '../storage/driver.ts';
import type { Location } from '../storage/locations.ts';
import { MultipartWriter } from '../storage/multipart-writer.ts';
import { blobKey, uploadDataKey } from '../storage/paths.ts';
import { placementAdded } from '../replication/placements.ts';
import { commitBlob, needsOwnObject, placementStateAt, type ReplicationBatch } from './blobs.ts';
import { type DigestAlgorithm, parseDigest } from './digest.ts';
import { createResumableHasher, createStreamingHasher } from './hashing.ts';
import { writeLocation } from './placement.ts';
import type { Repository } from './repositories.ts';
import { type ChunkInput, type ChunkState, checkRange, HASH_BACKLOG_BYTES, openChunkState, PARTS_IN_FLIGHT, pump } from './upload-chunks.ts';
import { acquire, deleteSession, partsGone, release, removeSessionObjects, sessionLocation, UploadError, type UploadSession } from './upload-sessions.ts';

export interface CommittedBlob {
  digest: string;
  size: number;
  location: Location;
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
  opts: { replication?: ReplicationBatch } = {},
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
    commitBlob(tx, { digest, size, locationId: loc.id, objectKey: ownKey, reuse: exists, repositoryId: repo.id, repositoryName: repo.fullName, replication: opts.replication }),
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
  opts: { replication?: ReplicationBatch } = {},
): Promise<CommittedBlob> {
  const loc = await writeLocation(s.placement);
  return putBlob(s, repo, loc, digest, body, contentLength, opts);
}
