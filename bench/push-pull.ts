// Push and pull one large blob (5 GiB by default) through Meridian and, in the same run, PUT and
// GET the same bytes straight to the same S3 server with the AWS SDK (the baseline). Prints
// throughput, the ratios, the API process's peak RSS, and the CPU seconds each side spent (the
// API process and the S3 server: on a shared machine CPU per GiB is steadier than wall time).
//
//   npx tsx bench/push-pull.ts [--gib 5] [--push-only] [--chunk-mib N] [--cpu-prof DIR]
//
// --chunk-mib pushes in PATCHes of N MiB (as chunking clients do) instead of one streamed PATCH,
// and prints the time per chunk; --cpu-prof writes a V8 profile of the pushing API process.
import { spawn, type ChildProcess } from 'node:child_process';
import { createCipheriv, createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import http from 'node:http';
import { Readable } from 'node:stream';
import { GetObjectCommand } from '@aws-sdk/client-s3';
import { Upload } from '@aws-sdk/lib-storage';
import { createUser } from '../auth/accounts.ts';
import { connectDatabase } from '../db/client.ts';
import { startEphemeralStack } from '../devstack/ephemeral.ts';
import { canConnect, freePort } from '../devstack/ports.ts';
import { DEV_BUCKET } from '../devstack/stack.ts';
import { PROJECT_ROOT } from '../devstack/tools.ts';
import { S3Driver } from '../storage/s3.ts';

const GiB = 1024 ** 3;
const CHUNK = 1024 * 1024;
const argValue = (name: string): string | undefined => (process.argv.includes(name) ? process.argv[process.argv.indexOf(name) + 1] : undefined);
const size = Math.round(Number(argValue('--gib') ?? 5) * GiB);
const PUSH_ONLY = process.argv.includes('--push-only');
const CHUNK_BYTES = argValue('--chunk-mib') ? Math.round(Number(argValue('--chunk-mib')) * 1024 * 1024) : undefined;
const CPU_PROF = argValue('--cpu-prof');
const KEY = Buffer.alloc(16, 7);
const IV = Buffer.alloc(16, 9);

/** The same pseudo-random bytes every time (AES-CTR keystream), produced on the fly. */
function* bytes(from = 0, to = size): Generator<Buffer> {
  const cipher = createCipheriv('aes-128-ctr', KEY, IV);
  const zeros = Buffer.alloc(CHUNK);
  for (let sent = 0; sent < to; sent += CHUNK) {
    const block = cipher.update(zeros.subarray(0, Math.min(CHUNK, to - sent)));
    // AES-CTR from the start, so a range is the same bytes as in the whole stream.
    if (sent + block.length > from) yield sent >= from ? block : block.subarray(from - sent);
  }
}

/** CPU seconds (user + system) a process has used so far. */
function cpuSeconds(pid: number): number {
  const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').replace(/^.*\) /, '').split(' ');
  return (Number(fields[11]) + Number(fields[12])) / 100;
}

/** CPU seconds `pids` spend while `fn` runs. */
async function cpuDuring<T>(pids: number[], fn: () => Promise<T>): Promise<[T, number[]]> {
  const before = pids.map(cpuSeconds);
  const r = await fn();
  return [r, pids.map((p, i) => cpuSeconds(p) - before[i]!)];
}

function mbps(n: number, ms: number): string {
  return ((n / 1024 / 1024) / (ms / 1000)).toFixed(0).padStart(6);
}

async function timed<T>(fn: () => Promise<T>): Promise<[T, number]> {
  const t = performance.now();
  const r = await fn();
  return [r, performance.now() - t];
}

function request(url: string, opts: http.RequestOptions, body?: Readable): Promise<http.IncomingMessage> {
  return new Promise((resolve, reject) => {
    const req = http.request(url, opts, resolve);
    req.on('error', reject);
    if (body) body.pipe(req);
    else req.end();
  });
}

async function drain(res: Readable, hash?: ReturnType<typeof createHash>): Promise<number> {
  let n = 0;
  for await (const c of res) {
    n += (c as Buffer).length;
    hash?.update(c as Buffer);
  }
  return n;
}

function peakRssMb(pid: number): number {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  return Number(/VmHWM:\s+(\d+) kB/.exec(status)![1]) / 1024;
}

async function main(): Promise<void> {
  console.log(`bench: ${(size / GiB).toFixed(1)} GiB blob; starting a throw-away stack`);
  const eph = await startEphemeralStack({ name: 'bench' });
  let api: ChildProcess | undefined;
  let redirectApi: ChildProcess | undefined;
  try {
    const region = eph.regions[0]!;
    const s3 = new S3Driver({ name: region.name, endpoint: `http://127.0.0.1:${region.port}`, region: 'us-east-1', bucket: DEV_BUCKET, ...eph.s3Credentials });
    const db = connectDatabase(eph.databaseUrl, { max: 1 });
    await db.db.transaction((tx) => createUser(tx, { username: 'bench', password: 'bench-password' }));
    await db.close();
    const auth = `Basic ${Buffer.from('bench:bench-password').toString('base64')}`;

    const port = await freePort();
    const profileArgs = CPU_PROF ? ['--cpu-prof', `--cpu-prof-dir=${CPU_PROF}`] : [];
    api = spawn(process.execPath, [...profileArgs, '--import', 'tsx', 'api/main.ts', '--workers', '1'], {
      cwd: PROJECT_ROOT,
      env: { ...process.env, ...eph.env({ PORT: String(port), MERIDIAN_BLOB_SERVE_MODE: 'proxy', MERIDIAN_STORAGE_PREFERENCE: region.name, LOG_LEVEL: 'warn' }) },
      stdio: ['ignore', 'inherit', 'inherit'],
    });
    const redirectPort = await freePort();
    redirectApi = spawn(process.execPath, ['--import', 'tsx', 'api/main.ts', '--workers', '1'], {
      cwd: PROJECT_ROOT,
      env: { ...process.env, ...eph.env({ PORT: String(redirectPort), MERIDIAN_STORAGE_PREFERENCE: region.name, LOG_LEVEL: 'warn' }) },
      stdio: ['ignore', 'inherit', 'inherit'],
    });
    const apiExited = new Promise<never>((_, reject) => api!.once('exit', (code) => reject(new Error(`the API process exited (${code}) before it listened`))));
    while (!(await canConnect(port)) || !(await canConnect(redirectPort))) await Promise.race([new Promise((r) => setTimeout(r, 200)), apiExited]);
    const base = `http://127.0.0.1:${port}`;
    const redirectBase = `http://127.0.0.1:${redirectPort}`;
    const s3Pid = eph.stack.s3.get(region.name)!.pid!;

    process.stdout.write('bench: computing the digest of the test bytes… ');
    const h = createHash('sha256');
    for (const c of bytes()) h.update(c);
    const digest = `sha256:${h.digest('hex')}`;
    console.log(digest.slice(0, 19));

    // Baseline: the AWS SDK's managed multipart upload and a plain GetObject, same server.
    const [[, rawPutMs], [rawPutS3Cpu]] = await cpuDuring([s3Pid], () =>
      timed(() =>
        new Upload({ client: s3.client, params: { Bucket: DEV_BUCKET, Key: 'bench/raw', Body: Readable.from(bytes()) }, partSize: 16 * 1024 * 1024, queueSize: 4 }).done(),
      ),
    );
    let rawGetMs = 0;
    if (!PUSH_ONLY) {
      // Both GETs hash what they receive, so the comparison carries the same client work.
      const rawHash = createHash('sha256');
      let rawGot;
      [rawGot, rawGetMs] = await timed(async () => drain((await s3.client.send(new GetObjectCommand({ Bucket: DEV_BUCKET, Key: 'bench/raw' }))).Body as Readable, rawHash));
      if (rawGot !== size || `sha256:${rawHash.digest('hex')}` !== digest) throw new Error('raw GET returned other bytes');
    }
    await s3.delete('bench/raw');

    // Meridian: a docker-style push (POST, one streamed PATCH, PUT with the digest), or PATCHes
    // of --chunk-mib each.
    const chunkMs: number[] = [];
    const [[, pushMs], [pushApiCpu, pushS3Cpu]] = await cpuDuring([api.pid!, s3Pid], () =>
      timed(async () => {
        const post = await request(`${base}/v2/bench/big/blobs/uploads/`, { method: 'POST', headers: { Authorization: auth } });
        await drain(post);
        let loc = post.headers.location!;
        const step = CHUNK_BYTES ?? size;
        for (let from = 0; from < size; from += step) {
          const to = Math.min(from + step, size);
          const t = performance.now();
          const headers = CHUNK_BYTES
            ? { 'Content-Length': String(to - from), 'Content-Range': `${from}-${to - 1}` }
            : { 'Transfer-Encoding': 'chunked' };
          const patch = await request(`${base}${loc}`, { method: 'PATCH', headers: { Authorization: auth, 'Content-Type': 'application/octet-stream', ...headers } }, Readable.from(bytes(from, to)));
          await drain(patch);
          if (patch.statusCode !== 202) throw new Error(`PATCH ${patch.statusCode}`);
          chunkMs.push(performance.now() - t);
          loc = patch.headers.location!;
        }
        const put = await request(`${base}${loc}?digest=${digest}`, { method: 'PUT', headers: { Authorization: auth, 'Content-Length': '0' } });
        await drain(put);
        if (put.statusCode !== 201) throw new Error(`PUT ${put.statusCode}`);
      }),
    );
    const perGiB = (cpu: number) => `${(cpu / (size / GiB)).toFixed(1).padStart(5)} s/GiB`;
    const lines = [
      `                        MiB/s   vs raw S3   CPU: API         S3 server`,
      `  raw S3 PUT (SDK)     ${mbps(size, rawPutMs)}                            ${perGiB(rawPutS3Cpu!)}`,
      `  Meridian push        ${mbps(size, pushMs)}   ${(rawPutMs / pushMs).toFixed(2)}x       ${perGiB(pushApiCpu!)}   ${perGiB(pushS3Cpu!)}`,
    ];
    if (CHUNK_BYTES) {
      const sorted = [...chunkMs].sort((a, b) => a - b);
      const p50 = sorted[Math.floor(sorted.length / 2)]!;
      lines.push(`  PATCH of ${(CHUNK_BYTES / 1024 / 1024).toFixed(1)} MiB     ${chunkMs.length} chunks, p50 ${p50.toFixed(1)} ms, max ${sorted.at(-1)!.toFixed(1)} ms`);
    }

    if (!PUSH_ONLY) {
      // Pull through the registry (proxy mode) and verify the digest.
      const check = createHash('sha256');
      const [pulled, pullMs] = await timed(async () => drain(await request(`${base}/v2/bench/big/blobs/${digest}`, { headers: { Authorization: auth } }), check));
      if (pulled !== size || `sha256:${check.digest('hex')}` !== digest) throw new Error('pulled bytes differ');
      // The default mode: the registry answers 307 to a presigned URL of the nearest copy.
      const redirectHash = createHash('sha256');
      const [, redirectMs] = await timed(async () => {
        const res = await request(`${redirectBase}/v2/bench/big/blobs/${digest}`, { headers: { Authorization: auth } });
        await drain(res);
        if (res.statusCode !== 307) throw new Error(`expected a redirect, got ${res.statusCode}`);
        return drain(await request(res.headers.location!, {}), redirectHash);
      });
      if (`sha256:${redirectHash.digest('hex')}` !== digest) throw new Error('redirected pull returned other bytes');
      lines.push(
        `  raw S3 GET           ${mbps(size, rawGetMs)}`,
        `  Meridian pull proxy  ${mbps(size, pullMs)}   ${(rawGetMs / pullMs).toFixed(2)}x`,
        `  Meridian pull (307)  ${mbps(size, redirectMs)}   ${(rawGetMs / redirectMs).toFixed(2)}x   (default: redirect to the nearest copy)`,
      );
    }
    const rss = peakRssMb(api.pid!);
    lines.push(`  API peak RSS         ${rss.toFixed(0)} MB (limit 300 MB) ${rss < 300 ? 'OK' : 'OVER'}   (the instance that took the push${PUSH_ONLY ? '' : ' and proxied the pull'})`);
    console.log(`\n${lines.join('\n')}\n`);
    s3.close();
    if (rss >= 300) process.exitCode = 1;
  } finally {
    // Waited for: a profiled process writes its profile as it exits.
    const exited = [api, redirectApi].map((c) => (c && c.exitCode === null ? new Promise((r) => c.once('exit', r)) : undefined));
    api?.kill('SIGTERM');
    redirectApi?.kill('SIGTERM');
    await Promise.all(exited);
    await eph.destroy();
  }
}

await main();
