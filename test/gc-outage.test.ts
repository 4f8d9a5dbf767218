// Garbage collection with a region down (issue 8, done-when): the region's deletions run on its
// own task queue and wait for it, retried; the other regions finish theirs meanwhile; once the
// region's S3 server is back its copies go too and the run completes.
import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createUser } from '../auth/accounts.ts';
import type { RunningWorkers } from '../workers/main.ts';
import { gcApi, makeImage, placementsByDigest, pushImage, regionDrivers, storedDigest, waitEverywhere } from './support/gc-helpers.ts';
import { createTestUser, stackControl, stackInfo, startTestApi, startTestWorkers, testDatabase } from './support/harness.ts';
import { OciClient, sha256 } from './support/oci-client.ts';

describe('garbage collection with a region down', () => {
  const database = testDatabase();
  let api: Awaited<ReturnType<typeof startTestApi>>;
  let workers: RunningWorkers;
  const drivers = regionDrivers();
  const root = `root-${randomBytes(3).toString('hex')}`;
  const rootPassword = `pw-${randomBytes(8).toString('hex')}`;
  const down = stackInfo().regions.at(-1)!.name;

  beforeAll(async () => {
    api = await startTestApi({ MERIDIAN_SUPERUSERS: root });
    await api.services.db.transaction((tx) => createUser(tx, { username: root, password: rootPassword }));
    workers = await startTestWorkers({ control: true, mirror: false });
  });
  afterAll(async () => {
    await stackControl.start(`s3-${down}`);
    for (const d of drivers.values()) d.close();
    await workers?.stop();
    await api?.close();
    await database.close();
  });

  it(`deletes ${down}'s copies after it comes back; the other regions finish first`, async () => {
    const user = await createTestUser('gcdown');
    const client = new OciClient({ baseUrl: api.url, authorization: user.authorization });
    const gc = gcApi(api.url, root, rootPassword);
    const gone = makeImage(`${user.username}/app`, 'old');
    const kept = makeImage(`${user.username}/app`, 'new');
    await pushImage(client, gone);
    await pushImage(client, kept);
    const goneDigests = gone.blobs.map(sha256);
    await waitEverywhere(database, [...goneDigests, ...kept.blobs.map(sha256)], drivers.size);
    const keys = new Map(goneDigests.map((d) => [d, [] as { location: string; key: string }[]]));
    for (const d of goneDigests) keys.set(d, await placementsByDigest(database, d));
    expect((await client.fetch(`/v2/${gone.repo}/manifests/${gone.tag}`, { method: 'DELETE' })).status).toBe(202);

    await stackControl.stop(`s3-${down}`);
    try {
      await gc.start({ grace_seconds: 0 });
      const others = [...drivers.keys()].filter((l) => l !== down);
      const waiting = await gc.until(
        `every region but ${down} to finish`,
        (s) => s.progress?.phase === 'sweep' && others.every((l) => s.progress!.reclaimedPerLocation.some((t) => t.location === l && t.blobs === 2)),
      );
      expect(waiting.status).toBe('RUNNING');
      expect(waiting.progress!.pendingLocations).toEqual([down]);
      for (const d of goneDigests) {
        for (const p of keys.get(d)!.filter((x) => x.location !== down)) expect(await storedDigest(drivers.get(p.location)!, p.key)).toBeNull();
      }
      // The run keeps waiting (retrying) while the region is down; pulls already answer 404.
      await new Promise((r) => setTimeout(r, 3000));
      expect((await gc.status()).status).toBe('RUNNING');
      expect((await client.pullBlob(gone.repo, goneDigests[1]!)).status).toBe(404);
    } finally {
      await stackControl.start(`s3-${down}`);
    }

    const done = await gc.until('the run to finish', (s) => s.status !== 'RUNNING', 90_000);
    expect(done.status).toBe('COMPLETED');
    expect(done.progress!.failedLocations).toEqual([]);
    expect(done.progress!.reclaimedPerLocation.find((t) => t.location === down)?.blobs).toBe(2);
    for (const d of goneDigests) {
      const p = keys.get(d)!.find((x) => x.location === down)!;
      expect(await storedDigest(drivers.get(down)!, p.key)).toBeNull();
      expect(await placementsByDigest(database, d)).toEqual([]);
    }
    for (const b of kept.blobs) expect((await client.pullBlob(kept.repo, sha256(b))).body.equals(b)).toBe(true);
  });
});
