// How a region fault test runs and what it prints: a fault under a steady push/pull load in every
// region (regions-load.ts), the requests that failed during it by region (and outside the faulted
// regions, where the answer must be 0), Meridian recovering on its own, and then nothing lost:
// every acknowledged blob in every region's storage, every acknowledged image pulled back byte for
// byte through every region's API.
import { eq, inArray, sql } from 'drizzle-orm';
import { setTimeout as sleep } from 'node:timers/promises';
import { expect } from 'vitest';
import { blobPlacements, blobs } from '../../db/schema.ts';
import { blobKey } from '../../storage/paths.ts';
import { sha256 } from './oci-client.ts';
import { describeFailures, pullManifest, RegionLoad, type RegionSummary } from './regions-load.ts';
import type { TopologyFixture } from './regions-topology.ts';

export interface FaultRun {
  load: RegionLoad;
  /** Requests started while the fault lasted, by region. */
  during: Record<string, RegionSummary>;
  /** Failed requests during the fault in regions not in `faulted`. */
  failedOutside: number;
  /** Blob bytes each region's API served from another region's location while the load ran. */
  crossRegionBytes: Record<string, number>;
}

export interface FaultOptions {
  /** The regions the fault is in; every other region must see no failed request. */
  faulted: readonly string[];
  /** Supervised processes the fault itself replaces (spec names); every other Meridian process
   * must be the process it was. */
  replaced?: readonly string[];
}

/** Runs `fault` under load in every region and checks what the tests all require; prints what it measured. */
export async function faultUnderLoad(f: TopologyFixture, name: string, opts: FaultOptions, fault: (load: RegionLoad) => Promise<void>): Promise<FaultRun> {
  const regions = [...f.topology.regions.keys()];
  const processes = () => new Map([...f.topology.regions.values()].flatMap((r) => [r.api, r.copyWorker]).concat(f.topology.controlWorker).map((p) => [p.spec.name, p.pid]));
  const before = processes();
  const crossBefore = await crossRegionBytesByRegion(f);
  const load = new RegionLoad(f, `${f.user.username}/${name}`, regions);
  load.start();
  await sleep(3000);
  const from = Date.now();
  try {
    await fault(load);
  } catch (e) {
    await load.stop();
    throw e;
  }
  const to = Date.now();
  // Recovered, with nothing restarted by hand: an image push and a blob pull succeed in every
  // region after the fault.
  const recovered = () => regions.every((r) => ['push manifest', 'pull blob'].every((k) => load.requests.some((q) => q.region === r && q.at > to && q.ok && q.kind === k)));
  await expect.poll(recovered, { timeout: 180_000, interval: 1000 }).toBe(true);
  const recoveredAt = Date.now();
  await load.stop();
  const during = load.summary(from, to);
  const outside = regions.filter((r) => !opts.faulted.includes(r));
  const failedOutside = outside.reduce((n, r) => n + during[r]!.failed, 0);
  const crossAfter = await crossRegionBytesByRegion(f);
  const crossRegionBytes = Object.fromEntries(regions.map((r) => [r, crossAfter[r]! - crossBefore[r]!]));
  const seconds = (ms: number) => `${Math.round(ms / 1000)} s`;
  console.log(
    [
      `[regions] ${name}: requests failed during the fault (${seconds(to - from)}): ${describeFailures(during)}`,
      `[regions] ${name}: failed outside the faulted region${opts.faulted.length === 1 ? '' : 's'} (${opts.faulted.join(', ') || 'none'}): ${outside.length === 0 ? 'no region is outside (shared core)' : `${failedOutside} of ${outside.reduce((n, r) => n + during[r]!.total, 0)} in ${outside.join(', ')}`}`,
      `[regions] ${name}: after the fault, until a push and a pull had succeeded in every region (${seconds(recoveredAt - to)}): ${describeFailures(load.summary(to + 1, recoveredAt))}`,
      `[regions] ${name}: cross-region blob bytes served during the load: ${regions.map((r) => `${crossRegionBytes[r]} in ${r}`).join(', ')}`,
    ].join('\n'),
  );
  // Meridian recovered on its own: every process is the one it was, but those the fault replaced.
  const after = processes();
  for (const [proc, pid] of before) {
    if (opts.replaced?.includes(proc)) expect(after.get(proc), `${proc} replaced`).not.toBe(pid);
    else expect(after.get(proc), `${proc} is the process it was`).toBe(pid);
  }
  expect([...f.topology.regions.values()].every((r) => r.api.running && r.copyWorker.running)).toBe(true);
  await nothingLost(f, name, load);
  return { load, during, failedOutside, crossRegionBytes };
}

