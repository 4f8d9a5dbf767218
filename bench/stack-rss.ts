// Memory of the whole local system as `npm start` runs it: starts `node dist/scripts/start.js`
// (compiled, the Temporal dev server, three S3 servers, the clustered API, the control worker and
// a copy worker per region) on free ports with its own data folder, database and Redis prefix,
// waits until it says it is running and has settled, then prints the resident memory (VmRSS) of
// every process in its tree and their sum; then stops it and removes what it created.
//
//   npx tsx bench/stack-rss.ts [--settle 15] [--workers N]
//
// The sum counts shared pages once per process (as RSS does), so it is an upper bound of what
// the stack takes from the machine.
import { spawn } from 'node:child_process';
import { randomBytes, randomInt } from 'node:crypto';
import { mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Redis } from 'ioredis';
import postgres from 'postgres';
import { ensureDatabase } from '../db/migrate.ts';
import { isPortFree } from '../devstack/ports.ts';
import { DIST_DIR, PROJECT_ROOT } from '../devstack/tools.ts';
import { build } from '../scripts/build.ts';

const argValue = (name: string): string | undefined => (process.argv.includes(name) ? process.argv[process.argv.indexOf(name) + 1] : undefined);
const SETTLE_SECONDS = Number(argValue('--settle') ?? 15);
const WORKERS = argValue('--workers');

interface Proc {
  pid: number;
  ppid: number;
  name: string;
  rssMb: number;
}

/** Every process now running, with its parent, a short name and its RSS. */
function processes(): Map<number, Proc> {
  const out = new Map<number, Proc>();
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const status = readFileSync(`/proc/${entry}/status`, 'utf8');
      const ppid = Number(/PPid:\s+(\d+)/.exec(status)?.[1] ?? 0);
      const rss = Number(/VmRSS:\s+(\d+) kB/.exec(status)?.[1] ?? 0) / 1024;
      const argv = readFileSync(`/proc/${entry}/cmdline`, 'utf8').split('\0').filter(Boolean);
      out.set(Number(entry), { pid: Number(entry), ppid, name: describe(argv), rssMb: rss });
    } catch {
      // exited meanwhile
    }
  }
  return out;
}

/** `node dist/api/main.js` → `api/main`, `versitygw … --port 9001` → `versitygw`, etc. */
function describe(argv: string[]): string {
  const script = argv.find((a) => a.endsWith('.js') && a.includes('/dist/'));
  if (script) {
    const rel = path.relative(DIST_DIR, script).replace(/\.js$/, '');
    const extra = argv.slice(argv.indexOf(script) + 1).filter((a) => a.startsWith('--')).join(' ');
    return `node ${rel}${extra ? ` ${extra}` : ''}`;
  }
  return path.basename(argv[0] ?? '?') + (argv[1] && !argv[1].startsWith('-') ? ` ${argv[1]}` : '');
}

function tree(root: number): Proc[] {
  const all = processes();
  const out: Proc[] = [];
  const visit = (pid: number) => {
    const p = all.get(pid);
    if (p) out.push(p);
    for (const c of all.values()) if (c.ppid === pid) visit(c.pid);
  };
  visit(root);
  return out;
}

/** The last lines of each process log, to say why a start failed. */
function logTails(dataDir: string): string {
  const dir = path.join(dataDir, 'logs');
  try {
    return readdirSync(dir)
      .map((f) => `\n--- ${f}\n${readFileSync(path.join(dir, f), 'utf8').split('\n').slice(-8).join('\n')}`)
      .join('');
  } catch {
    return '';
  }
}

/** A base port with `span` consecutive free ports. */
async function freeRange(span: number, avoid: number[] = []): Promise<number> {
  for (;;) {
    const base = randomInt(20_000, 30_000);
    const ports = Array.from({ length: span }, (_, i) => base + i);
    if (ports.some((p) => avoid.includes(p))) continue;
    if ((await Promise.all(ports.map((p) => isPortFree(p)))).every(Boolean)) return base;
  }
}

