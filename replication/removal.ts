// Site removal's steps (Quay's util.removelocation, made safe), each a short transaction the
// removeLocation workflow runs in order: drain the location, find the blobs it alone holds,
// delete its placements (and objects) in batches where a verified copy exists elsewhere, and
// finally delete the location.
import { and, eq, gt, inArray, sql } from 'drizzle-orm';
import type { Redis } from 'ioredis';
import type { DbOrTx } from '../db/client.ts';
import { blobPlacements, blobs, storageLocations } from '../db/schema.ts';
import type { LocationRegistry } from '../storage/locations.ts';
import { placementKey } from '../storage/paths.ts';
import { requireLocation } from './errors.ts';
import { placementsRemoved, placementsRemovedBeforeDeleting } from './placements.ts';
import { placementPlans } from './policy.ts';

export interface RemovalDeps {
  db: DbOrTx;
  /** The placement cache, invalidated when placements go. */
  redis: Redis;
  locations: LocationRegistry;
}

export type LocationState = 'active' | 'draining';

/** Step 1: no new writes, reads prefer other locations. Returns the state before. */
export async function markDraining(d: RemovalDeps, name: string): Promise<LocationState> {
  const loc = await requireLocation(d.locations, name);
  await d.db.update(storageLocations).set({ state: 'draining' }).where(eq(storageLocations.id, loc.id));
  await d.locations.refresh();
  return loc.state;
}

export async function restoreLocationState(d: RemovalDeps, name: string, state: LocationState): Promise<void> {
  await d.db.update(storageLocations).set({ state }).where(eq(storageLocations.name, name));
  await d.locations.refresh();
}

export interface UnprotectedPage {
  items: { digest: string; size: number; targets: string[] }[];
  scanned: number;
  nextCursor: number;
  done: boolean;
}

/** Step 2: a page of the blobs held at `location` with no verified copy anywhere else, with the
 * locations they could be copied to. */
export async function unprotectedBlobs(d: RemovalDeps, input: { location: string; afterBlobId: number; limit: number }): Promise<UnprotectedPage> {
  const loc = await requireLocation(d.locations, input.location);
  const page = await d.db
    .select({ id: blobs.id, digest: blobs.digest, size: blobs.size })
    .from(blobPlacements)
    .innerJoin(blobs, eq(blobs.id, blobPlacements.blobId))
    .where(and(eq(blobPlacements.locationId, loc.id), gt(blobPlacements.blobId, input.afterBlobId)))
    .orderBy(blobPlacements.blobId)
    .limit(input.limit);
  const all = d.locations.all();
  const plans = await placementPlans(d.db, page.map((b) => b.id), all);
  const others = all.filter((l) => l.state === 'active' && l.id !== loc.id);
  const items = page
    .filter((b) => plans.get(b.id)!.holders.every((h) => h.id === loc.id))
    .map((b) => {
      const plan = plans.get(b.id)!;
      // Where it should be by policy; failing that, anywhere active (better than losing it).
      const wanted = plan.wanted.filter((l) => l.id !== loc.id);
      const targets = (wanted.length > 0 ? wanted : others.slice(0, 1)).map((l) => l.name);
      return { digest: b.digest, size: b.size, targets };
    });
  return { items, scanned: page.length, nextCursor: page.at(-1)?.id ?? input.afterBlobId, done: page.length < input.limit };
}

export interface DeletedBatch {
  deleted: number;
  /** Blobs with no verified copy elsewhere: left in place. */
  blocked: string[];
  remaining: boolean;
}

/** Step 3: deletes a batch of the location's placements — only of blobs with a verified copy
 * elsewhere — and, with purge, their objects. */
export async function deletePlacementsBatch(d: RemovalDeps, input: { location: string; limit: number; purge: boolean }): Promise<DeletedBatch> {
  const loc = await requireLocation(d.locations, input.location);
  const page = await d.db
    .select({ blobId: blobPlacements.blobId, digest: blobs.digest, objectKey: blobPlacements.objectKey })
    .from(blobPlacements)
    .innerJoin(blobs, eq(blobs.id, blobPlacements.blobId))
    .where(eq(blobPlacements.locationId, loc.id))
    .orderBy(blobPlacements.blobId)
    .limit(input.limit);
  if (page.length === 0) return { deleted: 0, blocked: [], remaining: false };
  const elsewhere = await d.db
    .selectDistinct({ blobId: blobPlacements.blobId })
    .from(blobPlacements)
    .innerJoin(storageLocations, eq(storageLocations.id, blobPlacements.locationId))
    .where(
      and(
        inArray(blobPlacements.blobId, page.map((p) => p.blobId)),
        sql`${blobPlacements.locationId} <> ${loc.id}`,
        eq(blobPlacements.state, 'available'),
      ),
    );
  const safe = new Set(elsewhere.map((r) => r.blobId));
  const deletable = page.filter((p) => safe.has(p.blobId));
  const blocked = page.filter((p) => !safe.has(p.blobId)).map((p) => p.digest);
  if (deletable.length > 0) {
    await d.db
      .delete(blobPlacements)
      .where(and(eq(blobPlacements.locationId, loc.id), inArray(blobPlacements.blobId, deletable.map((p) => p.blobId))));
    if (input.purge) {
      // Without Redis this fails before any delete: the rows are gone, so the objects are left
      // to the orphan sweep rather than deleted under a cached answer that may still name them.
      await placementsRemovedBeforeDeleting(d.redis);
      await loc.driver.deleteMany(deletable.map((p) => placementKey(loc.pathPrefix, p.digest, p.objectKey)));
    } else {
      await placementsRemoved(d.redis);
    }
  }
  return { deleted: deletable.length, blocked, remaining: page.length === input.limit || blocked.length > 0 };
}

/** Last step: deletes the location — unless placements remain (a copy landed after the last
 * batch), which the removal then deletes first. */
export async function deleteLocationRow(d: RemovalDeps, name: string): Promise<{ deleted: true } | { deleted: false; placementsRemaining: number }> {
  await d.locations.refresh();
  const loc = d.locations.byName(name);
  // Gone already: an earlier attempt deleted it and its worker died before reporting so.
  if (!loc) return { deleted: true };
  const [left] = await d.db.select({ n: sql<number>`count(*)::int` }).from(blobPlacements).where(eq(blobPlacements.locationId, loc.id));
  if ((left?.n ?? 0) > 0) return { deleted: false, placementsRemaining: left!.n };
  await d.db.delete(storageLocations).where(eq(storageLocations.id, loc.id));
  await placementsRemoved(d.redis);
  await d.locations.refresh();
  return { deleted: true };
}
