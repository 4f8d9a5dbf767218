// Push and pull one large blob (5 GiB by default) through Meridian and, in the same run, PUT and
// GET the same bytes straight to the same S3 server with the AWS SDK (the baseline). Prints
// throughput, the ratios, and the API process's peak RSS.
//
//   npx tsx bench/push-pull.ts [--gib 5]
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
const size = Math.round(Number(process.argv[process.argv.indexOf('--gib') + 1] || 5) * GiB);
const KEY = Buffer.alloc(16, 7);
const IV = Buffer.alloc(16, 9);

/** The same pseudo-random bytes every time (AES-CTR keystream), produced on the fly. */
function* bytes(): Generator<Buffer> {
  const cipher = createCipheriv('aes-128-ctr', KEY, IV);
  const zeros = Buffer.alloc(CHUNK);
  for (let sent = 0; sent < size; sent += CHUNK) yield cipher.update(zeros.subarray(0, Math.min(CHUNK, size - sent)));
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
    api = spawn(process.execPath, ['--import', 'tsx', 'api/server.ts'], {
      cwd: PROJECT_ROOT,
      env: { ...process.env, ...eph.env({ PORT: String(port), MERIDIAN_BLOB_SERVE_MODE: 'proxy', MERIDIAN_STORAGE_PREFERENCE: region.name, LOG_LEVEL: 'warn' }) },
      stdio: ['ignore', 'inherit', 'inherit'],
    });
    const redirectPort = await freePort();
    redirectApi = spawn(process.execPath, ['--import', 'tsx', 'api/server.ts'], {
      cwd: PROJECT_ROOT,
      env: { ...process.env, ...eph.env({ PORT: String(redirectPort), MERIDIAN_STORAGE_PREFERENCE: region.name, LOG_LEVEL: 'warn' }) },
      stdio: ['ignore', 'inherit', 'inherit'],
    });
    while (!(await canConnect(port)) || !(await canConnect(redirectPort))) await new Promise((r) => setTimeout(r, 200));
    const base = `http://127.0.0.1:${port}`;
    const redirectBase = `http://127.0.0.1:${redirectPort}`;

    process.stdout.write('bench: computing the digest of the test bytes… ');
    const h = createHash('sha256');
    for (const c of bytes()) h.update(c);
    const digest = `sha256:${h.digest('hex')}`;
    console.log(digest.slice(0, 19));

    // Baseline: the AWS SDK's managed multipart upload and a plain GetObject, same server.
    const [, rawPutMs] = await timed(() =>
      new Upload({ client: s3.client, params: { Bucket: DEV_BUCKET, Key: 'bench/raw', Body: Readable.from(bytes()) }, partSize: 16 * 1024 * 1024, queueSize: 4 }).done(),
    );
    // Both GETs hash what they receive, so the comparison carries the same client work.
    const rawHash = createHash('sha256');
    const [rawGot, rawGetMs] = await timed(async () => drain((await s3.client.send(new GetObjectCommand({ Bucket: DEV_BUCKET, Key: 'bench/raw' }))).Body as Readable, rawHash));
    if (rawGot !== size || `sha256:${rawHash.digest('hex')}` !== digest) throw new Error('raw GET returned other bytes');
    await s3.delete('bench/raw');

    // Meridian: a docker-style push (POST, one streamed PATCH, PUT with the digest).
    const [, pushMs] = await timed(async () => {
      const post = await request(`${base}/v2/bench/big/blobs/uploads/`, { method: 'POST', headers: { Authorization: auth } });
      await drain(post);
      const loc = post.headers.location!;
      const patch = await request(`${base}${loc}`, { method: 'PATCH', headers: { Authorization: auth, 'Content-Type': 'application/octet-stream', 'Transfer-Encoding': 'chunked' } }, Readable.from(bytes()));
      await drain(patch);
      if (patch.statusCode !== 202) throw new Error(`PATCH ${patch.statusCode}`);
      const put = await request(`${base}${patch.headers.location}?digest=${digest}`, { method: 'PUT', headers: { Authorization: auth, 'Content-Length': '0' } });
      await drain(put);
      if (put.statusCode !== 201) throw new Error(`PUT ${put.statusCode}`);
    });

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
    const rss = peakRssMb(api.pid!);

    console.log(`
                        MiB/s   vs raw S3
  raw S3 PUT (SDK)     ${mbps(size, rawPutMs)}
  Meridian push        ${mbps(size, pushMs)}   ${(rawPutMs / pushMs).toFixed(2)}x
  raw S3 GET           ${mbps(size, rawGetMs)}
  Meridian pull proxy  ${mbps(size, pullMs)}   ${(rawGetMs / pullMs).toFixed(2)}x
  Meridian pull (307)  ${mbps(size, redirectMs)}   ${(rawGetMs / redirectMs).toFixed(2)}x   (default: redirect to the nearest copy)
  API peak RSS         ${rss.toFixed(0)} MB (limit 300 MB) ${rss < 300 ? 'OK' : 'OVER'}   (the instance that took the push and proxied the pull)
`);
    s3.close();
    if (rss >= 300) process.exitCode = 1;
  } finally {
    api?.kill('SIGTERM');
    redirectApi?.kill('SIGTERM');
    await eph.destroy();
  }
}

await main();
