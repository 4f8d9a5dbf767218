// The pull path side by side with the CNCF distribution registry (.tools/bin/registry, pinned in
// scripts/tools.env), both storing in the same Versity S3 server of a throw-away stack, with the
// same images pushed to each. Meridian runs as production does (compiled, `node
// dist/api/main.js --workers N`) and every request carries a bearer token, so it pays for its
// token check and permission lookup; distribution runs without auth and with its in-memory blob
// descriptor cache (its usual production setting).
//
//   npx tsx bench/peer.ts [--seconds 5] [--workers 2] [--concurrency 1,16,64] [--layers 40] [--only manifest-get-tag,blob-head] [--cpu-prof DIR] [--hold]
//
// --cpu-prof writes V8 profiles of the API processes; --hold keeps both registries up for 90 s
// after the push, printing their addresses and the token (to poke at them with curl). The RSS of
// the whole `npm start` system (every process) is bench/stack-rss.ts's.
//
// Load comes from autocannon (the maintained Node HTTP load generator, keep-alive connections,
// HdrHistogram latencies), in this process; both registries face the same generator. Prints per
// row and concurrency: req/s and p50/p99 for each side and the ratio; then the API workers' RSS
// idle and at peak. Short runs on a busy machine are indicative only: compare ratios, not req/s.
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { spawn } from 'node:child_process';
import autocannon from 'autocannon';
import { createUser } from '../auth/accounts.ts';
import { connectDatabase } from '../db/client.ts';
import { entryCommand } from '../devstack/entrypoints.ts';
import { startEphemeralStack } from '../devstack/ephemeral.ts';
import { canConnect, freePort } from '../devstack/ports.ts';
import { ManagedProcess } from '../devstack/process.ts';
import { DEV_BUCKET } from '../devstack/stack.ts';
import { toolPath } from '../devstack/tools.ts';
import { build } from '../scripts/build.ts';
import { OciClient, sha256 } from '../test/support/oci-client.ts';

const argValue = (name: string): string | undefined => (process.argv.includes(name) ? process.argv[process.argv.indexOf(name) + 1] : undefined);
const SECONDS = Number(argValue('--seconds') ?? 5);
const WORKERS = Number(argValue('--workers') ?? 2);
const CONCURRENCY = (argValue('--concurrency') ?? '1,16,64').split(',').map(Number);
const LAYERS = Number(argValue('--layers') ?? 40);
const ONLY = argValue('--only')?.split(',');
/** Writes V8 CPU profiles of the API processes into this directory. */
const CPU_PROF = argValue('--cpu-prof');
const USER = 'bench';
const MANIFEST_ACCEPT = [
  'application/vnd.oci.image.manifest.v1+json',
  'application/vnd.oci.image.index.v1+json',
  'application/vnd.docker.distribution.manifest.v2+json',
  'application/vnd.docker.distribution.manifest.list.v2+json',
].join(', ');
const PASSWORD = 'bench-password-peer';

interface Image {
  repo: string;
  tag: string;
  manifest: Buffer;
  digest: string;
  blobs: Buffer[];
}

/** An image of `layers` random layers (1–64 KiB) and a config; the same bytes go to both registries. */
function makeImage(repo: string, layers: number): Image {
  const layerBlobs = Array.from({ length: layers }, (_, i) => randomBytes(1024 * (1 + ((i * 7) % 64))));
  const config = Buffer.from(JSON.stringify({ architecture: 'amd64', os: 'linux', rootfs: { type: 'layers', diff_ids: [] }, nonce: randomBytes(8).toString('hex') }));
  const manifest = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: 'application/vnd.oci.image.manifest.v1+json',
      config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: sha256(config), size: config.length },
      layers: layerBlobs.map((b) => ({ mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', digest: sha256(b), size: b.length })),
    }),
  );
  return { repo, tag: 'latest', manifest, digest: sha256(manifest), blobs: [config, ...layerBlobs] };
}

async function push(client: OciClient, img: Image): Promise<void> {
  for (const b of img.blobs) await client.pushBlob(img.repo, b);
  const { response } = await client.pushManifest(img.repo, img.tag, JSON.parse(img.manifest.toString()), 'application/vnd.oci.image.manifest.v1+json');
  if (response.status !== 201) throw new Error(`manifest PUT ${img.repo}: ${response.status} ${await response.text()}`);
}

function childPids(pid: number): number[] {
  const out: number[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
      if (Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]) === pid) out.push(Number(entry));
    } catch {
      // exited meanwhile
    }
  }
  return out;
}

