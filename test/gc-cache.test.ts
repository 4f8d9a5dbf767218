// Garbage collection and the Redis placement cache the pull paths read: a purge invalidates every
// cached answer before it deletes the claimed copies' objects, not after it deleted their rows —
// otherwise a pull in between is redirected to an object that is gone. Set up as after a mark
// whose invalidation was lost (Redis unreachable then): a cached answer still names the copy.
import { MockActivityEnvironment } from '@temporalio/testing';
import { sql } from 'drizzle-orm';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createGcActivities } from '../activities/gc.ts';
import { blobByDigest } from '../registry/blobs.ts';
import { cachedPlacements } from '../replication/placements.ts';
import type { RunningWorkers } from '../workers/main.ts';
import { makeImage, placementsByDigest, pushImage, regionDrivers, waitEverywhere } from './support/gc-helpers.ts';
import { createTestUser, startTestApi, startTestWorkers, testDatabase } from './support/harness.ts';
import { OciClient, sha256 } from './support/oci-client.ts';

describe('garbage collection and the placement cache', () => {
  const database = testDatabase();
  let api: Awaited<ReturnType<typeof startTestApi>>;
  let workers: RunningWorkers;
  const regions = [...regionDrivers().keys()];

  beforeAll(async () => {
    api = await startTestApi();
    workers = await startTestWorkers({ control: true, mirror: false });
  });
  afterAll(async () => {
    await workers?.stop();
    await api?.close();
    await database.close();
  });

  /** A pushed blob held by every region, its placements cached, then its copy in the first
   * region marked for deletion with the cached answer left as it was. */
  async function markedWhileCached(name: string) {
    const user = await createTestUser(name);
    const client = new OciClient({ baseUrl: api.url, authorization: user.authorization });
    const image = makeImage(`${user.username}/app`, 'v1');
    await pushImage(client, image);
    const digest = sha256(image.blobs[1]!);
    await waitEverywhere(database, [digest], regions.length);
    const s = api.services;
    const blob = (await blobByDigest(s.db, digest))!;
    const region = regions[0]!;
    const loc = (await s.locations.fresh()).byName(region)!;
    expect((await cachedPlacements(s.db, s.redis, blob)).map((p) => p.locationId)).toContain(loc.id);
    await database.db.execute(sql`update blob_placements set state = 'deleting' where blob_id = ${blob.id} and location_id = ${loc.id}`);
    return { s, blob, digest, region, loc };
  }

  it('invalidates cached placements before deleting the objects', async () => {
    const { s, blob, region, loc } = await markedWhileCached('gccache');
    // What a pull would be told while the purge deletes the object.
    const seenWhileDeleting: number[][] = [];
    const deleteMany = loc.driver.deleteMany.bind(loc.driver);
    loc.driver.deleteMany = async (keys: string[]) => {
      seenWhileDeleting.push((await cachedPlacements(s.db, s.redis, blob)).map((p) => p.locationId));
      return deleteMany(keys);
    };
    try {
      const purge = createGcActivities(s).purgeLocation;
      const purged: Awaited<ReturnType<typeof purge>> = await new MockActivityEnvironment().run(purge, { location: region, batch: 1000, maxBatches: 5 });
      expect(purged.deleted).toBeGreaterThanOrEqual(1);
    } finally {
      loc.driver.deleteMany = deleteMany;
    }
    expect(seenWhileDeleting.length).toBeGreaterThan(0);
    for (const seen of seenWhileDeleting) expect(seen).not.toContain(loc.id);
    expect((await cachedPlacements(s.db, s.redis, blob)).map((p) => p.locationId)).not.toContain(loc.id);
  });

  // A purging worker cut off from Redis while the API still reads its cache: the cached answer
  // names the copy and nothing will expire it early, so the object must stay until the
  // invalidation can be sent.
  it('keeps the objects while it cannot invalidate cached placements, and deletes them once it can', async () => {
    const { s, blob, digest, region, loc } = await markedWhileCached('gccachedown');
    const key = (await placementsByDigest(database, digest)).find((p) => p.location === region)!.key;

    // Nothing listens on port 1: every command fails at once.
    const unreachable = new Redis({ host: '127.0.0.1', port: 1, lazyConnect: true, enableOfflineQueue: false, maxRetriesPerRequest: 0, retryStrategy: () => null });
    try {
      const cutOff = createGcActivities({ ...s, redis: unreachable }).purgeLocation;
      await expect(new MockActivityEnvironment().run(cutOff, { location: region, batch: 1000, maxBatches: 5 })).rejects.toThrow(/cannot invalidate cached placements/);
    } finally {
      unreachable.disconnect();
    }
    expect(await loc.driver.stat(key)).not.toBeNull();
    expect((await cachedPlacements(s.db, s.redis, blob)).map((p) => p.locationId)).toContain(loc.id);

    // Redis reachable again (the activity's retry): the cache is invalidated, then the object goes.
    const purge = createGcActivities(s).purgeLocation;
    const purged: Awaited<ReturnType<typeof purge>> = await new MockActivityEnvironment().run(purge, { location: region, batch: 1000, maxBatches: 5 });
    expect(purged.deleted).toBeGreaterThanOrEqual(1);
    expect(await loc.driver.stat(key)).toBeNull();
    expect((await cachedPlacements(s.db, s.redis, blob)).map((p) => p.locationId)).not.toContain(loc.id);
  });
});
