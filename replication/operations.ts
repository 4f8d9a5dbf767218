// Operator actions and status for geo-replication, shared by the management API and the CLI:
// locations, placements of a blob, per-location summary, backfill and site removal.
import { randomBytes } from 'node:crypto';
import { WorkflowIdConflictPolicy } from '@temporalio/common';
import { WorkflowExecutionAlreadyStartedError } from '@temporalio/client';
import { asc, eq, sql } from 'drizzle-orm';
import { blobPlacements, storageLocations } from '../db/schema.ts';
import { DomainError } from '../platform/errors.ts';
import type { Services } from '../platform/services.ts';
import { blobByDigest } from '../registry/blobs.ts';
import { LOCATION_NAME } from '../config.ts';
import { probeLocation } from '../platform/health.ts';
import { DEV_CREDENTIALS_REF, type Location, sealContext } from '../storage/locations.ts';
import {
  type BackfillInput,
  type BackfillProgress,
  backfillProgressQuery,
  backfillWorkflow,
  type RemoveLocationInput,
  type RemoveLocationProgress,
  removeLocationProgressQuery,
  removeLocationWorkflow,
} from '../contract/replication.ts';
import { type OperationStatus, operationStatus, startWorkflow, workflowHandle } from '../platform/workflows.ts';
import { WORKFLOW_IDS } from '../temporal.config.ts';
import { upsertScrubSchedule } from '../workers/schedules.ts';

export class OperationError extends DomainError {}

/** A location as operators see it: its settings and health, never its credentials. */
export type LocationView = Pick<Location, 'name' | 'region' | 'endpoint' | 'bucket' | 'pathPrefix' | 'replicateByDefault' | 'state'> & {
  health: { healthy: boolean; reason?: string; since?: string };
};

/** Locations as operators see them — never their credentials. */
export async function listLocations(s: Services): Promise<LocationView[]> {
  await s.locations.refresh();
  const locs = s.locations.all();
  const health = await s.health.states(locs.map((l) => l.name));
  return locs.map((l) => ({
    name: l.name,
    region: l.region,
    endpoint: l.endpoint,
    bucket: l.bucket,
    pathPrefix: l.pathPrefix,
    replicateByDefault: l.replicateByDefault,
    state: l.state,
    health: health.get(l.name) ?? { healthy: true },
  }));
}

export interface AddLocationInput {
  name: string;
  region: string;
  endpoint: string;
  bucket: string;
  pathPrefix?: string;
  s3Region?: string;
  replicateByDefault?: boolean;
  /** `env:PREFIX` to read PREFIX_ACCESS_KEY/_SECRET_KEY, or explicit keys stored encrypted. */
  credentials: { ref: string } | { accessKeyId: string; secretAccessKey: string };
}

