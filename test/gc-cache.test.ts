// Garbage collection and the Redis placement cache the pull paths read: a purge invalidates every
// cached answer before it deletes the claimed copies' objects, not after it deleted their rows —
// otherwise a pull in between is redirected to an object that is gone. Set up as after a mark
// whose invalidation was lost (Redis unreachable then): a cached answer still names the copy.
import { MockActivityEnvironment } from '@temporalio/testing';
import { sql } from 'drizzle-orm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createGcActivities } from '../activities/gc.ts';
import { blobByDigest } from '../registry/blobs.ts';
import { cachedPlacements } from '../replication/placements.ts';
import type { RunningWorkers } from '../workers/main.ts';
import { makeImage, pushImage, regionDrivers, waitEverywhere } from './support/gc-helpers.ts';
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

  it('invalidates cached placements before deleting the objects', async () => {
    const user = await createTestUser('gccache');
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

    // Marked for deletion, the cached answer left as it was.
    await database.db.execute(sql`update blob_placements set state = 'deleting' where blob_id = ${blob.id} and location_id = ${loc.id}`);
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
});
