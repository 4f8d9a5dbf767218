// The orphan sweep and garbage collection at once. Both remove a content-address object through a
// `purging` placement (gc/blobs.ts), the sweep with two transactions around its delete; GC's
// purge used to claim every purging placement of its location, so a purge running in that window
// took the sweep's claim over: it deleted the sweep's row, counted the orphan as garbage it
// reclaimed, and its finish deleted the blob row the sweep had made (the sweep counted the orphan
// too). The window is held open deterministically: the sweep's delete of the orphan waits while GC
// purges the same location.
import { randomBytes } from 'node:crypto';
import { MockActivityEnvironment } from '@temporalio/testing';
import { sql } from 'drizzle-orm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createGcActivities } from '../activities/gc.ts';
import { createOrphanActivities } from '../activities/orphans.ts';
import type { OrphanSweep } from '../contract/orphans.ts';
import type { PurgeBatch } from '../gc/blobs.ts';
import type { Services } from '../platform/services.ts';
import { blobKey } from '../storage/paths.ts';
import type { S3Driver } from '../storage/s3.ts';
import type { RunningWorkers } from '../workers/main.ts';
import { type GcTestStack, gcApi, makeImage, meridian, placementsByDigest, pushImage, startGcTestStack, waitEverywhere } from './support/gc-helpers.ts';
import { basic, createTestUser, ensureTestLocations, stackInfo, testDatabase } from './support/harness.ts';
import { waitFor } from './support/mirror-helpers.ts';
import { OciClient, sha256 } from './support/oci-client.ts';

/** Makes `services`' driver of `location` call `during` before it deletes `key` (the orphan
 * sweep deletes one object at a time; GC's purge uses deleteMany). Returns the undo. */
async function beforeDeleteOf(services: Services, location: string, key: string, during: () => Promise<void>): Promise<() => void> {
  const driver = (await services.locations.fresh()).byName(location)!.driver;
  const original = driver.delete.bind(driver);
  driver.delete = async (k: string) => {
    if (k === key) await during();
    return original(k);
  };
  return () => {
    driver.delete = original;
  };
}

