// A throw-away copy of the local stack on free ports, in a temporary folder, with its own
// database and Redis key prefix: what the tests and the benchmarks run against, so they never
// touch the data of `npm start` and can run while it is up.
import { randomBytes, randomInt } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Redis } from 'ioredis';
import postgres from 'postgres';
import { applyMigrations, ensureDatabase } from '../db/migrate.ts';
import { connectDatabase } from '../db/client.ts';
import { freePort, isPortFree } from './ports.ts';
import { devRegions, registerDevLocations, startLocalStack, type DevRegion, type LocalStack } from './stack.ts';
import { devServerTlsEnv, type TemporalServerPorts } from './temporal-server.ts';

export interface EphemeralStack {
  stack: LocalStack;
  databaseUrl: string;
  redisUrl: string;
  redisKeyPrefix: string;
  temporalAddress: string;
  /** `dev`: the Temporal CLI's dev server; `server`: the real server (PostgreSQL, mutual TLS). */
  temporalKind: 'dev' | 'server';
  /** TEMPORAL_TLS_* settings a client of this stack's Temporal needs (none for the dev server). */
  temporalEnv: Record<string, string>;
  regions: DevRegion[];
  s3Credentials: { accessKeyId: string; secretAccessKey: string };
  /** MERIDIAN_SECRET_KEY and MERIDIAN_TOKEN_KEY, generated for this stack (there are no default keys). */
  keys: Record<string, string>;
  dataDir: string;
  /** Environment for a Meridian process pointed at this stack. */
  env(overrides?: Record<string, string>): Record<string, string>;
  destroy(): Promise<void>;
}

export async function startEphemeralStack(opts: {
  name: string;
  registerLocations?: boolean;
  keepData?: boolean;
  temporal?: 'dev' | 'server';
  /** Temporal dynamic config values (either kind of server). */
  temporalDynamicConfig?: Record<string, unknown>;
}): Promise<EphemeralStack> {
  const temporalKind = opts.temporal ?? 'dev';
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
  const keys = { MERIDIAN_SECRET_KEY: randomBytes(32).toString('base64'), MERIDIAN_TOKEN_KEY: randomBytes(32).toString('base64') };
  const regions = await Promise.all(devRegions(0).map(async (r) => ({ ...r, port: await freePort() })));
  const temporalDbPrefix = `${dbName}_temporal`;
  const realTemporal =
    temporalKind === 'server'
      ? { ports: await freeServerPorts(), postgresUrl: baseDb, databasePrefix: temporalDbPrefix, dynamicConfig: opts.temporalDynamicConfig }
      : undefined;
  const temporalPort = realTemporal?.ports.frontend ?? (await freePort());
  const temporalEnv = temporalKind === 'server' ? devServerTlsEnv() : {};
  const dropDatabases = async () => {
    const sql = postgres(baseDb, { max: 1, onnotice: () => {} });
    for (const db of [dbName, ...(realTemporal ? [temporalDbPrefix, `${temporalDbPrefix}_visibility`] : [])]) {
      await sql.unsafe(`drop database if exists "${db}" with (force)`).catch(() => {});
    }
    await sql.end();
  };

  const [started, migrated] = await Promise.allSettled([
    startLocalStack({
      dataDir,
      logDir: path.join(dataDir, 'logs'),
      temporalPort,
      regions,
      credentials: s3Credentials,
      realTemporal,
      devTemporalDynamicConfig: opts.temporalDynamicConfig,
    }),
    ensureDatabase(databaseUrl).then(() => applyMigrations(databaseUrl)),
  ]);
  if (started.status === 'rejected' || migrated.status === 'rejected') {
    // Leave nothing behind: no servers, databases or folders of a stack that never came up.
    if (started.status === 'fulfilled') await started.value.stop();
    await dropDatabases();
    if (!opts.keepData) rmSync(dataDir, { recursive: true, force: true });
    throw started.status === 'rejected' ? started.reason : (migrated as PromiseRejectedResult).reason;
  }
  const stack = started.value;
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
    temporalKind,
    temporalEnv,
    regions,
    s3Credentials,
    keys,
    dataDir,
    env: (overrides = {}) => ({
      ...temporalEnv,
      ...keys,
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
      await dropDatabases();
      const redis = new Redis(redisUrl, { lazyConnect: true });
      await redis.connect().catch(() => {});
      const keys = await redis.keys(`${redisKeyPrefix}*`).catch(() => [] as string[]);
      if (keys.length > 0) await redis.del(...keys).catch(() => {});
      redis.disconnect();
      if (!opts.keepData) rmSync(dataDir, { recursive: true, force: true });
    },
  };
}

/** The server stores membership ports as a PostgreSQL smallint: they must be below 32768, where
 * the kernel's ephemeral range (which freePort draws from) starts. */
async function freeServerPorts(): Promise<TemporalServerPorts> {
  const taken = new Set<number>();
  while (taken.size < 10) {
    const port = 20_000 + randomInt(12_000);
    if (await isPortFree(port)) taken.add(port);
  }
  const [frontend, frontendMembership, frontendHttp, history, historyMembership, matching, matchingMembership, worker, workerMembership, metrics] = [...taken];
  return { frontend, frontendMembership, frontendHttp, history, historyMembership, matching, matchingMembership, worker, workerMembership, metrics } as TemporalServerPorts;
}
