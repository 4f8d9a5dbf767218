// The multi-region topology measured (issue 9): each region its own network namespace with its
// S3 server, API instance and copy worker, 40 ms us-east<->eu-west and 120 ms to ap-south round
// trips at 100 Mbit/s between them (devstack/regions.ts). Prints, per region:
//   - pulls of a replicated image from that region's API (served from its own copy) against the
//     same pulls from a second API in the same region whose storage preference puts the nearest
//     other region first (as when the local copy is missing): latency p50/p99, throughput, and
//     the difference next to what the injected round trips and bandwidth predict;
//   - cross-region bytes per pull, read from meridian_blob_served_bytes_total (goal: 0 for the
//     replicated pull);
//   - push latency (a blob POST + PUT; the database is in us-east, so farther regions pay for it);
//   - replication lag over the WAN, p50/p99 per route: from the placement where a blob was pushed
//     to the verified copy in each other region (PostgreSQL's clock on both ends).
// Needs root (network namespaces).
//
//   npx tsx bench/regions.ts [--pulls 15] [--layers 3] [--layer-kib 1024] [--blobs 15] [--blob-kib 256]
import { randomBytes } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { sql } from 'drizzle-orm';
import { DEFAULT_RTT_MS } from '../devstack/regions.ts';
import { OciClient, pushRandomImage, sha256 } from '../test/support/oci-client.ts';
import { startTopologyFixture, type TopologyFixture } from '../test/support/regions-topology.ts';

const argValue = (name: string): string | undefined => (process.argv.includes(name) ? process.argv[process.argv.indexOf(name) + 1] : undefined);
const PULLS = Number(argValue('--pulls') ?? 15);
const LAYERS = Number(argValue('--layers') ?? 3);
const LAYER_BYTES = Math.round(Number(argValue('--layer-kib') ?? 1024) * 1024);
const BLOBS = Number(argValue('--blobs') ?? 15);
const BLOB_BYTES = Math.round(Number(argValue('--blob-kib') ?? 256) * 1024);
const REGIONS = ['us-east', 'eu-west', 'ap-south'];
const WAN_BITS_PER_SECOND = 100e6;
/** The benchmark's topology id (`npm run start:regions` uses 1, the tests 100–249). */
const TOPOLOGY_ID = 2;
const REMOTE_API_PORT = 5001;

function percentile(values: number[], p: number): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))]!;
}

const ms = (v: number) => `${v.toFixed(0).padStart(5)} ms`;
const rtt = (a: string, b: string) => (a === b ? 0 : (DEFAULT_RTT_MS[`${a}|${b}`] ?? DEFAULT_RTT_MS[`${b}|${a}`] ?? 120));

/** Bytes an API served from locations outside `region`, by /metrics (meridian_blob_served_bytes_total). */
async function bytesFromOutside(apiUrl: string, region: string): Promise<number> {
  const text = await (await fetch(`${apiUrl}/metrics`)).text();
  let n = 0;
  for (const line of text.split('\n')) {
    const m = /^meridian_blob_served_bytes_total\{([^}]*)\} (\S+)$/.exec(line);
    if (!m) continue;
    const locationRegion = /location_region="([^"]*)"/.exec(m[1]!)?.[1];
    if (locationRegion !== region) n += Number(m[2]);
  }
  return n;
}

/** A whole image pull as a client does it: the manifest, then each blob (digests checked). */
async function pullImage(client: OciClient, repo: string, tag: string): Promise<{ ms: number; bytes: number; locations: Set<string> }> {
  const t0 = performance.now();
  const r = await client.fetch(`/v2/${repo}/manifests/${tag}`, { headers: { Accept: 'application/vnd.oci.image.manifest.v1+json' } });
  if (r.status !== 200) throw new Error(`manifest GET: ${r.status} ${await r.text()}`);
  const manifest = (await r.json()) as { config: { digest: string }; layers: { digest: string }[] };
  let bytes = 0;
  const locations = new Set<string>();
  for (const d of [manifest.config.digest, ...manifest.layers.map((l) => l.digest)]) {
    const b = await client.pullBlob(repo, d);
    if (b.status !== 200 || sha256(b.body) !== d) throw new Error(`blob ${d}: ${b.status}`);
    bytes += b.body.length;
    locations.add(b.response.headers.get('x-meridian-location') ?? '?');
  }
  return { ms: performance.now() - t0, bytes, locations };
}

