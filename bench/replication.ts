// Replication figures against a throw-away local stack (three S3 regions, Temporal, the API and
// workers): lag from a push completing to every region holding a verified copy, p50/p99 for
// 1 MiB blobs; and the copy throughput of a 1 GiB blob next to a raw S3-to-S3 streaming copy
// (AWS SDK GetObject piped into a managed multipart upload) between the same servers.
//
//   npx tsx bench/replication.ts [--blobs 100] [--gib 1]
import { createCipheriv, createHash, randomBytes } from 'node:crypto';
import http from 'node:http';
import { Readable } from 'node:stream';
import { GetObjectCommand } from '@aws-sdk/client-s3';
import { Upload } from '@aws-sdk/lib-storage';
import { sql } from 'drizzle-orm';
import { createUser } from '../auth/accounts.ts';
import { startApi } from '../api/server.ts';
import { loadConfig } from '../config.ts';
import { connectDatabase } from '../db/client.ts';
import { startEphemeralStack } from '../devstack/ephemeral.ts';
import { DEV_BUCKET } from '../devstack/stack.ts';
import { blobKey } from '../storage/paths.ts';
import { S3Driver } from '../storage/s3.ts';
import { startWorkers } from '../workers/main.ts';

const arg = (name: string, dflt: number) => {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? Number(process.argv[i + 1]) : dflt;
};
const BLOBS = arg('blobs', 100);
const BIG = Math.round(arg('gib', 1) * 1024 ** 3);

/** A Postgres array literal; digests contain only [a-z0-9:]. */
const textArray = (xs: string[]) => `{${xs.join(',')}}`;

function percentile(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)]!;
}

function* keystream(size: number): Generator<Buffer> {
  const c = createCipheriv('aes-128-ctr', Buffer.alloc(16, 3), Buffer.alloc(16, 4));
  const zeros = Buffer.alloc(1024 * 1024);
  for (let n = 0; n < size; n += zeros.length) yield c.update(zeros.subarray(0, Math.min(zeros.length, size - n)));
}

function send(url: string, method: string, headers: Record<string, string>, body?: Readable): Promise<http.IncomingMessage> {
  return new Promise((resolve, reject) => {
    const req = http.request(url, { method, headers }, (res) => {
      res.resume();
      resolve(res);
    });
    req.on('error', reject);
    if (body) body.pipe(req);
    else req.end();
  });
}