describe('orphan sweep racing garbage collection', () => {
  const database = testDatabase();
  const prefix = `orphgc-${randomBytes(4).toString('hex')}`;
  let stack: GcTestStack;
  let api: GcTestStack['api'];
  let workers: RunningWorkers;
  let drivers: Map<string, S3Driver>;
  let regions: string[];
  const root = `root-${randomBytes(3).toString('hex')}`;
  const rootPassword = `pw-${randomBytes(8).toString('hex')}`;

  beforeAll(async () => {
    await ensureTestLocations();
    // A prefix of this file's own: the sweep sees only the objects written here.
    await database.db.execute(sql`update storage_locations set path_prefix = ${prefix}`);
    regions = stackInfo().regions.map((r) => r.name);
    stack = await startGcTestStack(root, rootPassword);
    ({ api, workers, drivers } = stack);
  });
  afterAll(async () => {
    await stack?.close();
    await database.close();
  });

  async function rowsOf(digest: string): Promise<{ blobs: number; placements: number }> {
    const [r] = await database.db.execute<{ blobs: number; placements: number }>(sql`
      select (select count(*)::int from blobs where digest = ${digest}) as blobs,
             (select count(*)::int from blob_placements p join blobs b on b.id = p.blob_id where b.digest = ${digest}) as placements`);
    return r!;
  }

  it('a purge in the middle of an orphan removal purges only what GC marked (activities)', async () => {
    const s = api.services;
    const region = regions[0]!;
    const loc = (await s.locations.fresh()).byName(region)!;
    const driver = drivers.get(region)!;
    // Garbage GC marked: a blob row, its copy here (deleting) and the object.
    const garbage = randomBytes(3000);
    await driver.write(blobKey(prefix, sha256(garbage)), garbage);
    await database.db.execute(sql`
      with b as (insert into blobs (digest, size) values (${sha256(garbage)}, ${garbage.length}) returning id)
      insert into blob_placements (blob_id, location_id, state) select id, ${loc.id}, 'deleting' from b`);
    // An orphan: an object at a content address no row accounts for.
    const orphan = randomBytes(5000);
    const orphanKey = blobKey(prefix, sha256(orphan));
    await driver.write(orphanKey, orphan);

    let purged: PurgeBatch | undefined;
    const undo = await beforeDeleteOf(s, region, orphanKey, async () => {
      // The sweep's claim is committed, its delete not yet sent: GC purges this location now.
      purged = await new MockActivityEnvironment().run(createGcActivities(s).purgeLocation, { location: region, batch: 100, maxBatches: 5 });
    });
    let swept: OrphanSweep;
    try {
      swept = await new MockActivityEnvironment().run(createOrphanActivities(s).sweepLocationOrphans, { location: region, graceSeconds: 0, dryRun: false });
    } finally {
      undo();
    }
    console.log(`activities: sweep removed ${swept.orphanObjects} orphan(s); purge in its window deleted ${purged?.deleted} copies, ${purged?.bytes} bytes`);
    expect(swept.orphanObjects).toBe(1);
    expect(swept.orphanBytes).toBe(orphan.length);
    // Old code: 2 copies, 8000 bytes (the sweep's orphan taken over as garbage).
    expect(purged).toEqual({ deleted: 1, bytes: garbage.length, remaining: false });
    // Both ended as they should: objects gone, no rows left behind.
    expect(await driver.stat(orphanKey)).toBeNull();
    expect(await driver.stat(blobKey(prefix, sha256(garbage)))).toBeNull();
    expect(await rowsOf(sha256(orphan))).toEqual({ blobs: 0, placements: 0 });
    expect(await rowsOf(sha256(garbage))).toEqual({ blobs: 1, placements: 0 }); // the run's finish deletes the row
    await database.db.execute(sql`delete from blobs where digest = ${sha256(garbage)}`);
  });

  it('GC takes over an orphan claim a stopped sweep left behind (an hour old), and no younger one', async () => {
    const s = api.services;
    const region = regions[1]!;
    const loc = (await s.locations.fresh()).byName(region)!;
    const driver = drivers.get(region)!;
    const [left, live] = [randomBytes(1000), randomBytes(2000)];
    for (const [bytes, claimedAgo] of [
      [left, '2 hours'],
      [live, '1 minute'],
    ] as const) {
      await driver.write(blobKey(prefix, sha256(bytes)), bytes);
      await database.db.execute(sql`
        with b as (insert into blobs (digest, size) values (${sha256(bytes)}, ${bytes.length}) returning id)
        insert into blob_placements (blob_id, location_id, state, purge_owner, purge_claimed_at)
        select id, ${loc.id}, 'purging', 'orphans', now() - ${claimedAgo}::interval from b`);
    }
    const purged = await new MockActivityEnvironment().run(createGcActivities(s).purgeLocation, { location: region, batch: 100, maxBatches: 5 });
    expect(purged).toEqual({ deleted: 1, bytes: left.length, remaining: false });
    expect(await driver.stat(blobKey(prefix, sha256(left)))).toBeNull();
    expect(await rowsOf(sha256(left))).toEqual({ blobs: 1, placements: 0 });
    // The live claim is the sweep's to finish: its object and row are untouched.
    expect(await driver.stat(blobKey(prefix, sha256(live)))).not.toBeNull();
    expect(await rowsOf(sha256(live))).toEqual({ blobs: 1, placements: 1 });
    await driver.delete(blobKey(prefix, sha256(live)));
    await database.db.execute(sql`delete from blobs where digest in (${sha256(left)}, ${sha256(live)})`);
  });

  it('a GC run and `meridian orphans` at once report what each removed, and leave nothing behind (HTTP and CLI)', async () => {
    const user = await createTestUser('orphgc');
    const client = new OciClient({ baseUrl: api.url, authorization: user.authorization });
    const image = makeImage(`${user.username}/app`, 'v1', 4000, 1);
    await pushImage(client, image);
    const digests = image.blobs.map(sha256);
    await waitEverywhere(database, digests, regions.length);
    expect((await client.fetch(`/v2/${image.repo}/manifests/${image.tag}`, { method: 'DELETE' })).status).toBe(202);
    const garbageBytes = image.blobs.reduce((n, b) => n + b.length, 0);
    const garbageCopies = (await Promise.all(digests.map((d) => placementsByDigest(database, d)))).flat();
    expect(garbageCopies.length).toBe(digests.length * regions.length);

    const region = regions[0]!;
    const orphan = randomBytes(7000);
    const orphanKey = blobKey(prefix, sha256(orphan));
    await drivers.get(region)!.write(orphanKey, orphan);

    // The copy worker's sweep of `region` holds its delete of the orphan until the run is over.
    let inWindow!: () => void;
    const reachedWindow = new Promise<void>((r) => (inWindow = r));
    let release!: () => void;
    const released = new Promise<void>((r) => (release = r));
    const undo = await beforeDeleteOf(workers.services, region, orphanKey, async () => {
      inWindow();
      await released;
    });
    const gc = gcApi(api.url, root, rootPassword);
    try {
      const env = { MERIDIAN_URL: api.url, MERIDIAN_USERNAME: root, MERIDIAN_PASSWORD: rootPassword };
      const sweeping = meridian(['orphans', '--grace', '0', '--json'], env);
      const first = await Promise.race([reachedWindow.then(() => 'window'), sweeping.then((r) => `the sweep ended first: ${r.out} ${r.err}`)]);
      expect(first).toBe('window');
      // The other locations' sweeps finish first: listing a location while the run deletes its
      // garbage is a race of another kind (a copy deleted between listing and its check looks
      // orphaned; removing it again is harmless, but it is counted).
      await waitFor('only the held sweep left', async () => {
        const r = await fetch(`${api.url}/api/v1/orphans`, { headers: { Authorization: basic(root, rootPassword) } });
        const st = (await r.json()) as { progress: { pendingLocations: string[] } | null };
        return st.progress?.pendingLocations.length === 1 && st.progress.pendingLocations[0] === region;
      });
      await gc.start({ grace_seconds: 0 });
      const done = await gc.until('the run to finish', (st) => st.status !== 'RUNNING', 120_000);
      release();
      const swept = await sweeping;
      expect(swept.code, swept.err).toBe(0);
      const report = JSON.parse(swept.out) as { locations: OrphanSweep[]; failedLocations: unknown[] };
      const progress = done.progress!;
      console.log(
        `http/cli: gc ${done.status}, reclaimed ${JSON.stringify(progress.reclaimedPerLocation)}, blob rows deleted ${progress.blobRowsDeleted}; ` +
          `sweep removed ${JSON.stringify(report.locations.map((l) => [l.location, l.orphanObjects, l.orphanBytes]))}`,
      );
      expect(done.status).toBe('COMPLETED');
      expect(progress.failedLocations).toEqual([]);
      // The run reclaimed the image's blobs in every region, and nothing else (old code: the
      // orphan too, in `region`: 3 copies, and 3 blob rows).
      for (const r of regions) {
        expect(progress.reclaimedPerLocation.find((t) => t.location === r), r).toEqual({ location: r, blobs: digests.length, bytes: garbageBytes });
      }
      expect(progress.blobRowsDeleted).toBe(digests.length);
      expect(report.failedLocations).toEqual([]);
      for (const l of report.locations) {
        expect([l.location, l.orphanObjects, l.orphanBytes]).toEqual(l.location === region ? [region, 1, orphan.length] : [l.location, 0, 0]);
      }
    } finally {
      release();
      undo();
    }
    // Consistent: no row of any of them, none of their objects left, no purge pending.
    for (const d of [...digests, sha256(orphan)]) expect(await rowsOf(d), d).toEqual({ blobs: 0, placements: 0 });
    for (const c of garbageCopies) expect(await drivers.get(c.location)!.stat(c.key), `${c.key} in ${c.location}`).toBeNull();
    expect(await drivers.get(region)!.stat(orphanKey)).toBeNull();
    const [left] = await database.db.execute<{ n: number }>(sql`select count(*)::int as n from blob_placements where state <> 'available'`);
    expect(left?.n).toBe(0);
  }, 300_000);
});
