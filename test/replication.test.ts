// Geo-replication end to end: pushes through the API land in the preferred region and are copied
// to the others by Temporal workflows; pulls use the nearest copy; outages of a region or of
// Temporal lose nothing.
import { createHash, randomBytes } from 'node:crypto';
import type { Client, Connection } from '@temporalio/client';
import { eq, inArray, sql } from 'drizzle-orm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { blobPlacements, blobs, outbox } from '../db/schema.ts';
import { DEV_BUCKET } from '../devstack/stack.ts';
import { blobKey } from '../storage/paths.ts';
import { SEARCH_ATTRIBUTES } from '../temporal.config.ts';
import { S3Driver } from '../storage/s3.ts';
import type { RunningWorkers } from '../workers/main.ts';
import { type ReplicateBlobResult, replicateBlobWorkflow } from '../contract/replication.ts';
import { workflowHandle } from '../platform/workflows.ts';
import { WORKFLOW_IDS } from '../temporal.config.ts';
import { createTestUser, stackControl, stackInfo, startTestApi, startTestWorkers, testDatabase, testTemporal } from './support/harness.ts';
import { OciClient, sha256 } from './support/oci-client.ts';

type Api = Awaited<ReturnType<typeof startTestApi>>;

describe('geo-replication', () => {
  const database = testDatabase();
  const drivers = new Map<string, S3Driver>();
  let temporal: Client;
  let connection: Connection;
  let apiUsEast: Api;
  let apiApSouth: Api;
  let apiEuWest: Api;
  let workers: RunningWorkers;
  let apSouthWorker: RunningWorkers | undefined;
  let user: Awaited<ReturnType<typeof createTestUser>>;
  let repo: string;

  beforeAll(async () => {
    for (const r of stackInfo().regions) {
      drivers.set(r.name, new S3Driver({ name: r.name, endpoint: `http://127.0.0.1:${r.port}`, region: 'us-east-1', bucket: DEV_BUCKET, ...stackInfo().s3Credentials }));
    }
    ({ client: temporal, connection } = await testTemporal());
    apiUsEast = await startTestApi({ MERIDIAN_STORAGE_PREFERENCE: 'us-east,eu-west,ap-south' });
    apiApSouth = await startTestApi({ MERIDIAN_STORAGE_PREFERENCE: 'ap-south,eu-west,us-east' });
    apiEuWest = await startTestApi({ MERIDIAN_STORAGE_PREFERENCE: 'eu-west,us-east,ap-south' });
    workers = await startTestWorkers({ control: true, mirror: false, copyLocations: ['us-east', 'eu-west'] });
    apSouthWorker = await startTestWorkers({ control: false, mirror: false, copyLocations: ['ap-south'] });
    user = await createTestUser('geo');
    repo = `${user.username}/app`;
  });

  afterAll(async () => {
    await stackControl.start('s3-eu-west').catch(() => {});
    await stackControl.start('temporal').catch(() => {});
    await apSouthWorker?.stop();
    await workers?.stop();
    for (const api of [apiUsEast, apiApSouth, apiEuWest]) await api?.close();
    for (const d of drivers.values()) d.close();
    await connection?.close();
    await database.close();
  });

  const clientFor = (api: Api) => new OciClient({ baseUrl: api.url, authorization: user.authorization });

  async function storedHash(region: string, digest: string): Promise<string | null> {
    const d = drivers.get(region)!;
    const key = blobKey('', digest);
    if (!(await d.stat(key))) return null;
    const h = createHash('sha256');
    for await (const c of (await d.read(key)).body) h.update(c as Buffer);
    return `sha256:${h.digest('hex')}`;
  }

  async function replication(digest: string): Promise<ReplicateBlobResult> {
    const handle = workflowHandle(temporal, replicateBlobWorkflow, WORKFLOW_IDS.replicateBlob(digest));
    // The relay delivers within a moment of the push.
    await expect.poll(() => handle.describe().then(() => true, () => false), { timeout: 30_000 }).toBe(true);
    return handle.result();
  }

  async function regionsHolding(digest: string): Promise<string[]> {
    const rows = await database.db.execute<{ name: string }>(sql`
      select l.name from blob_placements p join blobs b on b.id = p.blob_id join storage_locations l on l.id = p.location_id
      where b.digest = ${digest} order by l.name`);
    return rows.map((r) => r.name);
  }

  /** Which region a pull is served from (the redirect target). */
  async function pulledFrom(api: Api, digest: string): Promise<string> {
    const r = await clientFor(api).fetch(`/v2/${repo}/blobs/${digest}`);
    expect(r.status).toBe(307);
    const port = Number(new URL(r.headers.get('location')!).port);
    return stackInfo().regions.find((x) => x.port === port)!.name;
  }

  it('copies a pushed blob to every other region, verified by digest, findable in Temporal by its digest', async () => {
    const bytes = randomBytes(300_000);
    const digest = await clientFor(apiUsEast).pushBlob(repo, bytes);
    expect(await regionsHolding(digest)).toEqual(['us-east']);
    const result = await replication(digest);
    expect(result.state).toBe('complete');
    expect(result.copies.map((c) => c.target).sort()).toEqual(['ap-south', 'eu-west']);
    expect(result.copies.every((c) => c.source === 'us-east')).toBe(true);
    for (const region of ['us-east', 'eu-west', 'ap-south']) {
      const head = await drivers.get(region)!.stat(blobKey('', digest));
      expect(head?.size, region).toBe(bytes.length);
      expect(await storedHash(region, digest)).toBe(digest);
    }
    expect(await regionsHolding(digest)).toEqual(['ap-south', 'eu-west', 'us-east']);

    const found: string[] = [];
    await expect
      .poll(async () => {
        found.length = 0;
        for await (const w of temporal.workflow.list({ query: `MeridianBlobDigest = "${digest}"` })) found.push(w.workflowId);
        return found.length;
      }, { timeout: 10_000 })
      .toBe(1);
    expect(found).toEqual([`replicate/${digest}`]);
    const desc = await workflowHandle(temporal, replicateBlobWorkflow, WORKFLOW_IDS.replicateBlob(digest)).describe();
    expect(desc.typedSearchAttributes.get(SEARCH_ATTRIBUTES.state)).toBe('complete');
    expect(desc.typedSearchAttributes.get(SEARCH_ATTRIBUTES.completedLocations)?.sort()).toEqual(['ap-south', 'eu-west', 'us-east']);
    expect(desc.typedSearchAttributes.get(SEARCH_ATTRIBUTES.repository)).toBe(repo);
    // Planning and bookkeeping run as local activities: the only activity tasks through Temporal
    // are the two copies (a mirror sync starts one of these workflows per blob).
    const history = await workflowHandle(temporal, replicateBlobWorkflow, WORKFLOW_IDS.replicateBlob(digest)).fetchHistory();
    const scheduled = (history.events ?? []).map((e) => e.activityTaskScheduledEventAttributes?.activityType?.name).filter(Boolean);
    expect(scheduled).toEqual(['copyBlobToLocation', 'copyBlobToLocation']);

    // The same blob pushed again (through any instance) starts no second copy.
    await clientFor(apiUsEast).pushBlob(repo, bytes);
    await clientFor(apiApSouth).pushBlobChunked(repo, bytes, 100_000);
    const intents = await database.db.select().from(outbox).where(sql`${outbox.payload}->>'workflowId' = ${`replicate/${digest}`}`);
    expect(intents).toHaveLength(1);
    let runs = 0;
    for await (const _ of temporal.workflow.list({ query: `WorkflowId = "replicate/${digest}"` })) runs++;
    expect(runs).toBe(1);
  });

  it('serves a pull from the source while replication is incomplete, then from the nearest copy', async () => {
    await apSouthWorker!.stop();
    apSouthWorker = undefined;
    const digest = await clientFor(apiUsEast).pushBlob(repo, randomBytes(50_000));
    await expect.poll(() => regionsHolding(digest), { timeout: 30_000 }).toEqual(['eu-west', 'us-east']);
    // ap-south prefers itself, then eu-west: eu-west has it now.
    expect(await pulledFrom(apiApSouth, digest)).toBe('eu-west');
    // Before any copy exists, the only holder (the source) serves it.
    await workers.stop();
    const onlyInUs = await clientFor(apiUsEast).pushBlob(repo, randomBytes(40_000));
    expect(await pulledFrom(apiApSouth, onlyInUs)).toBe('us-east');
    workers = await startTestWorkers({ control: true, mirror: false, copyLocations: ['us-east', 'eu-west'] });

    apSouthWorker = await startTestWorkers({ control: false, mirror: false, copyLocations: ['ap-south'] });
    expect((await replication(digest)).state).toBe('complete');
    expect(await pulledFrom(apiApSouth, digest)).toBe('ap-south');
    expect(await pulledFrom(apiUsEast, digest)).toBe('us-east');
  });

  it('keeps pushes and pulls working while a region is down, and catches up when it returns', async () => {
    const before = await clientFor(apiUsEast).pushBlob(repo, randomBytes(20_000));
    expect((await replication(before)).state).toBe('complete');

    await stackControl.stop('s3-eu-west');
    try {
      // Wait until the instances' breakers have noticed (the probe runs every few seconds).
      await expect.poll(() => apiEuWest.services.health.isHealthy('eu-west'), { timeout: 20_000 }).toBe(false);
      // Pulls that would prefer eu-west are served elsewhere.
      expect(await pulledFrom(apiEuWest, before)).not.toBe('eu-west');
      const pulled = await clientFor(apiEuWest).pullBlob(repo, before);
      expect(pulled.status).toBe(200);
      expect(sha256(pulled.body)).toBe(before);
      // Pushes through every instance succeed, those preferring eu-west landing elsewhere.
      const viaEu = await clientFor(apiEuWest).pushBlob(repo, randomBytes(30_000));
      const viaUs = await clientFor(apiUsEast).pushBlobChunked(repo, randomBytes(3_000_000), 1_000_000);
      expect(await regionsHolding(viaEu)).not.toContain('eu-west');
      for (const d of [viaEu, viaUs]) {
        expect((await clientFor(apiApSouth).pullBlob(repo, d)).status).toBe(200);
      }
      await stackControl.start('s3-eu-west');
      // Every pending copy completes with no manual step.
      for (const d of [viaEu, viaUs]) {
        expect((await replication(d)).state).toBe('complete');
        expect(await storedHash('eu-west', d)).toBe(d);
      }
    } finally {
      await stackControl.start('s3-eu-west');
    }
  });

  it('accepts 100 pushes while Temporal is down and replicates all of them once it is back', async () => {
    await stackControl.stop('temporal');
    const digests: string[] = [];
    try {
      const c = clientFor(apiUsEast);
      for (let i = 0; i < 100; i++) digests.push(await c.pushBlob(repo, randomBytes(2000 + i)));
    } finally {
      await stackControl.start('temporal');
    }
    expect(digests).toHaveLength(100);
    await expect
      .poll(
        async () => {
          const [row] = await database.db
            .select({ n: sql<number>`count(*)::int` })
            .from(blobPlacements)
            .innerJoin(blobs, eq(blobs.id, blobPlacements.blobId))
            .where(inArray(blobs.digest, digests));
          return row?.n;
        },
        // 200 copies on a busy 2-core machine take 2-3 minutes.
        { timeout: 240_000, interval: 2000 },
      )
      .toBe(300);
  }, 360_000);

  it('replicates a namespace with its own policy only to the locations it names', async () => {
    const { setNamespaceReplication } = await import('../replication/namespace-policy.ts');
    const other = await createTestUser('policy');
    await setNamespaceReplication(apiUsEast.services, other.username, ['us-east', 'ap-south']);
    await expect(setNamespaceReplication(apiUsEast.services, other.username, ['mars'])).rejects.toThrow(/unknown location "mars"/);
    const c = new OciClient({ baseUrl: apiUsEast.url, authorization: other.authorization });
    const digest = await c.pushBlob(`${other.username}/app`, randomBytes(12_345));
    const result = await replication(digest);
    expect(result.state).toBe('complete');
    expect(result.copies.map((x) => x.target)).toEqual(['ap-south']);
    expect(await regionsHolding(digest)).toEqual(['ap-south', 'us-east']);
    expect(await storedHash('eu-west', digest)).toBeNull();
  });

  it('exposes replication metrics', async () => {
    const text = await (await fetch(`${apiUsEast.url}/metrics`)).text();
    expect(text).toMatch(/meridian_replication_copies_total\{source="us-east",target="eu-west"\} \d+/);
    expect(text).toMatch(/meridian_replication_lag_seconds_count [1-9]\d*/);
    expect(text).toMatch(/meridian_location_healthy\{location="eu-west",region="eu-west",state="active"\} 1/);
    const apText = await (await fetch(`${apiApSouth.url}/metrics`)).text();
    expect(apText).toMatch(/meridian_blob_pulls_total\{location="ap-south",mode="redirect"\} [1-9]/);
    expect(text).toMatch(/meridian_outbox_pending \d+/);
    // Temporal's view of who polls each copy queue (this file's workers poll all three).
    expect(text).toMatch(/meridian_copy_queue_pollers\{location="eu-west",region="eu-west"\} [1-9]/);
  });
});