async function waitReplicated(f: TopologyFixture, digests: string[]): Promise<void> {
  const deadline = Date.now() + 300_000;
  for (const d of digests) {
    while ((await f.holders(d)).length < REGIONS.length) {
      if (Date.now() > deadline) throw new Error(`${d} not replicated everywhere after 300 s (held by ${(await f.holders(d)).join(', ')})`);
      await sleep(250);
    }
  }
}

async function main(): Promise<void> {
  if (process.getuid?.() !== 0) throw new Error('bench/regions.ts creates network namespaces: run it as root');
  const started = performance.now();
  const f = await startTopologyFixture({ id: TOPOLOGY_ID, log: (l) => console.log(`topology: ${l}`) });
  try {
    console.log(`topology up in ${((performance.now() - started) / 1000).toFixed(0)} s; RTT us-east<->eu-west ${rtt('us-east', 'eu-west')} ms, to ap-south 120 ms, ${WAN_BITS_PER_SECOND / 1e6} Mbit/s`);

    // ---- push latency and replication lag
    const pushes: Record<string, number[]> = {};
    const pushed: { origin: string; digest: string }[] = [];
    for (const origin of REGIONS) {
      const client = f.client(origin);
      const repo = `${f.user.username}/lag-${origin}`;
      await client.pushBlob(repo, randomBytes(1024)); // warm-up: connections, caches
      pushes[origin] = [];
      for (let i = 0; i < BLOBS; i++) {
        const bytes = randomBytes(BLOB_BYTES);
        const t0 = performance.now();
        const digest = await client.pushBlob(repo, bytes);
        pushes[origin].push(performance.now() - t0);
        pushed.push({ origin, digest });
        // Spaced out, so the lag is the WAN's and not a queue's.
        await sleep(300);
      }
    }
    await waitReplicated(
      f,
      pushed.map((p) => p.digest),
    );
    const lags = new Map<string, number[]>();
    for (const p of pushed) {
      const rows = await f.db.db.execute<{ name: string; at: number }>(sql`
        select l.name, extract(epoch from p.verified_at)::float8 * 1000 as at
        from blob_placements p join blobs b on b.id = p.blob_id join storage_locations l on l.id = p.location_id
        where b.digest = ${p.digest}`);
      const at = new Map(rows.map((r) => [r.name, r.at]));
      for (const target of REGIONS.filter((r) => r !== p.origin)) {
        const key = `${p.origin} -> ${target}`;
        lags.set(key, [...(lags.get(key) ?? []), at.get(target)! - at.get(p.origin)!]);
      }
    }

    // ---- pulls: the region's own copy against the nearest other region's
    const results: string[] = [];
    for (const region of REGIONS) {
      const repo = `${f.user.username}/pull-${region}`;
      // Pushed in another region, so the copy in this one is replication's.
      const origin = region === 'us-east' ? 'eu-west' : 'us-east';
      const image = await pushRandomImage(f.client(origin), repo, 'v1', { layers: LAYERS, layerSize: LAYER_BYTES });
      await waitReplicated(
        f,
        image.blobs.map((b) => sha256(b)),
      );
      const remote = REGIONS.filter((r) => r !== region).sort((a, b) => rtt(region, a) - rtt(region, b))[0]!;
      const preference = [remote, ...REGIONS.filter((r) => r !== remote && r !== region), region];
      const remoteApi = await f.topology.addApi(region, {
        name: `api-${region}-remote-first`,
        port: REMOTE_API_PORT,
        env: { MERIDIAN_STORAGE_PREFERENCE: preference.join(','), MERIDIAN_INSTANCE_NAME: `${region}-remote-first` },
      });
      const local = f.client(region);
      const far = new OciClient({ baseUrl: remoteApi.url, authorization: f.user.authorization });
      for (const c of [local, far]) await pullImage(c, repo, 'v1'); // warm-up
      const before = { local: await bytesFromOutside(local.opts.baseUrl, region), far: await bytesFromOutside(far.opts.baseUrl, region) };
      const times = { local: [] as number[], far: [] as number[] };
      let imageBytes = 0;
      const servedFrom = { local: new Set<string>(), far: new Set<string>() };
      for (let i = 0; i < PULLS; i++) {
        // Alternating, so both see the same machine load.
        for (const [name, c] of [['local', local], ['far', far]] as const) {
          const p = await pullImage(c, repo, 'v1');
          times[name].push(p.ms);
          imageBytes = p.bytes;
          for (const l of p.locations) servedFrom[name].add(l);
        }
      }
      const crossPerPull = {
        local: ((await bytesFromOutside(local.opts.baseUrl, region)) - before.local) / PULLS,
        far: ((await bytesFromOutside(far.opts.baseUrl, region)) - before.far) / PULLS,
      };
      await remoteApi.process.stop();
      const blobs = LAYERS + 1;
      // Each blob GET crosses the WAN once more (request out, first byte back) and its bytes
      // cross at the link's bandwidth.
      const predicted = blobs * rtt(region, remote) + (imageBytes * 8 * 1000) / WAN_BITS_PER_SECOND;
      const p50 = { local: percentile(times.local, 50), far: percentile(times.far, 50) };
      const mbps = (t: number) => ((imageBytes / 1024 / 1024) / (t / 1000)).toFixed(1).padStart(6);
      results.push(
        [
          `${region}: image of ${blobs} blobs, ${(imageBytes / 1024 / 1024).toFixed(2)} MiB, ${PULLS} pulls each`,
          `  own copy (${[...servedFrom.local].join(',')})       p50 ${ms(p50.local)}  p99 ${ms(percentile(times.local, 99))}  ${mbps(p50.local)} MiB/s  cross-region bytes/pull ${crossPerPull.local}`,
          `  from ${remote.padEnd(8)} (${[...servedFrom.far].join(',')}) p50 ${ms(p50.far)}  p99 ${ms(percentile(times.far, 99))}  ${mbps(p50.far)} MiB/s  cross-region bytes/pull ${crossPerPull.far}`,
          `  remote - own: ${ms(p50.far - p50.local)} at p50 (predicted ${ms(predicted)}: ${blobs} x ${rtt(region, remote)} ms RTT + ${(imageBytes / 1024 / 1024).toFixed(2)} MiB at ${WAN_BITS_PER_SECOND / 1e6} Mbit/s); ratio ${(p50.far / p50.local).toFixed(1)}x`,
        ].join('\n'),
      );
    }

    console.log(`\n== pulls of a replicated image: own region's copy vs the nearest other region's`);
    console.log(results.join('\n'));
    console.log(`\n== push latency (${BLOBS} blobs of ${BLOB_BYTES / 1024} KiB, POST + PUT; PostgreSQL is in us-east)`);
    for (const r of REGIONS) console.log(`  ${r.padEnd(9)} p50 ${ms(percentile(pushes[r]!, 50))}  p99 ${ms(percentile(pushes[r]!, 99))}  (RTT to the core ${rtt(r, 'us-east')} ms)`);
    console.log(`\n== replication lag over the WAN (placement where pushed -> verified copy; ${BLOBS} blobs per origin)`);
    for (const [route, v] of lags) {
      const [from, to] = route.split(' -> ') as [string, string];
      console.log(`  ${route.padEnd(22)} p50 ${ms(percentile(v, 50))}  p99 ${ms(percentile(v, 99))}  (RTT ${rtt(from, to)} ms, target to core ${rtt(to, 'us-east')} ms)`);
    }
  } finally {
    await f.close();
  }
}

main().then(
  () => process.exit(0),
  (e: unknown) => {
    console.error(e);
    process.exit(1);
  },
);
