// The Redis placement cache across a Redis outage. Which locations hold a blob is cached in Redis
// (replication/placements.ts) and invalidated there only; a copy recorded while Redis is down
// cannot invalidate the entry, which Redis keeps across its restart (append-only file). Before
// the fix, pulls after Redis returned were served from the origin region until the entry expired
// (300 s; 146 of 150 pulls local in one region-topology run). This file runs a Redis server of its
// own so that it can stop it (the shared one serves every other test file), and a relay to it
// for the copy worker alone, so that the worker can lose Redis while the API keeps it.
import { mkdtempSync, rmSync } from 'node:fs';
import { connect, createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { sql } from 'drizzle-orm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { freePort } from '../devstack/ports.ts';
import type { ManagedProcess } from '../devstack/process.ts';
import { redisServer } from '../devstack/regions-core.ts';
import type { RunningWorkers } from '../workers/main.ts';
import { makeImage, pushImage } from './support/gc-helpers.ts';
import { createTestUser, stackInfo, startTestApi, startTestWorkers, testDatabase } from './support/harness.ts';
import { waitFor } from './support/mirror-helpers.ts';
import { OciClient, sha256 } from './support/oci-client.ts';

/** A TCP relay to `targetPort` that can be cut (listener closed, connections dropped) and
 * restored on the same port: one process's link to Redis failing while the others' stays. */
async function tcpRelay(targetPort: number): Promise<{ port: number; cut(): void; restore(): Promise<void>; close(): void }> {
  const port = await freePort();
  const sockets = new Set<Socket>();
  let server: Server | undefined;
  const restore = () =>
    new Promise<void>((resolve, reject) => {
      server = createServer((client) => {
        const upstream = connect(targetPort, '127.0.0.1');
        const end = () => {
          for (const s of [client, upstream]) {
            s.destroy();
            sockets.delete(s);
          }
        };
        for (const s of [client, upstream]) {
          sockets.add(s);
          s.on('close', end).on('error', end);
        }
        client.pipe(upstream).pipe(client);
      });
      server.once('error', reject).listen(port, '127.0.0.1', () => resolve());
    });
  const cut = () => {
    server?.close();
    for (const s of sockets) s.destroy();
    sockets.clear();
  };
  await restore();
  return { port, cut, restore, close: cut };
}

describe('placement cache across a Redis outage', () => {
  const database = testDatabase();
  const dataDir = mkdtempSync(path.join(tmpdir(), 'meridian-redis-'));
  let redis: ManagedProcess;
  let redisEnv: Record<string, string>;
  let relay: Awaited<ReturnType<typeof tcpRelay>>;
  const [origin, local] = stackInfo().regions;
  let pusher: Awaited<ReturnType<typeof startTestApi>>;
  let puller: Awaited<ReturnType<typeof startTestApi>>;
  const workers: RunningWorkers[] = [];

  beforeAll(async () => {
    const port = await freePort();
    redis = redisServer({ dataDir, port, logFile: path.join(dataDir, 'redis.log') });
    await redis.start();
    redisEnv = { REDIS_URL: `redis://127.0.0.1:${port}/0` };
    relay = await tcpRelay(port);
    // Pushes land in `origin`; the puller's nearest location is `local`.
    pusher = await startTestApi({ ...redisEnv, MERIDIAN_STORAGE_PREFERENCE: origin!.name });
    puller = await startTestApi({ ...redisEnv, MERIDIAN_STORAGE_PREFERENCE: `${local!.name},${origin!.name}` });
    // No copy worker yet: replication to `local` waits until the outage.
    workers.push(await startTestWorkers({ control: true, mirror: false, copyLocations: [] }, redisEnv));
  });
  afterAll(async () => {
    for (const w of workers) await w.stop();
    await puller?.close();
    await pusher?.close();
    relay?.close();
    await redis?.stop();
    await database.close();
    rmSync(dataDir, { recursive: true, force: true });
  });

  /** The region whose S3 server a blob GET redirects to. */
  async function servedFrom(client: OciClient, repo: string, digest: string): Promise<string> {
    const r = await client.fetch(`/v2/${repo}/blobs/${digest}`);
    expect(r.status).toBe(307);
    const port = Number(new URL(r.headers.get('location')!).port);
    return stackInfo().regions.find((x) => x.port === port)?.name ?? `port ${port}`;
  }

  /** Waits until `local` has an available copy of `digest`. */
  async function copiedLocally(digest: string): Promise<void> {
    await waitFor(
      `the copy in ${local!.name}`,
      async () => {
        const [r] = await database.db.execute<{ n: number }>(sql`
          select count(*)::int as n from blob_placements p join blobs b on b.id = p.blob_id join storage_locations l on l.id = p.location_id
          where b.digest = ${digest} and l.name = ${local!.name} and p.state = 'available'`);
        return r?.n === 1;
      },
      120_000,
      250,
    );
  }

  /** Pushes a fresh image to `origin` and pulls its layer through the puller once (from `origin`,
   * the only holder: that answer is now cached in Redis). */
  async function pushedAndCached(): Promise<{ client: OciClient; repo: string; digest: string; bytes: Buffer }> {
    const user = await createTestUser('cacheout');
    const image = makeImage(`${user.username}/app`, 'v1', 10_000, 1);
    await pushImage(new OciClient({ baseUrl: pusher.url, authorization: user.authorization }), image);
    const client = new OciClient({ baseUrl: puller.url, authorization: user.authorization });
    const digest = sha256(image.blobs[1]!);
    expect(await servedFrom(client, image.repo, digest)).toBe(origin!.name);
    return { client, repo: image.repo, digest, bytes: image.blobs[1]! };
  }

  it('the first pull after Redis returns is served from the copy recorded while it was down', async () => {
    const { client, repo, digest, bytes } = await pushedAndCached();

    await redis.stop();
    await waitFor('the puller to notice Redis is gone', async () => puller.services.redis.status !== 'ready');
    // The copy to `local` is made and recorded meanwhile; its invalidation of the cache fails.
    const copier = await startTestWorkers({ control: false, mirror: false, copyLocations: [local!.name] }, redisEnv);
    workers.push(copier);
    await copiedLocally(digest);
    // The worker that recorded it is gone before Redis returns: nothing of its own can replay it.
    await copier.stop();
    workers.pop();

    await redis.start();
    await waitFor('the puller to reconnect to Redis', async () => puller.services.redis.status === 'ready', 30_000, 50);
    // Old code: served from the origin (the entry cached before the outage), for up to 300 s.
    expect(await servedFrom(client, repo, digest)).toBe(local!.name);
    const pulled = await client.pullBlob(repo, digest);
    expect(pulled.status).toBe(200);
    expect(pulled.body.equals(bytes)).toBe(true);
  }, 240_000);

  it('a copy worker cut off from Redis makes its lost invalidation good when it reconnects, while the API never lost Redis', async () => {
    const { client, repo, digest, bytes } = await pushedAndCached();
    // This copy worker reaches Redis through the relay only, and the relay is down.
    relay.cut();
    const copier = await startTestWorkers({ control: false, mirror: false, copyLocations: [local!.name] }, { REDIS_URL: `redis://127.0.0.1:${relay.port}/0` });
    workers.push(copier);
    await copiedLocally(digest);
    // The API kept Redis throughout: the entry cached before still names the origin only.
    expect(puller.services.redis.status).toBe('ready');
    expect(await servedFrom(client, repo, digest)).toBe(origin!.name);

    await relay.restore();
    await waitFor('the copy worker to reconnect to Redis', async () => copier.services.redis.status === 'ready', 30_000, 50);
    // Its commands are answered in order: once this one is, what it sent on reconnecting was done.
    await copier.services.redis.ping();
    // Old code: still the origin, until the entry expires (300 s).
    expect(await servedFrom(client, repo, digest)).toBe(local!.name);
    expect((await client.pullBlob(repo, digest)).body.equals(bytes)).toBe(true);
  }, 240_000);
});
