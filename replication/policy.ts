// Which locations should hold a blob. By default every active location marked "replicate by
// default"; a namespace may instead name its own set (per-namespace replication, which Quay only
// offers through support). A blob used by several namespaces goes to the union of their sets.
import { and, eq, inArray } from 'drizzle-orm';
import type { DbOrTx } from '../db/client.ts';
import { blobPlacements, namespaces, repositories, repositoryBlobs } from '../db/schema.ts';
import type { Location } from '../storage/locations.ts';

export interface BlobPlacementPlan {
  /** Locations that should hold the blob. */
  wanted: Location[];
  /** Locations holding a verified copy. */
  holders: Location[];
  /** wanted minus holders. */
  missing: Location[];
}

function defaults(all: Location[]): Location[] {
  return all.filter((l) => l.state === 'active' && l.replicateByDefault);
}

/** The namespaces' policies for each blob: null entries mean "the defaults". */
async function policiesFor(db: DbOrTx, blobIds: number[]): Promise<Map<number, (string[] | null)[]>> {
  const out = new Map<number, (string[] | null)[]>();
  if (blobIds.length === 0) return out;
  const rows = await db
    .selectDistinct({ blobId: repositoryBlobs.blobId, namespaceId: namespaces.id, policy: namespaces.replicationLocations })
    .from(repositoryBlobs)
    .innerJoin(repositories, eq(repositories.id, repositoryBlobs.repositoryId))
    .innerJoin(namespaces, eq(namespaces.id, repositories.namespaceId))
    .where(inArray(repositoryBlobs.blobId, blobIds));
  for (const r of rows) {
    const list = out.get(r.blobId) ?? [];
    list.push(r.policy);
    out.set(r.blobId, list);
  }
  return out;
}

export async function holdersOf(db: DbOrTx, blobIds: number[]): Promise<Map<number, number[]>> {
  const out = new Map<number, number[]>();
  if (blobIds.length === 0) return out;
  const rows = await db
    .select({ blobId: blobPlacements.blobId, locationId: blobPlacements.locationId })
    .from(blobPlacements)
    .where(and(inArray(blobPlacements.blobId, blobIds), eq(blobPlacements.state, 'available')));
  for (const r of rows) out.set(r.blobId, [...(out.get(r.blobId) ?? []), r.locationId]);
  return out;
}

/** Plans for many blobs at once (backfill batches). */
export async function placementPlans(db: DbOrTx, blobIds: number[], all: Location[]): Promise<Map<number, BlobPlacementPlan>> {
  const [policies, holders] = await Promise.all([policiesFor(db, blobIds), holdersOf(db, blobIds)]);
  const byName = new Map(all.map((l) => [l.name, l]));
  const plans = new Map<number, BlobPlacementPlan>();
  for (const blobId of blobIds) {
    const ps = policies.get(blobId) ?? [null];
    const wanted = new Map<number, Location>();
    for (const p of ps) {
      const set = p === null ? defaults(all) : p.map((n) => byName.get(n)).filter((l): l is Location => !!l && l.state === 'active');
      for (const l of set) wanted.set(l.id, l);
    }
    const holderIds = new Set(holders.get(blobId) ?? []);
    const holderLocs = all.filter((l) => holderIds.has(l.id));
    plans.set(blobId, {
      wanted: [...wanted.values()],
      holders: holderLocs,
      missing: [...wanted.values()].filter((l) => !holderIds.has(l.id)),
    });
  }
  return plans;
}

export async function placementPlan(db: DbOrTx, blobId: number, all: Location[]): Promise<BlobPlacementPlan> {
  return (await placementPlans(db, [blobId], all)).get(blobId)!;
}
