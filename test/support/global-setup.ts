// Starts the real services every integration test talks to, once per `npm test`: a Temporal dev
// server, three S3 servers (us-east, eu-west, ap-south), a throw-away PostgreSQL database and a
// private Redis key prefix; bundles the workflows once. Tests reach them through inject() and may
// stop/start a service through the small control server below (to simulate outages).
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:http';
import { tmpdir } from 'node:os';
import path from 'node:path';
import postgres from 'postgres';
import { Redis } from 'ioredis';
import type { TestProject } from 'vitest/node';
import { applyMigrations, ensureDatabase } from '../../db/migrate.ts';
import { freePort } from '../../devstack/ports.ts';
import { devRegions, startLocalStack, type LocalStack } from '../../devstack/stack.ts';
import { bundleWorkflows } from '../../workers/bundle.ts';
import type { StackInfo } from './stack-info.ts';

const BASE_DB = process.env.DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/meridian';
const REDIS_URL = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379/0';
const S3_CREDENTIALS = { accessKeyId: 'meridian-test', secretAccessKey: `test-${randomBytes(8).toString('hex')}` };

export default async function setup(project: TestProject) {
  const runId = `${process.pid}_${randomBytes(3).toString('hex')}`;
  const dataDir = mkdtempSync(path.join(tmpdir(), 'meridian-test-'));
  const dbUrl = new URL(BASE_DB);
  dbUrl.pathname = `/meridian_test_${runId}`;
  const databaseUrl = dbUrl.toString();
  const redisKeyPrefix = `meridian-test-${runId}:`;

  const temporalPort = await freePort();
  const s3Ports = [await freePort(), await freePort(), await freePort()];
  const regions = devRegions(0).map((r, i) => ({ ...r, port: s3Ports[i]! }));

  const [stack, bundle] = await Promise.all([
    startLocalStack({ dataDir, logDir: path.join(dataDir, 'logs'), temporalPort, regions, credentials: S3_CREDENTIALS }),
    bundleWorkflows(),
    (async () => {
      await ensureDatabase(databaseUrl);
      await applyMigrations(databaseUrl);
    })(),
  ]);
  const bundlePath = path.join(dataDir, 'workflow-bundle.js');
  writeFileSync(bundlePath, bundle.code);

  const control = await startControlServer(stack);
  const info: StackInfo = {
    databaseUrl,
    redisUrl: REDIS_URL,
    redisKeyPrefix,
    temporalAddress: `127.0.0.1:${temporalPort}`,
    regions,
    s3Credentials: S3_CREDENTIALS,
    dataDir,
    workflowBundlePath: bundlePath,
    controlUrl: control.url,
  };
  project.provide('stack', info);

  return async () => {
    await control.close();
    await stack.stop();
    const sql = postgres(BASE_DB, { max: 1, onnotice: () => {} });
    await sql.unsafe(`drop database if exists "meridian_test_${runId}" with (force)`).catch(() => {});
    await sql.end();
    const redis = new Redis(REDIS_URL, { lazyConnect: true });
    await redis.connect().catch(() => {});
    const keys = await redis.keys(`${redisKeyPrefix}*`).catch(() => [] as string[]);
    if (keys.length > 0) await redis.del(...keys).catch(() => {});
    redis.disconnect();
    if (!process.env.MERIDIAN_KEEP_TEST_DATA) rmSync(dataDir, { recursive: true, force: true });
  };
}

/** POST /<service>/<stop|start|kill> where service is `temporal` or `s3-<region>`. */
async function startControlServer(stack: LocalStack): Promise<{ url: string; close: () => Promise<void> }> {
  const server = createServer(async (req, res) => {
    const m = /^\/([a-z0-9-]+)\/(stop|start|kill)$/.exec(req.url ?? '');
    const proc = m?.[1] === 'temporal' ? stack.temporal : stack.s3.get(m?.[1]?.replace(/^s3-/, '') ?? '');
    if (!m || !proc || req.method !== 'POST') {
      res.writeHead(404).end();
      return;
    }
    try {
      if (m[2] === 'stop') await proc.stop();
      else if (m[2] === 'kill') await proc.kill();
      else if (!proc.running) await proc.start();
      res.writeHead(204).end();
    } catch (e) {
      res.writeHead(500).end((e as Error).message);
    }
  });
  const port = await freePort();
  await new Promise<void>((r) => server.listen(port, '127.0.0.1', r));
  return { url: `http://127.0.0.1:${port}`, close: () => new Promise((r) => server.close(() => r())) };
}

declare module 'vitest' {
  export interface ProvidedContext {
    stack: StackInfo;
  }
}
