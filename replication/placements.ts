// Placement records written by replication, and the Redis cache of "which locations hold this
// blob" that the pull path reads. Adding a copy only makes a cached answer incomplete (a farther
// copy is served meanwhile); removing one must never leave a cached answer pointing at it, so
// removals bump a global epoch that every cached entry carries, which invalidates them all.
import { and, eq, sql } from 'drizzle-orm';
import type { Redis } from 'ioredis';
import type { DbOrTx } from '../db/client.ts';
import { blobPlacements } from '../db/schema.ts';
import { type Placement, placementsOf } from '../registry/blobs.ts';
import { ReplicationError } from './errors.ts';

const EPOCH_KEY = 'placements:epoch';
const entryKey = (digest: string) => `placements:${digest}`;
const TTL_SECONDS = 300;

/**
 * Records a verified copy made by replication at the blob's content address (never itself a
 * reason to replicate). `hadPlacement`: the target had a placement (one GC marked) when the copy
 * looked at the object there. Against GC (gc/blobs.ts):
 * - a placement GC is `purging` is losing its content-address object, perhaps the one just
 *   verified or written: the copy does not count and is retried after the purge;
 * - a placement that was there and is gone now was purged meanwhile, object included: likewise;
 * - an available one (a push took a purging placement over with its own object) keeps its
 *   object key: the content-address object may be the one the purge deleted.
 */
export async function recordPlacement(tx: DbOrTx, blobId: number, locationId: number, opts: { hadPlacement?: boolean } = {}): Promise<void> {
  const rows = await tx
    .insert(blobPlacements)
    .values({ blobId, locationId, state: 'available', objectKey: null, verifiedAt: sql`now()` })
    .onConflictDoUpdate({
      target: [blobPlacements.blobId, blobPlacements.locationId],
      set: {
        state: 'available',
        objectKey: sql`case when ${blobPlacements.state} = 'available' then ${blobPlacements.objectKey} else null end`,
        verifiedAt: sql`now()`,
      },
      setWhere: sql`${blobPlacements.state} <> 'purging'`,
    })
    // xmax is 0 on a freshly inserted row version and non-zero on one written by the update.
    .returning({ inserted: sql<boolean>`(xmax = 0)` });
  if (rows.length === 0) throw new ReplicationError('targetUnavailable', 'the target copy is being garbage-collected; retrying after');
  // Thrown inside the caller's transaction: the insert is rolled back.
  if (opts.hadPlacement && rows[0]!.inserted) throw new ReplicationError('targetUnavailable', 'the target copy was garbage-collected meanwhile; copying again');
}

export async function deletePlacement(tx: DbOrTx, blobId: number, locationId: number): Promise<void> {
  await tx.delete(blobPlacements).where(and(eq(blobPlacements.blobId, blobId), eq(blobPlacements.locationId, locationId)));
}

/** The blob's verified copies (location and object key), from the cache when it is current. */
export async function cachedPlacements(db: DbOrTx, redis: Redis, blob: { id: number; digest: string }): Promise<Placement[]> {
  let epoch: string | null = null;
  try {
    const [e, raw] = await redis.mget(EPOCH_KEY, entryKey(blob.digest));
    epoch = e ?? '0';
    if (raw) {
      // `p` holds [locationId, objectKey] pairs; entries without it predate object keys.
      const entry = JSON.parse(raw) as { e: string; p?: [number, string | null][] };
      if (entry.e === epoch && entry.p) return entry.p.map(([locationId, objectKey]) => ({ locationId, objectKey }));
    }
  } catch {
    epoch = null; // Redis down: go to the database every time.
  }
  const placements = await placementsOf(db, blob.id);
  // No copy is not cached: a copy GC marked may be revived by a push any moment.
  if (epoch !== null && placements.length > 0) {
    const p = placements.map((x) => [x.locationId, x.objectKey]);
    await redis.set(entryKey(blob.digest), JSON.stringify({ e: epoch, p }), 'EX', TTL_SECONDS).catch(() => {});
  }
  return placements;
}

/** A copy was added: let readers see it now rather than when the entry expires. */
export async function placementAdded(redis: Redis, digest: string): Promise<void> {
  await redis.del(entryKey(digest)).catch(() => {});
}

/** Copies were removed (after the database commit): every cached answer is now suspect. Their
 * objects are still there, so a reader this cannot reach (Redis down) is served a copy that
 * exists until the entry expires or its process reconnects. */
export async function placementsRemoved(redis: Redis): Promise<void> {
  await redis.incr(EPOCH_KEY).catch(() => {});
}

/** Redis could not be told that copies were removed, so their objects must stay for now. */
export class PlacementCacheUnreachableError extends Error {
  constructor(cause: unknown) {
    super(`cannot invalidate cached placements (Redis: ${(cause as Error)?.message ?? String(cause)}); the objects are kept until it can`);
    this.name = 'PlacementCacheUnreachableError';
  }
}

/**
 * Copies were removed and their objects are about to be deleted: unlike placementsRemoved this
 * fails when Redis cannot be reached. A process cut off from Redis alone cannot tell whether
 * others still read an entry naming those copies (their Redis is fine, so nothing expires it
 * early), and a pull redirected to a deleted object fails; the caller retries instead.
 */
export async function placementsRemovedBeforeDeleting(redis: Redis): Promise<void> {
  try {
    await redis.incr(EPOCH_KEY);
  } catch (e) {
    throw new PlacementCacheUnreachableError(e);
  }
}
