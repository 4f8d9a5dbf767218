// The integrity scrub with the three real regions: objects deleted or bit-flipped behind
// Meridian's back (written straight into a region's bucket) are found, never served once found —
// by any region's API, redirecting or streaming — and re-copied from another region through the
// replication workflow; `meridian scrub <location>` runs the whole thing and reports it.
import { randomBytes } from 'node:crypto';
import type { Client, Connection } from '@temporalio/client';
import { sql } from 'drizzle-orm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createUser } from '../auth/accounts.ts';
import { type ScrubPage, scrubPage } from '../replication/scrub.ts';
import { blobKey } from '../storage/paths.ts';
import type { S3Driver } from '../storage/s3.ts';
import { WORKFLOW_IDS } from '../temporal.config.ts';
import type { RunningWorkers } from '../workers/main.ts';
import { basic, createTestUser, stackInfo, startTestApi, startTestWorkers, testDatabase, testTemporal } from './support/harness.ts';
import { meridian, regionDrivers } from './support/gc-helpers.ts';
import { waitFor } from './support/mirror-helpers.ts';
import { OciClient, pushRandomImage, sha256 } from './support/oci-client.ts';

type Api = Awaited<ReturnType<typeof startTestApi>>;

describe('integrity scrub', () => {
  const database = testDatabase();
  let api: Api;
  /** One API per region, each preferring its own region first (redirect mode), and one streaming
   * API preferring the damaged region. */
  const regional = new Map<string, Api>();
  let streaming: Api;
  let workers: RunningWorkers | undefined;
  let connection: Connection;
  let temporal: Client;
  let drivers: Map<string, S3Driver>;
  let env: Record<string, string>;
  let regions: string[];
  const root = `root-${randomBytes(3).toString('hex')}`;
  const rootPassword = `pw-${randomBytes(8).toString('hex')}`;

  const preferring = (first: string) => [first, ...regions.filter((r) => r !== first)].join(',');

  beforeAll(async () => {
    regions = stackInfo().regions.map((r) => r.name);
    api = await startTestApi({ MERIDIAN_SUPERUSERS: root });
    for (const r of regions) regional.set(r, await startTestApi({ MERIDIAN_STORAGE_PREFERENCE: preferring(r) }));
    streaming = await startTestApi({ MERIDIAN_STORAGE_PREFERENCE: preferring(regions[1]!), MERIDIAN_BLOB_SERVE_MODE: 'proxy' });
    workers = await startTestWorkers({ control: true, mirror: false });
    ({ client: temporal, connection } = await testTemporal());
    await api.services.db.transaction((tx) => createUser(tx, { username: root, password: rootPassword }));
    env = { MERIDIAN_URL: api.url, MERIDIAN_USERNAME: root, MERIDIAN_PASSWORD: rootPassword };
    drivers = regionDrivers();
  });
  afterAll(async () => {
    for (const d of drivers?.values() ?? []) d.close();
    await workers?.stop();
    for (const a of [api, streaming, ...regional.values()]) await a?.close();
    await connection?.close();
    await database.close();
  });

  async function placement(digest: string, location: string): Promise<{ state: string; object_key: string | null } | undefined> {
    const [r] = await database.db.execute<{ state: string; object_key: string | null }>(sql`
      select p.state, p.object_key from blob_placements p join blobs b on b.id = p.blob_id
      join storage_locations l on l.id = p.location_id where b.digest = ${digest} and l.name = ${location}`);
    return r;
  }

  async function waitReplicated(digests: string[]): Promise<void> {
    for (const d of digests) {
      await waitFor(`${d} in every region`, async () => {
        for (const r of regions) if ((await placement(d, r))?.state !== 'available') return false;
        return true;
      });
    }
  }

  /** Reads what a region's bucket holds at the blob's content address. */
  async function stored(region: string, digest: string): Promise<Buffer | null> {
    const d = drivers.get(region)!;
    if (!(await d.stat(blobKey('', digest)))) return null;
    const r = await d.read(blobKey('', digest));
    const chunks: Buffer[] = [];
    for await (const c of r.body) chunks.push(c as Buffer);
    return Buffer.concat(chunks);
  }

  function flipped(bytes: Buffer): Buffer {
    const out = Buffer.from(bytes);
    out[out.length >> 1]! ^= 0x40;
    return out;
  }

  it('finds a deleted and a bit-flipped copy, never serves them, and re-copies them from another region', async () => {
    const user = await createTestUser('scrub');
    const repo = `${user.username}/app`;
    const client = new OciClient({ baseUrl: api.url, authorization: user.authorization });
    const image = await pushRandomImage(client, repo, 'v1', { layers: 2, layerSize: 40_000 });
    const [gone, bad] = [image.blobs[1]!, image.blobs[2]!];
    const [goneDigest, badDigest] = [sha256(gone), sha256(bad)];
    await waitReplicated(image.blobs.map(sha256));
    // The push's replications have closed: the repair the scrub asks for starts a new one (one
    // still running would take the request as its own and finish without re-planning; the scrub
    // workflow's repair check starts another then — this test calls the scrub's page directly).
    for (const d of image.blobs.map(sha256)) {
      await waitFor(`replication of ${d} closed`, async () => (await temporal.workflow.getHandle(WORKFLOW_IDS.replicateBlob(d)).describe()).status.name !== 'RUNNING');
    }

    // No workers from here until the pulls are checked: nothing repairs the copies meanwhile.
    await workers!.stop();
    workers = undefined;
    const damagedRegion = regions[1]!;
    const damagedPort = stackInfo().regions[1]!.port;
    await drivers.get(damagedRegion)!.delete(blobKey('', goneDigest));
    await drivers.get(damagedRegion)!.write(blobKey('', badDigest), flipped(bad));

    // The damage is real: an API streaming from that region serves the flipped bytes until the
    // scrub finds them.
    const pullFrom = (a: Api, digest: string) => new OciClient({ baseUrl: a.url, authorization: user.authorization }).pullBlob(repo, digest);
    const before = await pullFrom(streaming, badDigest);
    expect(before.status).toBe(200);
    expect(before.body.equals(bad)).toBe(false);

    // The scrub's page, as its activity runs it on the region's queue.
    const s = api.services;
    const deps = { db: s.db, redis: s.redis, locations: s.locations, metrics: s.metrics.replication };
    let page: ScrubPage | undefined;
    let cursor = 0;
    const totals = { scrubbed: 0, missing: 0, corrupt: 0 };
    do {
      page = await scrubPage(
        deps,
        { location: damagedRegion, afterBlobId: cursor, limit: 100, sample: 1, seed: 1, rateBytesPerSecond: 0, maxSeconds: 60 },
        { heartbeat: () => {}, signal: new AbortController().signal },
      );
      cursor = page.nextCursor;
      totals.scrubbed += page.scrubbed;
      totals.missing += page.missing;
      totals.corrupt += page.corrupt;
      if (page.findings.length) console.log('scrub findings:', JSON.stringify(page.findings));
    } while (!page.done);
    expect(totals.scrubbed).toBeGreaterThanOrEqual(3);
    expect(totals).toMatchObject({ missing: 1, corrupt: 1 });
    expect(page.awaitingRepair.length + totals.missing + totals.corrupt).toBeGreaterThanOrEqual(2);
    expect((await placement(goneDigest, damagedRegion))?.state).toBe('damaged');
    expect((await placement(badDigest, damagedRegion))?.state).toBe('damaged');

    // Found: no API serves them from the damaged region any more, redirecting or streaming.
    let pulls = 0;
    for (const a of [...regional.values(), streaming]) {
      for (const [digest, bytes] of [
        [goneDigest, gone],
        [badDigest, bad],
      ] as const) {
        const r = await pullFrom(a, digest);
        expect(r.status).toBe(200);
        expect(r.body.equals(bytes)).toBe(true);
        expect(r.response.url).not.toContain(`:${damagedPort}/`);
        pulls++;
      }
    }
    console.log(`${pulls} pulls through ${regional.size + 1} APIs while the copies were damaged: every one byte-identical, none from ${damagedRegion}`);

    // A push of a damaged blob to that region writes its own object and takes the placement over.
    await new OciClient({ baseUrl: streaming.url, authorization: user.authorization }).pushBlob(repo, bad);
    const pushed = await placement(badDigest, damagedRegion);
    expect(pushed?.state).toBe('available');
    expect(pushed?.object_key).toMatch(/^_blobs\//);
    expect((await pullFrom(streaming, badDigest)).body.equals(bad)).toBe(true);

    // With workers back, the replication the scrub asked for re-copies the missing one.
    workers = await startTestWorkers({ control: true, mirror: false });
    await waitFor('the deleted copy re-copied', async () => (await placement(goneDigest, damagedRegion))?.state === 'available');
    expect((await stored(damagedRegion, goneDigest))?.equals(gone)).toBe(true);
    const after = await pullFrom(regional.get(damagedRegion)!, goneDigest);
    expect(after.body.equals(gone)).toBe(true);
    expect(after.response.url).toContain(`:${damagedPort}/`);

    // A full scrub through the CLI now finds every copy there sound.
    const run = await meridian(['scrub', damagedRegion, '--rate', '0'], env);
    expect(run.code, run.err).toBe(0);
    expect(run.out).toContain(`scrub of ${damagedRegion} done (every copy, no rate limit)`);
    expect(run.out).toMatch(/missing: 0 {2}corrupt: 0 {2}repaired: 0/);
  });

  it('meridian scrub finds, reports and repairs damaged copies in one run, and counts them in /metrics', async () => {
    const user = await createTestUser('scrub2');
    const repo = `${user.username}/app`;
    const client = new OciClient({ baseUrl: api.url, authorization: user.authorization });
    const image = await pushRandomImage(client, repo, 'v1', { layers: 3, layerSize: 30_000 });
    await waitReplicated(image.blobs.map(sha256));
    const region = regions[2]!;
    const [gone, bad] = [image.blobs[1]!, image.blobs[3]!];
    await drivers.get(region)!.delete(blobKey('', sha256(gone)));
    await drivers.get(region)!.write(blobKey('', sha256(bad)), flipped(bad));

    const run = await meridian(['scrub', region, '--rate', '50Mi'], env);
    console.log(run.out);
    expect(run.code, run.err).toBe(0);
    expect(run.out).toContain(`scrub of ${region} done (every copy, 50.0 MiB/s)`);
    expect(run.out).toMatch(/missing: 1 {2}corrupt: 1 {2}repaired: 2/);
    expect(run.out).toContain(`missing  ${sha256(gone)}`);
    expect(run.out).toContain(`corrupt  ${sha256(bad)}`);
    for (const b of [gone, bad]) {
      expect((await placement(sha256(b), region))?.state).toBe('available');
      expect((await stored(region, sha256(b)))?.equals(b)).toBe(true);
      const pulled = await new OciClient({ baseUrl: regional.get(region)!.url, authorization: user.authorization }).pullBlob(repo, sha256(b));
      expect(pulled.body.equals(b)).toBe(true);
    }

    const metrics = await (await fetch(`${api.url}/metrics`)).text();
    expect(metrics).toContain(`meridian_scrub_missing_total{location="${region}"} 1`);
    expect(metrics).toContain(`meridian_scrub_corrupt_total{location="${region}"} 1`);
    expect(metrics).toContain(`meridian_scrub_repaired_total{location="${region}"} 2`);
    expect(metrics).toMatch(new RegExp(`meridian_scrub_last_finished_timestamp_seconds\\{location="${region}"\\} \\d+`));

    // Operators only; bad input is a 4xx with a message; unknown locations are 404.
    const post = (who: string, body: unknown, loc = region) =>
      fetch(`${api.url}/api/v1/scrub/${loc}`, { method: 'POST', headers: { Authorization: who, 'Content-Type': 'application/json' }, body: JSON.stringify(body) });
    expect((await post(user.authorization, {})).status).toBe(403);
    const bad1 = await post(basic(root, rootPassword), { sample: 0 });
    expect(bad1.status).toBe(400);
    expect(await bad1.text()).toContain('sample must be a number greater than 0 and at most 1');
    expect((await post(basic(root, rootPassword), { rate_bytes_per_second: -1 })).status).toBe(400);
    expect((await post(basic(root, rootPassword), {}, 'nowhere')).status).toBe(404);
    const usage = await meridian(['scrub', region, '--sample', '1.5'], env);
    expect(usage.code).toBe(2);
    expect(usage.err).toContain('a fraction greater than 0 and at most 1');
  });
});
