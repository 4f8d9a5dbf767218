// Adding a fourth location and backfilling it; removing a location safely, and refusing to when a
// blob exists nowhere else and cannot be copied.
import { createHash, randomBytes } from 'node:crypto';
import type { Client, Connection } from '@temporalio/client';
import { WorkflowFailedError } from '@temporalio/client';
import { eq, sql } from 'drizzle-orm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { blobPlacements, blobs, storageLocations } from '../db/schema.ts';
import { addLocation, replicationSummary, startBackfill, startLocationRemoval } from '../replication/operations.ts';
import { blobKey } from '../storage/paths.ts';
import { type S3Driver } from '../storage/s3.ts';
import { WORKFLOW_IDS } from '../temporal.config.ts';
import type { RunningWorkers } from '../workers/main.ts';
import { backfillWorkflow, removeLocationWorkflow, replicateBlobWorkflow } from '../contract/replication.ts';
import { workflowHandle } from '../platform/workflows.ts';
import { createTestUser, startTestApi, startTestWorkers, testDatabase, testTemporal } from './support/harness.ts';
import { OciClient } from './support/oci-client.ts';
import { startExtraRegion, type ExtraRegion } from './support/extra-region.ts';

const BUCKET = 'extra';

describe('backfill and site removal', () => {
  const database = testDatabase();
  let api: Awaited<ReturnType<typeof startTestApi>>;
  let workers: RunningWorkers;
  let extraWorkers: RunningWorkers;
  let temporal: Client;
  let connection: Connection;
  const regions: ExtraRegion[] = [];
  let client: OciClient;
  let repo: string;

  /** A new S3 server registered as a location with stored (encrypted) credentials. */
  async function newRegion(name: string, replicateByDefault: boolean): Promise<S3Driver> {
    const region = await startExtraRegion(name, BUCKET);
    regions.push(region);
    await addLocation(api.services, { name, region: name, endpoint: region.endpoint, bucket: BUCKET, replicateByDefault, credentials: region.credentials });
    return region.driver;
  }

  beforeAll(async () => {
    api = await startTestApi();
    workers = await startTestWorkers({ control: true, mirror: false });
    ({ client: temporal, connection } = await testTemporal());
    const user = await createTestUser('backfill');
    repo = `${user.username}/data`;
    client = new OciClient({ baseUrl: api.url, authorization: user.authorization });
  });

  afterAll(async () => {
    // Leave the shared stack as we found it: the extra locations (and their placements) go.
    for (const name of ['sa-east', 'solo', 'broken']) {
      const [loc] = await database.db.select().from(storageLocations).where(eq(storageLocations.name, name));
      if (!loc) continue;
      await database.db.delete(blobPlacements).where(eq(blobPlacements.locationId, loc.id));
      await database.db.delete(storageLocations).where(eq(storageLocations.id, loc.id));
    }
    await database.db.delete(blobs).where(sql`not exists (select 1 from blob_placements p where p.blob_id = ${blobs.id})`);
    await extraWorkers?.stop();
    await workers?.stop();
    await api?.close();
    for (const r of regions) await r.stop();
    await connection?.close();
    await database.close();
  });

  async function placementsAt(location: string): Promise<number> {
    const [row] = await database.db.execute<{ n: number }>(sql`
      select count(*)::int as n from blob_placements p join storage_locations l on l.id = p.location_id where l.name = ${location}`);
    return row?.n ?? 0;
  }

  async function blobsHeldSomewhere(): Promise<number> {
    const [row] = await database.db.execute<{ n: number }>(sql`select count(distinct blob_id)::int as n from blob_placements`);
    return row?.n ?? 0;
  }

  it('backfills every existing blob to a new location once, and a second run copies nothing', async () => {
    const pushed: string[] = [];
    for (let i = 0; i < 8; i++) pushed.push(await client.pushBlob(repo, randomBytes(10_000 + i)));
    // Let the pushes replicate to the three regions first.
    for (const d of pushed) await workflowHandle(temporal, replicateBlobWorkflow, WORKFLOW_IDS.replicateBlob(d)).result().catch(() => undefined);

    const sa = await newRegion('sa-east', true);
    extraWorkers = await startTestWorkers({ control: false, mirror: false, copyLocations: ['sa-east', 'solo'] });
    // What the summary says sa-east should hold but does not (computed in SQL, independently
    // of the backfill's own planning; namespaces with their own policy are left out).
    const pendingAt = async (name: string) => (await replicationSummary(api.services)).find((l) => l.location === name)!;
    const missingBefore = (await pendingAt('sa-east')).blobsPending;
    expect(missingBefore).toBeGreaterThanOrEqual(8);

    const first = await startBackfill(api.services, { location: 'sa-east' });
    const p1 = await workflowHandle(temporal, backfillWorkflow, first.workflowId).result();
    expect(p1.failed).toBe(0);
    expect(p1.copied).toBe(missingBefore);
    expect(p1.done).toBe(true);
    expect((await pendingAt('sa-east')).blobsPending).toBe(0);
    expect((await pendingAt('sa-east')).blobsHeld).toBe(missingBefore);
    for (const d of pushed) {
      const h = createHash('sha256');
      for await (const c of (await sa.read(blobKey('', d))).body) h.update(c as Buffer);
      expect(`sha256:${h.digest('hex')}`).toBe(d);
    }

    const second = await startBackfill(api.services, { location: 'sa-east' });
    const p2 = await workflowHandle(temporal, backfillWorkflow, second.workflowId).result();
    expect(p2.copied).toBe(0);
    expect(p2.queued).toBe(0);
    expect(p2.scanned).toBeGreaterThanOrEqual(p1.scanned);
  });

  it('removes a location, leaving every blob with a copy elsewhere and purging its objects', async () => {
    const before = await blobsHeldSomewhere();
    const started = await startLocationRemoval(api.services, { name: 'sa-east', purge: true });
    const result = await workflowHandle(temporal, removeLocationWorkflow, started.workflowId).result();
    expect(result.phase).toBe('done');
    expect(result.atRisk).toEqual([]);
    expect(await database.db.select().from(storageLocations).where(eq(storageLocations.name, 'sa-east'))).toEqual([]);
    expect(await placementsAt('sa-east')).toBe(0);
    expect(await blobsHeldSomewhere()).toBe(before);
    expect(await regions[0]!.driver.list('sha256/')).toEqual([]);
  });

  it('copies a blob held only by the location before removing it', async () => {
    await newRegion('solo', false);
    // A push through an instance that prefers `solo` lands there first.
    const soloApi = await startTestApi({ MERIDIAN_STORAGE_PREFERENCE: 'solo,us-east' });
    try {
      const soloClient = new OciClient({ baseUrl: soloApi.url, authorization: client.opts.authorization });
      await workers.stop(); // no replication yet: the blob is only in `solo`
      const digest = await soloClient.pushBlob(repo, randomBytes(5000));
      workers = await startTestWorkers({ control: true, mirror: false, copyLocations: ['us-east', 'eu-west', 'ap-south'] });
      const started = await startLocationRemoval(api.services, { name: 'solo' });
      const result = await workflowHandle(temporal, removeLocationWorkflow, started.workflowId).result();
      expect(result.phase).toBe('done');
      const [blob] = await database.db.select().from(blobs).where(eq(blobs.digest, digest));
      const left = await database.db.select().from(blobPlacements).where(eq(blobPlacements.blobId, blob!.id));
      expect(left.length).toBeGreaterThan(0);
    } finally {
      await soloApi.close();
    }
  });

  it('refuses to remove a location holding a blob that exists nowhere else and cannot be copied', async () => {
    const d = await newRegion('broken', false);
    // A placement whose bytes do not match its digest: no good copy exists anywhere.
    const claimed = randomBytes(3000);
    const digest = `sha256:${createHash('sha256').update(claimed).digest('hex')}`;
    await d.write(blobKey('', digest), randomBytes(3000));
    const loc = (await database.db.select().from(storageLocations).where(eq(storageLocations.name, 'broken')))[0]!;
    const [blob] = await database.db.insert(blobs).values({ digest, size: 3000 }).returning();
    await database.db.insert(blobPlacements).values({ blobId: blob!.id, locationId: loc.id });

    const started = await startLocationRemoval(api.services, { name: 'broken' });
    const err = await workflowHandle(temporal, removeLocationWorkflow, started.workflowId).result().catch((e: unknown) => e);
    expect(err).toBeInstanceOf(WorkflowFailedError);
    const cause = (err as WorkflowFailedError).cause as { type?: string; message: string; details?: unknown[] };
    expect(cause.type).toBe('BlobsAtRisk');
    expect(JSON.stringify(cause.details)).toContain(digest);
    // Nothing was deleted and the location is back in service.
    const [after] = await database.db.select().from(storageLocations).where(eq(storageLocations.name, 'broken'));
    expect(after?.state).toBe('active');
    expect(await placementsAt('broken')).toBe(1);
  });
});