/** VmRSS or VmHWM (peak) of a process, in MB. */
function rssMb(pid: number, field: 'VmRSS' | 'VmHWM'): number {
  const m = new RegExp(`${field}:\\s+(\\d+) kB`).exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) / 1024 : 0;
}

async function startDistribution(dir: string, s3: { port: number; accessKeyId: string; secretAccessKey: string }): Promise<{ url: string; process: ManagedProcess }> {
  const port = await freePort();
  writeFileSync(
    path.join(dir, 'config.yml'),
    [
      'version: 0.1',
      'log:',
      '  level: warn',
      '  accesslog:',
      '    disabled: true',
      'storage:',
      '  s3:',
      `    accesskey: ${s3.accessKeyId}`,
      `    secretkey: ${s3.secretAccessKey}`,
      '    region: us-east-1',
      `    regionendpoint: http://127.0.0.1:${s3.port}`,
      '    forcepathstyle: true',
      '    secure: false',
      `    bucket: ${DEV_BUCKET}`,
      '    rootdirectory: /distribution-peer',
      '  cache:',
      '    blobdescriptor: inmemory',
      '  delete:',
      '    enabled: true',
      'http:',
      `  addr: 127.0.0.1:${port}`,
      '',
    ].join('\n'),
  );
  const proc = new ManagedProcess({
    name: 'distribution',
    command: toolPath('registry'),
    args: ['serve', path.join(dir, 'config.yml')],
    logFile: path.join(dir, 'registry.log'),
    ready: async () => (await fetch(`http://127.0.0.1:${port}/v2/`).catch(() => undefined))?.status === 200,
    readyTimeoutMs: 30_000,
  });
  await proc.start();
  return { url: `http://127.0.0.1:${port}`, process: proc };
}

/** autocannon's response parser (http-parser-js) waits for a HEAD response's Content-Length worth
 * of body that never comes, unless its headers callback answers "skip the body" as node's own
 * parser is told for HEAD. autocannon installs that callback after setupClient runs, so wrap it as
 * it is installed. */
function headResponsesHaveNoBody(client: autocannon.Client): void {
  const parser = (client as unknown as { parser: Record<number, unknown> & { constructor: { kOnHeadersComplete: number } } }).parser;
  const key = parser.constructor.kOnHeadersComplete;
  let installed: ((...a: unknown[]) => unknown) | undefined;
  Object.defineProperty(parser, key, {
    configurable: true,
    get: () => (...a: unknown[]) => {
      installed?.(...a);
      return 1;
    },
    set: (fn: (...a: unknown[]) => unknown) => {
      installed = fn;
    },
  });
}

interface Measured {
  rps: number;
  p50: number;
  p99: number;
  bad: number;
  /** Status counts, when some were not the expected ones. */
  codes?: string;
}

async function load(opts: { url: string; connections: number; method?: 'GET' | 'HEAD'; headers?: Record<string, string>; requests?: autocannon.Request[]; expect: number[] }): Promise<Measured> {
  const r = await autocannon({
    url: opts.url,
    connections: opts.connections,
    duration: SECONDS,
    method: opts.method ?? 'GET',
    headers: opts.headers,
    requests: opts.requests,
    setupClient: opts.method === 'HEAD' ? headResponsesHaveNoBody : undefined,
  });
  const codes = r.statusCodeStats as unknown as Record<string, { count: number }>;
  const good = opts.expect.reduce((n, code) => n + (codes[String(code)]?.count ?? 0), 0);
  const bad = r.requests.total - good + r.errors + r.timeouts;
  const seen = Object.entries(codes).map(([code, { count }]) => `${code}×${count}`).join(' ');
  return { rps: r.requests.total / (r.duration || SECONDS), p50: r.latency.p50, p99: r.latency.p99, bad, codes: bad ? `${seen} errors×${r.errors} timeouts×${r.timeouts}` : undefined };
}

interface Row {
  name: string;
  /** Paths and expected status on each side (distribution: undefined = no such operation). */
  meridian: Side & { basic?: boolean };
  distribution?: Side;
}

interface Side {
  path: string;
  method?: 'GET' | 'HEAD';
  /** Statuses that count as answered. */
  expect: number[];
  /** Requests made in turn on each connection instead of `path` (a pull). */
  sequence?: string[];
}