/** Every acknowledged blob is in every region's storage; every acknowledged image pulls back,
 * byte for byte, through every region's API. */
export async function nothingLost(f: TopologyFixture, name: string, load: RegionLoad): Promise<void> {
  const regions = [...f.topology.regions.keys()];
  const sizes = new Map(load.pushed.map((p) => [p.digest, p.size]));
  const digests = [...sizes.keys()];
  const started = Date.now();
  await expect
    .poll(
      async () => {
        const [row] = await f.db.db
          .select({ n: sql<number>`count(*)::int` })
          .from(blobPlacements)
          .innerJoin(blobs, eq(blobs.id, blobPlacements.blobId))
          .where(inArray(blobs.digest, digests));
        return row!.n;
      },
      { timeout: 300_000, interval: 2000 },
    )
    .toBe(digests.length * regions.length);
  const replicatedAfter = Date.now() - started;
  // The bytes are there, in every region, under the content address.
  await inParallel(
    digests.flatMap((d) => regions.map((r) => [d, r] as const)),
    16,
    async ([d, r]) => expect((await f.topology.s3(r).stat(blobKey('', d)))?.size, `${d} in ${r}`).toBe(sizes.get(d)),
  );
  // Every image, through every region's API.
  let requests = 0;
  let local = 0;
  await Promise.all(
    regions.map((region) =>
      inParallel(load.images, 4, async (img) => {
        const client = f.client(region);
        const m = await pullManifest(client, load.repo, img.tag);
        expect(m.status, `${img.tag} in ${region}`).toBe(200);
        expect(m.body.equals(img.manifest), `${img.tag} in ${region}: same manifest bytes`).toBe(true);
        requests++;
        for (const b of img.blobs) {
          const pulled = await client.pullBlob(load.repo, b.digest);
          expect(pulled.status, `${b.digest} in ${region}`).toBe(200);
          expect(sha256(pulled.body), `${b.digest} in ${region}`).toBe(b.digest);
          requests++;
          if (pulled.response.headers.get('x-meridian-location') === region) local++;
        }
      }),
    ),
  );
  const blobPulls = load.images.length * 2 * regions.length;
  console.log(
    `[regions] ${name}: nothing lost — all ${digests.length} acknowledged blobs in all ${regions.length} regions' storage ${Math.round(replicatedAfter / 1000)} s after the load stopped; ` +
      `all ${load.images.length} acknowledged images pulled back byte-identical through every region's API (${requests} requests; ${local} of ${blobPulls} blob pulls served by the puller's own region)`,
  );
}

/** Blob bytes each region's API has served from a location in another region (its /metrics). */
export async function crossRegionBytesByRegion(f: TopologyFixture): Promise<Record<string, number>> {
  const out: Record<string, number> = {};
  for (const [region, r] of f.topology.regions) {
    const text = await (await fetch(`${r.apiUrl}/metrics`)).text();
    out[region] = 0;
    for (const line of text.split('\n')) {
      const m = /^meridian_blob_served_bytes_total\{([^}]*)\} (\S+)$/.exec(line);
      if (m && m[1]!.split(',').includes('cross_region="true"')) out[region] += Number(m[2]);
    }
  }
  return out;
}

/** During a restart of a shared service, requests may fail only as "unavailable, retry": a 503,
 * or no answer in time; never a 500 or a 4xx. */
export function onlyRetryableFailures(summary: Record<string, RegionSummary>): void {
  for (const [region, s] of Object.entries(summary)) {
    for (const outcome of Object.keys(s.outcomes)) expect(outcome, `${region}: ${JSON.stringify(s.outcomes)}`).not.toMatch(/\b(500|4\d\d)\b/);
  }
}

async function inParallel<T>(items: readonly T[], limit: number, fn: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(limit, items.length) }, async () => {
      while (next < items.length) await fn(items[next++]!);
    }),
  );
}