/** Adds a location after checking that it can be written, read and deleted from. */
export async function addLocation(s: Services, input: AddLocationInput): Promise<LocationView> {
  if (!LOCATION_NAME.test(input.name)) throw new OperationError('invalid', 'name: lowercase letters, digits and "-", up to 63 characters');
  if (!input.region) throw new OperationError('invalid', 'region is required');
  try {
    const u = new URL(input.endpoint);
    if (u.protocol !== 'http:' && u.protocol !== 'https:') throw new Error();
  } catch {
    throw new OperationError('invalid', 'endpoint must be an http(s) URL');
  }
  if (!/^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/.test(input.bucket)) throw new OperationError('invalid', 'bucket is not a valid S3 bucket name');
  const pathPrefix = (input.pathPrefix ?? '').replace(/^\/+|\/+$/g, '');
  const stored = 'accessKeyId' in input.credentials;
  const row = {
    name: input.name,
    region: input.region,
    endpoint: input.endpoint,
    s3Region: input.s3Region ?? 'us-east-1',
    bucket: input.bucket,
    pathPrefix,
    credentialsRef: stored ? 'stored' : (input.credentials as { ref: string }).ref,
    accessKeyEnc: stored ? s.secrets.seal((input.credentials as { accessKeyId: string }).accessKeyId, sealContext(input.name, 'access')) : null,
    secretKeyEnc: stored ? s.secrets.seal((input.credentials as { secretAccessKey: string }).secretAccessKey, sealContext(input.name, 'secret')) : null,
    replicateByDefault: input.replicateByDefault ?? true,
  };
  if (!stored && !row.credentialsRef.startsWith('env:')) throw new OperationError('invalid', 'credentials: give accessKeyId and secretAccessKey, or ref "env:PREFIX"');
  let driver;
  try {
    driver = s.locations.createDriver(row);
  } catch (e) {
    throw new OperationError('invalid', (e as Error).message);
  }
  try {
    await probeLocation(driver, pathPrefix, `add-${randomBytes(4).toString('hex')}`);
  } catch (e) {
    throw new OperationError('unavailable', `cannot use the location: ${(e as Error).message}`);
  } finally {
    driver.close();
  }
  const [created] = await s.db.insert(storageLocations).values(row).onConflictDoNothing().returning();
  if (!created) throw new OperationError('conflict', `location ${input.name} already exists`);
  await s.locations.refresh();
  // Its weekly scrub, now rather than at the next `meridian temporal setup` (which would also
  // create it, so a Temporal that does not answer here only delays it).
  const names = (await s.db.select({ name: storageLocations.name }).from(storageLocations).orderBy(asc(storageLocations.id))).map((r) => r.name);
  await upsertScrubSchedule(s.temporal.client, names, input.name).catch((e: unknown) =>
    s.logger.warn({ err: e, location: input.name }, 'no scrub schedule for the new location yet: run meridian temporal setup'),
  );
  return (await listLocations(s)).find((l) => l.name === input.name)!;
}

export interface PlacementView {
  location: string;
  region: string;
  state: string;
  verifiedAt: string;
}

export async function blobPlacementsView(s: Services, digest: string): Promise<{ digest: string; size: number; placements: PlacementView[]; missing: string[] }> {
  const blob = await blobByDigest(s.db, digest);
  if (!blob) throw new OperationError('not_found', `blob ${digest} is not known`);
  const rows = await s.db
    .select({ location: storageLocations.name, region: storageLocations.region, state: blobPlacements.state, verifiedAt: blobPlacements.verifiedAt })
    .from(blobPlacements)
    .innerJoin(storageLocations, eq(storageLocations.id, blobPlacements.locationId))
    .where(eq(blobPlacements.blobId, blob.id))
    .orderBy(asc(storageLocations.id));
  const { placementPlan } = await import('./policy.ts');
  await s.locations.fresh();
  const plan = await placementPlan(s.db, blob.id, s.locations.all());
  return {
    digest,
    size: blob.size,
    placements: rows.map((r) => ({ ...r, verifiedAt: r.verifiedAt.toISOString() })),
    missing: plan.missing.map((l) => l.name),
  };
}

export interface LocationSummary {
  location: string;
  state: string;
  healthy: boolean;
  blobsHeld: number;
  bytesHeld: number;
  blobsPending: number;
  oldestPendingAgeSeconds: number | null;
}

/** Per location: what it holds and what it should hold but does not yet. */
export async function replicationSummary(s: Services): Promise<LocationSummary[]> {
  const locs = await listLocations(s);
  const out: LocationSummary[] = [];
  for (const l of locs) {
    const loc = s.locations.byName(l.name)!;
    const [held] = await s.db.execute<{ n: number; bytes: number }>(sql`
      select count(*)::int as n, coalesce(sum(b.size), 0)::float8 as bytes
      from blob_placements p join blobs b on b.id = p.blob_id
      where p.location_id = ${loc.id} and p.state = 'available'`);
    const [pending] =
      loc.state === 'active'
        ? await s.db.execute<{ n: number; oldest: number | null }>(sql`
      select count(*)::int as n, extract(epoch from now() - min(b.created_at))::float8 as oldest
      from blobs b
      where exists (select 1 from blob_placements p where p.blob_id = b.id and p.state = 'available')
        and not exists (select 1 from blob_placements p where p.blob_id = b.id and p.location_id = ${loc.id})
        and (
          (${loc.replicateByDefault} and not exists (select 1 from repository_blobs rb where rb.blob_id = b.id))
          or exists (
            select 1 from repository_blobs rb
            join repositories r on r.id = rb.repository_id
            join namespaces n on n.id = r.namespace_id
            where rb.blob_id = b.id
              and ((n.replication_locations is null and ${loc.replicateByDefault}) or ${loc.name} = any(n.replication_locations))))`)
        : [{ n: 0, oldest: null }];
    out.push({
      location: l.name,
      state: l.state,
      healthy: l.health.healthy,
      blobsHeld: held?.n ?? 0,
      bytesHeld: held?.bytes ?? 0,
      blobsPending: pending?.n ?? 0,
      oldestPendingAgeSeconds: pending && pending.n > 0 ? pending.oldest : null,
    });
  }
  return out;
}