async function main(): Promise<void> {
  console.log(`bench: replication lag for ${BLOBS} × 1 MiB blobs, copy throughput for ${(BIG / 1024 ** 3).toFixed(1)} GiB`);
  const eph = await startEphemeralStack({ name: 'benchrepl' });
  const config = loadConfig({ ...eph.env({ PORT: '0', LOG_LEVEL: 'error', MERIDIAN_STORAGE_PREFERENCE: 'us-east,eu-west,ap-south' }) });
  const db = connectDatabase(eph.databaseUrl, { max: 2 });
  await db.db.transaction((tx) => createUser(tx, { username: 'bench', password: 'bench-password' }));
  const api = await startApi(config);
  const workers = await startWorkers(config, { control: true, mirror: false, copyLocations: ['us-east', 'eu-west', 'ap-south'] });
  const auth = `Basic ${Buffer.from('bench:bench-password').toString('base64')}`;
  const drivers = new Map(
    eph.regions.map((r) => [r.name, new S3Driver({ name: r.name, endpoint: `http://127.0.0.1:${r.port}`, region: 'us-east-1', bucket: DEV_BUCKET, ...eph.s3Credentials })]),
  );
  try {
    // Warm up: the first workflow task pays for loading the workflow code.
    const push = async (bytes: Buffer): Promise<string> => {
      const digest = `sha256:${createHash('sha256').update(bytes).digest('hex')}`;
      const r = await send(`${api.url}/v2/bench/lag/blobs/uploads/?digest=${digest}`, 'POST', { Authorization: auth, 'Content-Length': String(bytes.length) }, Readable.from([bytes]));
      if (r.statusCode !== 201) throw new Error(`push ${r.statusCode}`);
      return digest;
    };
    const waitAll = async (digests: string[], locations: number) => {
      for (;;) {
        const [row] = await db.db.execute<{ n: number }>(sql`
          select count(*)::int as n from (select b.id from blobs b join blob_placements p on p.blob_id = b.id
          where b.digest = any(${textArray(digests)}::text[]) group by b.id having count(*) >= ${locations}) x`);
        if ((row?.n ?? 0) >= digests.length) return;
        await new Promise((r) => setTimeout(r, 50));
      }
    };
    await waitAll([await push(randomBytes(1024))], 3);

    // One push at a time, each replicated before the next: the lag of a blob, not of a queue.
    const digests: string[] = [];
    for (let i = 0; i < BLOBS; i++) {
      digests.push(await push(randomBytes(1024 * 1024)));
      await waitAll(digests.slice(-1), 3);
    }
    const lags = (
      await db.db.execute<{ lag: number }>(sql`
        select extract(epoch from max(p.verified_at) - min(p.created_at))::float8 as lag
        from blobs b join blob_placements p on p.blob_id = b.id where b.digest = any(${textArray(digests)}::text[]) group by b.id`)
    )
      .map((r) => r.lag * 1000)
      .sort((a, b) => a - b);

    // 1 GiB: push into us-east, time its replication into eu-west and ap-south.
    const h = createHash('sha256');
    for (const c of keystream(BIG)) h.update(c);
    const bigDigest = `sha256:${h.digest('hex')}`;
    const post = await send(`${api.url}/v2/bench/big/blobs/uploads/?digest=${bigDigest}`, 'POST', { Authorization: auth, 'Transfer-Encoding': 'chunked' }, Readable.from(keystream(BIG)));
    if (post.statusCode !== 201) throw new Error(`big push ${post.statusCode}`);
    await waitAll([bigDigest], 3);
    const [copy] = await db.db.execute<{ secs: number }>(sql`
      select extract(epoch from max(p.verified_at) - min(p.created_at))::float8 as secs
      from blobs b join blob_placements p on p.blob_id = b.id where b.digest = ${bigDigest}`);
    const meridianSecs = copy!.secs;

    // Baseline: the same bytes, us-east → eu-west and us-east → ap-south at once, each a
    // GetObject piped into a managed multipart upload (no verification).
    const src = drivers.get('us-east')!;
    const t = performance.now();
    await Promise.all(
      ['eu-west', 'ap-south'].map(async (name) => {
        const got = await src.client.send(new GetObjectCommand({ Bucket: DEV_BUCKET, Key: blobKey('', bigDigest) }));
        const dst = drivers.get(name)!;
        await new Upload({ client: dst.client, params: { Bucket: DEV_BUCKET, Key: 'bench/raw-copy', Body: got.Body as Readable }, partSize: 16 * 1024 * 1024, queueSize: 4 }).done();
      }),
    );
    const rawSecs = (performance.now() - t) / 1000;
    for (const name of ['eu-west', 'ap-south']) await drivers.get(name)!.delete('bench/raw-copy');

    const mib = BIG / 1024 / 1024;
    console.log(`
  replication lag, ${BLOBS} × 1 MiB blobs (push complete → all 3 regions verified)
    p50 ${percentile(lags, 50).toFixed(0)} ms   p99 ${percentile(lags, 99).toFixed(0)} ms   max ${lags.at(-1)!.toFixed(0)} ms

  copy of ${(BIG / 1024 ** 3).toFixed(1)} GiB                                  MiB/s
    raw S3→S3 streaming copies, us-east → eu-west and ap-south at once     ${(mib / rawSecs).toFixed(0).padStart(5)}
    Meridian replication, the same two copies, digest-verified              ${(mib / meridianSecs).toFixed(0).padStart(5)}   ${(rawSecs / meridianSecs).toFixed(2)}x
    (MiB/s is the blob size over the time until both copies are done)
`);
  } finally {
    for (const d of drivers.values()) d.close();
    await workers.stop();
    await api.close();
    await db.close();
    await eph.destroy();
  }
}

await main();