async function main(): Promise<void> {
  console.log('stack-rss: building dist/ and starting `node dist/scripts/start.js` on free ports');
  await build({ ifNeeded: true, log: () => {} });
  const baseDb = process.env.DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/meridian';
  const runId = `${process.pid}_${randomBytes(3).toString('hex')}`;
  const dbUrl = new URL(baseDb);
  const dbName = `meridian_stackrss_${runId}`;
  dbUrl.pathname = `/${dbName}`;
  const redisPrefix = `meridian-stackrss-${runId}:`;
  const dataDir = mkdtempSync(path.join(tmpdir(), 'meridian-stackrss-'));
  // The API at PORT and the workers' metrics at PORT+10…+13; Temporal gRPC and its UI; three S3.
  const apiPort = await freeRange(14);
  const used = Array.from({ length: 14 }, (_, i) => apiPort + i);
  const temporalPort = await freeRange(1, used);
  const uiPort = await freeRange(1, [...used, temporalPort]);
  const s3Base = await freeRange(3, [...used, temporalPort, uiPort]);
  await ensureDatabase(dbUrl.toString());

  // As package.json's start script runs it.
  const start = spawn(process.execPath, ['--max-semi-space-size=4', path.join(DIST_DIR, 'scripts/start.js')], {
    cwd: PROJECT_ROOT,
    env: {
      ...process.env,
      DATABASE_URL: dbUrl.toString(),
      MERIDIAN_REDIS_PREFIX: redisPrefix,
      MERIDIAN_DATA_DIR: dataDir,
      PORT: String(apiPort),
      TEMPORAL_ADDRESS: `127.0.0.1:${temporalPort}`,
      TEMPORAL_UI_PORT: String(uiPort),
      MERIDIAN_DEV_S3_BASE_PORT: String(s3Base),
      MERIDIAN_ADMIN_PASSWORD: randomBytes(12).toString('hex'),
      ...(WORKERS ? { MERIDIAN_API_WORKERS: WORKERS } : {}),
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let output = '';
  start.stdout.on('data', (d: Buffer) => (output += d.toString()));
  start.stderr.on('data', (d: Buffer) => (output += d.toString()));
  const exited = new Promise<void>((resolve) => start.once('exit', () => resolve()));
  try {
    const deadline = Date.now() + 300_000;
    while (!output.includes('Meridian is running.')) {
      if (start.exitCode !== null) throw new Error(`start exited (${start.exitCode}):\n${output}${logTails(dataDir)}`);
      if (Date.now() > deadline) throw new Error(`start did not finish within 300 s:\n${output}`);
      await new Promise((r) => setTimeout(r, 500));
    }
    console.log(`stack-rss: running; waiting ${SETTLE_SECONDS} s for it to settle`);
    await new Promise((r) => setTimeout(r, SETTLE_SECONDS * 1000));
    const procs = tree(start.pid!).sort((a, b) => b.rssMb - a.rssMb);
    console.log(`\n${'process'.padEnd(48)} ${'RSS MB'.padStart(7)}`);
    for (const p of procs) console.log(`${p.name.slice(0, 48).padEnd(48)} ${p.rssMb.toFixed(0).padStart(7)}`);
    const total = procs.reduce((n, p) => n + p.rssMb, 0);
    const api = procs.filter((p) => p.name.startsWith('node api/main'));
    console.log(`\nwhole npm start stack RSS, idle: ${total.toFixed(0)} MB in ${procs.length} processes`);
    console.log(`of which Meridian's node processes: ${procs.filter((p) => p.name.startsWith('node ')).reduce((n, p) => n + p.rssMb, 0).toFixed(0)} MB; API processes (primary + workers): ${api.map((p) => p.rssMb.toFixed(0)).join(', ')} MB`);
  } finally {
    if (start.exitCode === null) start.kill('SIGTERM');
    await Promise.race([exited, new Promise((r) => setTimeout(r, 60_000))]);
    const sql = postgres(baseDb, { max: 1, onnotice: () => {} });
    await sql.unsafe(`drop database if exists "${dbName}" with (force)`).catch(() => {});
    await sql.end();
    const redis = new Redis(process.env.REDIS_URL ?? 'redis://127.0.0.1:6379/0', { lazyConnect: true });
    await redis.connect().catch(() => {});
    const keys = await redis.keys(`${redisPrefix}*`).catch(() => [] as string[]);
    if (keys.length > 0) await redis.del(...keys).catch(() => {});
    redis.disconnect();
    rmSync(dataDir, { recursive: true, force: true });
  }
}

await main();