export interface StartedWorkflow {
  workflowId: string;
  runId: string;
  /** False when one was already running and this call joined it. */
  started: boolean;
}

export async function startBackfill(s: Services, input: BackfillInput): Promise<StartedWorkflow> {
  if (input.location) {
    await s.locations.refresh();
    if (!s.locations.byName(input.location)) throw new OperationError('not_found', `location ${input.location} does not exist`);
  }
  const workflowId = WORKFLOW_IDS.backfill(input.location);
  return startOrJoin(workflowId, () =>
    startWorkflow(s.temporal.client, backfillWorkflow, {
      workflowId,
      args: [input],
      workflowIdConflictPolicy: WorkflowIdConflictPolicy.FAIL,
      staticSummary: `Backfill replication${input.location ? ` to ${input.location}` : ''}`,
    }),
  () => workflowHandle(s.temporal.client, backfillWorkflow, workflowId).describe());
}

/** Starts the workflow, or — one with its id is running — joins it: `started` says which. */
async function startOrJoin(
  workflowId: string,
  start: () => Promise<{ firstExecutionRunId: string }>,
  describe: () => Promise<{ runId: string }>,
): Promise<StartedWorkflow> {
  try {
    const handle = await start();
    return { workflowId, runId: handle.firstExecutionRunId, started: true };
  } catch (e) {
    if (!(e instanceof WorkflowExecutionAlreadyStartedError)) throw e;
    return { workflowId, runId: (await describe()).runId, started: false };
  }
}

export async function backfillProgress(s: Services, location: string | undefined): Promise<OperationStatus<BackfillProgress> & { totalBlobs: number }> {
  // Blobs to scan, for a progress bar (the workflow walks them by id and does not count ahead).
  const [count] = await s.db.execute<{ n: number }>(sql`select count(*)::int as n from blobs`);
  const status = await operationStatus(workflowHandle(s.temporal.client, backfillWorkflow, WORKFLOW_IDS.backfill(location)), backfillProgressQuery, {
    notFound: () => new OperationError('not_found', 'no backfill has run'),
  });
  return { ...status, totalBlobs: count?.n ?? 0 };
}

export async function startLocationRemoval(s: Services, input: RemoveLocationInput): Promise<StartedWorkflow> {
  await s.locations.refresh();
  if (!s.locations.byName(input.name)) throw new OperationError('not_found', `location ${input.name} does not exist`);
  const workflowId = WORKFLOW_IDS.removeLocation(input.name);
  return startOrJoin(workflowId, () =>
    startWorkflow(s.temporal.client, removeLocationWorkflow, {
      workflowId,
      args: [input],
      workflowIdConflictPolicy: WorkflowIdConflictPolicy.FAIL,
      staticSummary: `Remove storage location ${input.name}${input.purge ? ' and purge its objects' : ''}`,
    }),
  () => workflowHandle(s.temporal.client, removeLocationWorkflow, workflowId).describe());
}

export function removalProgress(s: Services, name: string): Promise<OperationStatus<RemoveLocationProgress>> {
  return operationStatus(workflowHandle(s.temporal.client, removeLocationWorkflow, WORKFLOW_IDS.removeLocation(name)), removeLocationProgressQuery, {
    notFound: () => new OperationError('not_found', `no removal of ${name} has run`),
  });
}

export { DEV_CREDENTIALS_REF };
