// Garbage collection racing pushes (issue 8, done-when): 50 images are untagged and collected
// with no grace period while the same 50 images are pushed again, byte for byte. The run is
// held at its sweep (the copy workers, whose queues the per-location deletions run on, are
// stopped) so that every blob is marked first; then half the images are pushed while their
// copies are marked (they must be revived), and the other half at the same moment as the copy
// workers come back and the purges run (a push meets a copy being deleted, or a deleted one).
// Afterwards nothing pushed may be lost: every image pulls back byte-identical, and every copy
// the database records in any region holds exactly the blob's bytes.
import { randomBytes } from 'node:crypto';
import { sql } from 'drizzle-orm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createUser } from '../auth/accounts.ts';
import type { RunningWorkers } from '../workers/main.ts';
import {
  gcApi,
  inParallel,
  makeImage,
  placementsByDigest,
  pushImage,
  regionDrivers,
  storedDigest,
  waitEverywhere,
} from './support/gc-helpers.ts';
import { createTestUser, startTestApi, startTestWorkers, testDatabase } from './support/harness.ts';
import { OciClient, sha256 } from './support/oci-client.ts';

describe('garbage collection racing pushes', () => {
  const database = testDatabase();
  let api: Awaited<ReturnType<typeof startTestApi>>;
  let control: RunningWorkers | undefined;
  let copies: RunningWorkers | undefined;
  const drivers = regionDrivers();
  const root = `root-${randomBytes(3).toString('hex')}`;
  const rootPassword = `pw-${randomBytes(8).toString('hex')}`;

  beforeAll(async () => {
    api = await startTestApi({ MERIDIAN_SUPERUSERS: root });
    await api.services.db.transaction((tx) => createUser(tx, { username: root, password: rootPassword }));
    control = await startTestWorkers({ control: true, mirror: false, copyLocations: [] });
    copies = await startTestWorkers({ control: false, mirror: false });
  });
  afterAll(async () => {
    for (const d of drivers.values()) d.close();
    await copies?.stop();
    await control?.stop();
    await api?.close();
    await database.close();
  });

  it('loses none of 50 images pushed again while a run deletes their blobs', async () => {
    const user = await createTestUser('gcrace');
    const client = new OciClient({ baseUrl: api.url, authorization: user.authorization });
    const gc = gcApi(api.url, root, rootPassword);
    // One blob each (a config; no layers), so that replicating them to three regions, twice,
    // stays cheap: what is raced is the 50 pushes against the sweep.
    const images = Array.from({ length: 50 }, (_, i) => makeImage(`${user.username}/race${i % 5}`, `t${i}`, 0, 0));
    const digests = images.flatMap((img) => img.blobs.map(sha256));
    const t0 = Date.now();
    const step = (what: string) => console.log(`race: ${((Date.now() - t0) / 1000).toFixed(1)} s ${what}`);
    await inParallel(images, 10, (img) => pushImage(client, img));
    step('pushed');
    await waitEverywhere(database, digests, drivers.size);
    step('replicated');
    for (const img of images) expect((await client.fetch(`/v2/${img.repo}/manifests/${img.tag}`, { method: 'DELETE' })).status).toBe(202);

    // Without copy workers the run marks everything, then waits for its per-location purges.
    await copies!.stop();
    copies = undefined;
    await gc.start({ grace_seconds: 0 });
    const marked = await gc.until('the run to reach its sweep', (s) => s.progress?.phase === 'sweep');
    step('marked');
    expect(marked.progress!.blobsMarked).toBe(digests.length);
    // Marked blobs are unknown to pulls (HEAD included) until pushed again.
    const probe = images[0]!;
    expect((await client.fetch(`/v2/${probe.repo}/blobs/${sha256(probe.blobs[0]!)}`, { method: 'HEAD' })).status).toBe(404);
    expect((await client.pullBlob(probe.repo, sha256(probe.blobs[0]!))).status).toBe(404);

    const counter = { retries: 0 };
    const [early, late] = [images.slice(0, 25), images.slice(25)];
    // While marked: each push revives the copies.
    await inParallel(early, 25, (img) => pushImage(client, img, counter));
    step('early pushes done');
    for (const d of early.flatMap((img) => img.blobs.map(sha256))) {
      expect((await placementsByDigest(database, d)).some((p) => p.state === 'available')).toBe(true);
    }
    // Against the purges: the copy workers come back while 25 pushes run.
    const back = startTestWorkers({ control: false, mirror: false }).then((w) => (copies = w));
    await inParallel(late, 25, async (img, i) => {
      await new Promise((r) => setTimeout(r, i * 40));
      await pushImage(client, img, counter);
    });
    await back;
    step('late pushes done');
    const done = await gc.until('the run to finish', (s) => s.status !== 'RUNNING', 90_000);
    step('run finished');
    expect(done.status).toBe('COMPLETED');
    expect(done.progress!.failedLocations).toEqual([]);

    // Nothing lost: every blob has a copy, every copy the database records (in any region, while
    // replication puts back what the run deleted) holds the blob's bytes, and every image pulls
    // back byte-identical.
    for (const d of digests) {
      const placed = await placementsByDigest(database, d);
      expect(placed.length, d).toBeGreaterThan(0);
      for (const p of placed) {
        expect(p.state).toBe('available');
        expect(await storedDigest(drivers.get(p.location)!, p.key), `${d} in ${p.location}`).toBe(d);
      }
    }
    for (const img of images) {
      const m = await client.fetch(`/v2/${img.repo}/manifests/${img.tag}`, { headers: { Accept: img.mediaType } });
      expect(m.status).toBe(200);
      expect(Buffer.from(await m.arrayBuffer()).equals(img.manifest)).toBe(true);
      for (const b of img.blobs) {
        const pulled = await client.pullBlob(img.repo, sha256(b));
        expect(pulled.status).toBe(200);
        expect(pulled.body.equals(b)).toBe(true);
      }
    }
    const reclaimed = done.progress!.reclaimedPerLocation.reduce((n, t) => n + t.blobs, 0);
    const [rows] = await database.db.execute<{ n: number }>(sql`select count(*)::int as n from blob_placements where state <> 'available'`);
    expect(rows?.n).toBe(0);
    step('checked');
    console.log(`race: ${digests.length} blobs marked; ${reclaimed} copies deleted by the run; ${counter.retries} pushes retried after 503`);
  }, 420_000);
});
