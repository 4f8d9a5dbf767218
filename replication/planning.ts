// What replication has to do, computed from the placement policy: a blob's missing locations
// (replicateBlob), the lag once it is complete, and pages of blobs missing somewhere (backfill).
import { gt, sql } from 'drizzle-orm';
import type { DbOrTx } from '../db/client.ts';
import { blobPlacements, blobs } from '../db/schema.ts';
import type { ReplicationMetrics } from '../platform/metrics.ts';
import { blobByDigest } from '../registry/blobs.ts';
import type { LocationRegistry } from '../storage/locations.ts';
import { placementPlan, placementPlans } from './policy.ts';

export interface PlanningDeps {
  db: DbOrTx;
  locations: LocationRegistry;
  metrics: Pick<ReplicationMetrics, 'lag'>;
}

export interface ReplicationPlan {
  blobId: number;
  digest: string;
  size: number;
  wanted: string[];
  holders: string[];
  missing: string[];
}

/** The wanted locations minus those holding the blob; null when the blob is gone. */
export async function planReplication(d: PlanningDeps, digest: string): Promise<ReplicationPlan | null> {
  await d.locations.fresh();
  const blob = await blobByDigest(d.db, digest);
  if (!blob) return null;
  const plan = await placementPlan(d.db, blob.id, d.locations.all());
  return {
    blobId: blob.id,
    digest,
    size: blob.size,
    wanted: plan.wanted.map((l) => l.name),
    holders: plan.holders.map((l) => l.name),
    missing: plan.missing.map((l) => l.name),
  };
}

/** Records replication lag once every wanted location holds the blob. */
export async function finishReplication(d: PlanningDeps, digest: string): Promise<{ complete: boolean; lagSeconds: number | null }> {
  const blob = await blobByDigest(d.db, digest);
  if (!blob) return { complete: false, lagSeconds: null };
  await d.locations.fresh();
  const plan = await placementPlan(d.db, blob.id, d.locations.all());
  if (plan.missing.length > 0) return { complete: false, lagSeconds: null };
  const [row] = await d.db.execute<{ lag: number }>(sql`
    select extract(epoch from max(verified_at) - min(created_at))::float8 as lag
    from ${blobPlacements} where blob_id = ${blob.id} and state = 'available'`);
  const lag = row?.lag ?? 0;
  await d.metrics.lag(lag);
  return { complete: true, lagSeconds: lag };
}

/** planReplication for each digest of a batch (replicateBlobs); null for those gone. */
export async function planReplications(d: PlanningDeps, digests: string[]): Promise<(ReplicationPlan | null)[]> {
  const plans: (ReplicationPlan | null)[] = [];
  for (const digest of digests) plans.push(await planReplication(d, digest));
  return plans;
}

/** finishReplication for each digest of a batch: how many are complete, and the largest lag. */
export async function finishReplications(d: PlanningDeps, digests: string[]): Promise<{ complete: number; lagSeconds: number | null }> {
  let complete = 0;
  let lagSeconds: number | null = null;
  for (const digest of digests) {
    const f = await finishReplication(d, digest);
    if (!f.complete) continue;
    complete++;
    lagSeconds = Math.max(lagSeconds ?? 0, f.lagSeconds ?? 0);
  }
  return { complete, lagSeconds };
}

export interface BackfillPage {
  items: { digest: string; size: number; missing: string[] }[];
  scanned: number;
  nextCursor: number;
  done: boolean;
}

/** A page of blobs (by id) held somewhere, with the locations each is missing from. */
export async function scanForBackfill(d: PlanningDeps, input: { afterBlobId: number; limit: number; location?: string }): Promise<BackfillPage> {
  await d.locations.refresh();
  const page = await d.db
    .select({ id: blobs.id, digest: blobs.digest, size: blobs.size })
    .from(blobs)
    .where(gt(blobs.id, input.afterBlobId))
    .orderBy(blobs.id)
    .limit(input.limit);
  const plans = await placementPlans(d.db, page.map((b) => b.id), d.locations.all());
  const items = page
    .map((b) => ({
      digest: b.digest,
      size: b.size,
      missing: plans.get(b.id)!.missing.map((l) => l.name).filter((n) => !input.location || n === input.location),
      held: plans.get(b.id)!.holders.length,
    }))
    .filter((i) => i.missing.length > 0 && i.held > 0)
    .map(({ held: _held, ...i }) => i);
  return { items, scanned: page.length, nextCursor: page.at(-1)?.id ?? input.afterBlobId, done: page.length < input.limit };
}
