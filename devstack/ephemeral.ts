// A throw-away copy of the local stack on free ports, in a temporary folder, with its own
// database and Redis key prefix: what the tests and the benchmarks run against, so they never
// touch the data of `npm start` and can run while it is up.
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Redis } from 'ioredis';
import postgres from 'postgres';
import { applyMigrations, ensureDatabase } from '../db/migrate.ts';
import { connectDatabase } from '../db/client.ts';
import { freePort } from './ports.ts';
import { devRegions, registerDevLocations, startLocalStack, type DevRegion, type LocalStack } from './stack.ts';

export interface EphemeralStack {
  stack: LocalStack;
  databaseUrl: string;
  redisUrl: string;
  redisKeyPrefix: string;
  temporalAddress: string;
  regions: DevRegion[];
  s3Credentials: { accessKeyId: string; secretAccessKey: string };
  dataDir: string;
  /** Environment for a Meridian process pointed at this stack. */
  env(overrides?: Record<string, string>): Record<string, string>;
  destroy(): Promise<void>;
}

export async function startEphemeralStack(opts: { name: string; registerLocations?: boolean; keepData?: boolean }): Promise<EphemeralStack> {
  const baseDb = process.env.DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/meridian';
  const redisUrl = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379/0';
  const runId = `${process.pid}_${randomBytes(3).toString('hex')}`;
  const dataDir = mkdtempSync(path.join(tmpdir(), `meridian-${opts.name}-`));
  const dbUrl = new URL(baseDb);
  const dbName = `meridian_${opts.name.replace(/[^a-z0-9_]/g, '_')}_${runId}`;
  dbUrl.pathname = `/${dbName}`;
  const databaseUrl = dbUrl.toString();
  const redisKeyPrefix = `meridian-${opts.name}-${runId}:`;
  const s3Credentials = { accessKeyId: `meridian-${opts.name}`, secretAccessKey: randomBytes(12).toString('hex') };
  const temporalPort = await freePort();
  const regions = await Promise.all(devRegions(0).map(async (r) => ({ ...r, port: await freePort() })));

  const [stack] = await Promise.all([
    startLocalStack({ dataDir, logDir: path.join(dataDir, 'logs'), temporalPort, regions, credentials: s3Credentials }),
    ensureDatabase(databaseUrl).then(() => applyMigrations(databaseUrl)),
  ]);
  if (opts.registerLocations !== false) {
    const db = connectDatabase(databaseUrl, { max: 1 });
    try {
      await registerDevLocations(db.db, regions);
    } finally {
      await db.close();
    }
  }
  const temporalAddress = `127.0.0.1:${temporalPort}`;
  return {
    stack,
    databaseUrl,
    redisUrl,
    redisKeyPrefix,
    temporalAddress,
    regions,
    s3Credentials,
    dataDir,
    env: (overrides = {}) => ({
      DATABASE_URL: databaseUrl,
      REDIS_URL: redisUrl,
      MERIDIAN_REDIS_PREFIX: redisKeyPrefix,
      TEMPORAL_ADDRESS: temporalAddress,
      MERIDIAN_DEV_S3_ACCESS_KEY: s3Credentials.accessKeyId,
      MERIDIAN_DEV_S3_SECRET_KEY: s3Credentials.secretAccessKey,
      MERIDIAN_STORAGE_PREFERENCE: regions.map((r) => r.name).join(','),
      ...overrides,
    }),
    async destroy() {
      await stack.stop();
      const sql = postgres(baseDb, { max: 1, onnotice: () => {} });
      await sql.unsafe(`drop database if exists "${dbName}" with (force)`).catch(() => {});
      await sql.end();
      const redis = new Redis(redisUrl, { lazyConnect: true });
      await redis.connect().catch(() => {});
      const keys = await redis.keys(`${redisKeyPrefix}*`).catch(() => [] as string[]);
      if (keys.length > 0) await redis.del(...keys).catch(() => {});
      redis.disconnect();
      if (!opts.keepData) rmSync(dataDir, { recursive: true, force: true });
    },
  };
}
