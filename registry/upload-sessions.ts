// Upload sessions (the "upload session store"): the row that holds an upload's progress between
// requests — size, multipart upload and parts, tail objects, hash state — and the lease that
// lets one request at a time write to it.
import { randomUUID } from 'node:crypto';
import { and, eq, sql } from 'drizzle-orm';
import { uploadSessions } from '../db/schema.ts';
import type { Services } from '../platform/services.ts';
import { MIN_PART_SIZE, ObjectNotFoundError } from '../storage/driver.ts';
import type { Location } from '../storage/locations.ts';
import { uploadDataKey } from '../storage/paths.ts';
import type { DigestAlgorithm } from './digest.ts';
import { createResumableHasher } from './hashing.ts';
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
export const BUSY_LEASE_SECONDS = 60;

/** Advertised to clients (distribution spec 1.1 OCI-Chunk-Min-Length): a chunk at least this
 * long becomes a storage part at once; shorter ones wait in side objects until a part's worth
 * has arrived. */
export const CHUNK_MIN_LENGTH = MIN_PART_SIZE;

/** Sessions untouched this long are abandoned (cleaned up by the upload janitor). */
export const UPLOAD_TTL_HOURS = 24;

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

export function sessionLocation(s: Services, session: UploadSession): Location {
  const loc = s.locations.get(session.locationId);
  if (!loc) throw new UploadError('BLOB_UPLOAD_UNKNOWN', 'the storage location of this upload no longer exists');
  return loc;
}

/** Takes the session for one request, no two requests writing its parts at once: one round trip
 * (a second only to tell an unknown upload from a busy one). */
export async function acquire(s: Services, repo: Repository, id: string): Promise<UploadSession> {
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

export async function release(s: Services, session: UploadSession, changes: Partial<UploadSession> = {}): Promise<UploadSession> {
  const [row] = await s.db
    .update(uploadSessions)
    .set({ ...changes, busyUntil: null, updatedAt: sql`now()` })
    .where(and(eq(uploadSessions.id, session.id), eq(uploadSessions.version, session.version)))
    .returning();
  if (!row) throw new UploadError('BLOB_UPLOAD_INVALID', 'the upload was changed by another request');
  return row;
}

/** Extends the lease of a request still streaming bytes into the session. */
export async function renewLease(s: Services, session: UploadSession): Promise<void> {
  await s.db
    .update(uploadSessions)
    .set({ busyUntil: sql`now() + make_interval(secs => ${BUSY_LEASE_SECONDS})` })
    .where(and(eq(uploadSessions.id, session.id), eq(uploadSessions.version, session.version)));
}

/** The session's tail objects, in order. */
export function tailKeysOf(session: UploadSession): string[] {
  return [...(session.tailKey ? [session.tailKey] : []), ...session.tailKeys];
}

/** The session's multipart upload or tail vanished from storage (completed by an attempt that
 * then failed, or removed by hand): the client can only start again. */
export function partsGone(e: unknown): unknown {
  return e instanceof ObjectNotFoundError ? new UploadError('BLOB_UPLOAD_UNKNOWN', "the upload's stored parts are gone; start the upload again") : e;
}

export async function cancelUpload(s: Services, repo: Repository, id: string): Promise<void> {
  const held = await acquire(s, repo, id);
  await deleteSession(s, held, sessionLocation(s, held));
}

export async function deleteSession(s: Services, session: UploadSession, loc: Location): Promise<void> {
  await s.db.delete(uploadSessions).where(eq(uploadSessions.id, session.id));
  await removeSessionObjects(loc, session, { keepObject: false });
}

/** Best effort: what is left behind is found by the orphan scan. */
export async function removeSessionObjects(loc: Location, session: UploadSession, opts: { keepObject: boolean }): Promise<void> {
  const cleanup: Promise<unknown>[] = [];
  // Aborting a completed upload is a no-op; an uncompleted one still holds parts.
  if (session.multipartUploadId && !opts.keepObject) cleanup.push(loc.driver.abortMultipart(session.objectKey, session.multipartUploadId));
  const keys = [...(opts.keepObject ? [] : [session.objectKey]), ...tailKeysOf(session)];
  if (keys.length > 0) cleanup.push(loc.driver.deleteMany(keys));
  await Promise.allSettled(cleanup);
}