function fmt(m: Measured | undefined): string {
  if (!m) return '           —                ';
  return `${m.rps.toFixed(0).padStart(7)} ${String(m.p50).padStart(5)} ${String(m.p99).padStart(5)}${m.bad ? ` !${m.bad}` : ''}`.padEnd(28);
}

async function main(): Promise<void> {
  console.log(`peer: building dist/ and starting a throw-away stack (${SECONDS} s per measurement)`);
  await build({ ifNeeded: true, log: () => {} });
  const eph = await startEphemeralStack({ name: 'peer' });
  const dir = mkdtempSync(path.join(tmpdir(), 'meridian-peer-'));
  let api: ReturnType<typeof spawn> | undefined;
  let distribution: ManagedProcess | undefined;
  try {
    const region = eph.regions[0]!;
    const db = connectDatabase(eph.databaseUrl, { max: 1 });
    await db.db.transaction((tx) => createUser(tx, { username: USER, password: PASSWORD }));
    await db.close();

    const port = await freePort();
    const { command, args, cwd } = entryCommand('api/main', ['--workers', String(WORKERS)], { compiled: true });
    // Cluster workers inherit the primary's execArgv, so each writes its own profile.
    const profile = CPU_PROF ? ['--cpu-prof', `--cpu-prof-dir=${path.resolve(CPU_PROF)}`] : [];
    api = spawn(command, [...profile, ...args], {
      cwd,
      env: { ...process.env, ...eph.env({ PORT: String(port), MERIDIAN_STORAGE_PREFERENCE: region.name, LOG_LEVEL: 'warn', MERIDIAN_TOKEN_TTL_SECONDS: '86400' }) },
      stdio: ['ignore', 'inherit', 'inherit'],
    });
    while (!(await canConnect(port)) || childPids(api.pid!).length < WORKERS) {
      if (api.exitCode !== null) throw new Error(`the API exited (${api.exitCode})`);
      await new Promise((r) => setTimeout(r, 200));
    }
    const meridian = `http://127.0.0.1:${port}`;
    const dist = await startDistribution(dir, { port: region.port, ...eph.s3Credentials });
    distribution = dist.process;

    const basic = `Basic ${Buffer.from(`${USER}:${PASSWORD}`).toString('base64')}`;
    const small = makeImage(`${USER}/small`, 1);
    const many = makeImage(`${USER}/layers`, LAYERS);
    for (const img of [small, many]) {
      await push(new OciClient({ baseUrl: meridian, authorization: basic }), img);
      await push(new OciClient({ baseUrl: dist.url }), img);
    }
    const scopes = [small, many].map((i) => `scope=repository:${i.repo}:pull`).join('&');
    const tokenRes = await fetch(`${meridian}/v2/auth?${scopes}`, { headers: { authorization: basic } });
    if (tokenRes.status !== 200) throw new Error(`token: ${tokenRes.status}`);
    const bearer = `Bearer ${((await tokenRes.json()) as { token: string }).token}`;
    await new Promise((r) => setTimeout(r, 2000));
    if (process.argv.includes('--hold')) {
      console.log(`holding 90 s: Meridian ${meridian} (${bearer}), distribution ${dist.url}, ${small.repo}, ${many.repo} ${sha256(many.blobs[1]!)}`);
      await new Promise((r) => setTimeout(r, 90_000));
    }
    const workers = childPids(api.pid!);
    const idle = workers.map((p) => rssMb(p, 'VmRSS'));

    const layer = many.blobs[1]!;
    const pullSequence = [`/v2/${many.repo}/manifests/${many.tag}`, ...many.blobs.map((b) => `/v2/${many.repo}/blobs/${sha256(b)}`)];
    const same = (side: Side): Pick<Row, 'meridian' | 'distribution'> => ({ meridian: side, distribution: side });
    const rows: Row[] = [
      { name: 'manifest-get-tag', ...same({ path: `/v2/${small.repo}/manifests/latest`, expect: [200] }) },
      { name: 'manifest-head-tag', ...same({ path: `/v2/${small.repo}/manifests/latest`, method: 'HEAD', expect: [200] }) },
      { name: 'manifest-get-digest', ...same({ path: `/v2/${small.repo}/manifests/${small.digest}`, expect: [200] }) },
      { name: 'manifest-head-digest', ...same({ path: `/v2/${small.repo}/manifests/${small.digest}`, method: 'HEAD', expect: [200] }) },
      // Distribution (S3 driver, redirects on, its default) answers a blob HEAD with a 307 to S3;
      // Meridian answers 200 with the size from its database. Each side's own answer counts.
      {
        name: 'blob-head',
        meridian: { path: `/v2/${many.repo}/blobs/${sha256(layer)}`, method: 'HEAD', expect: [200] },
        distribution: { path: `/v2/${many.repo}/blobs/${sha256(layer)}`, method: 'HEAD', expect: [200, 307] },
      },
      { name: 'tag-list', ...same({ path: `/v2/${many.repo}/tags/list`, expect: [200] }) },
      // Distribution without auth has no token endpoint: Meridian's alone (Basic, Argon2 cached).
      { name: 'token-fetch', meridian: { path: `/v2/auth?scope=repository:${small.repo}:pull`, basic: true, expect: [200] } },
      // A pull of the many-layer image: the manifest, then every blob (both registries answer a
      // blob GET with a 307 to a presigned S3 URL; the bytes come from the same S3 server either
      // way, so the registries' work is what is measured). Rate in requests/s.
      { name: `pull-${LAYERS}-layers`, ...same({ path: '', expect: [200, 307], sequence: pullSequence }) },
    ];

    console.log(`\nMeridian: ${WORKERS} API workers, bearer token on every request; distribution ${readFileSync(`${toolPath('registry')}.pin`, 'utf8').trim().split('\n')[0] ?? ''} without auth.`);
    console.log('req/s, p50 and p99 in ms; !n = requests with another status than expected, errors or timeouts\n');
    console.log(`${'row'.padEnd(22)} ${'c'.padStart(3)}  ${'Meridian req/s  p50   p99'.padEnd(28)} ${'distribution req/s p50 p99'.padEnd(28)} ratio`);
    const failures: string[] = [];
    for (const row of rows) {
      if (ONLY && !ONLY.includes(row.name)) continue;
      for (const c of [0, ...CONCURRENCY]) {
        const run = async (base: string, side: Side, auth?: string) => {
          // As docker and containerd do: say which manifest formats are accepted (distribution
          // refuses to serve an OCI manifest to a client that does not).
          const headers = { accept: MANIFEST_ACCEPT, ...(auth ? { authorization: auth } : {}) };
          const connections = c || 16;
          if (side.sequence) {
            const requests = side.sequence.map((p) => ({ method: 'GET' as const, path: p }));
            return load({ url: base, connections, headers, requests, expect: side.expect });
          }
          return load({ url: `${base}${side.path}`, connections, method: side.method, headers, expect: side.expect });
        };
        const mer = await run(meridian, row.meridian, row.meridian.basic ? basic : bearer);
        const dis = row.distribution ? await run(dist.url, row.distribution) : undefined;
        // c = 0: a warm-up round at concurrency 16 (JIT, pools, caches on both sides), not shown.
        if (c === 0) continue;
        const ratio = dis ? mer.rps / dis.rps : undefined;
        console.log(`${row.name.padEnd(22)} ${String(c).padStart(3)}  ${fmt(mer)} ${fmt(dis)} ${ratio === undefined ? '' : `${ratio.toFixed(2)}x`}`);
        for (const [who, m] of [['Meridian', mer], ['distribution', dis]] as const) if (m?.codes) console.log(`${''.padEnd(28)}${who}: ${m.codes}`);
        if (ratio !== undefined && (row.name === 'manifest-get-tag' || row.name === 'blob-head') && c >= 16 && ratio < 1.2) failures.push(`${row.name} c${c} ${ratio.toFixed(2)}x`);
      }
    }
    const hwm = workers.map((p) => rssMb(p, 'VmHWM'));
    console.log(`\nAPI worker RSS idle: ${idle.map((m) => m.toFixed(0)).join(', ')} MB (goal < 150)`);
    console.log(`API worker RSS peak: ${hwm.map((m) => m.toFixed(0)).join(', ')} MB (goal < 300); primary ${rssMb(api.pid!, 'VmRSS').toFixed(0)} MB`);
    console.log(failures.length ? `\nbelow 1.2x distribution: ${failures.join('; ')}` : '\nmanifest GET by tag and blob HEAD at c>=16: >= 1.2x distribution');
  } finally {
    if (api && api.exitCode === null) {
      const exited = new Promise((r) => api!.once('exit', r));
      api.kill('SIGTERM');
      await exited;
    }
    await distribution?.stop();
    await eph.destroy();
    rmSync(dir, { recursive: true, force: true });
  }
}

await main();
