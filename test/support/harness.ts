// What integration tests start: the API and workers in this process, configured against the
// shared local stack of global-setup.ts.
import { Client, Connection } from '@temporalio/client';
import { inject } from 'vitest';
import { loadConfig, type Config } from '../../config.ts';
import { startApi, type RunningApi } from '../../api/server.ts';
import { temporalConnectOptions, type TemporalConnectOptions } from '../../platform/temporal.ts';
import { connectDatabase, type DbHandle } from '../../db/client.ts';
import { registerDevLocations } from '../../devstack/stack.ts';
import { startWorkers, type RunningWorkers, type WorkerOptions } from '../../workers/main.ts';
import type { StackInfo } from './stack-info.ts';

let fileContext: Partial<StackInfo> = {};

/** Set by test/support/per-file.ts: this test file's own database, namespace and Redis prefix. */
export function setFileContext(ctx: Partial<StackInfo>): void {
  fileContext = ctx;
}

export function stackInfo(): StackInfo {
  return { ...inject('stack'), ...fileContext };
}

/** How to connect to the test Temporal (address, and TLS for the real server). */
export function testTemporalOptions(): TemporalConnectOptions {
  return temporalConnectOptions(testConfig().temporal);
}

/** A Temporal client in this test file's namespace. */
export async function testTemporal(): Promise<{ client: Client; connection: Connection }> {
  const connection = await Connection.connect(testTemporalOptions());
  return { client: new Client({ connection, namespace: stackInfo().temporalNamespace }), connection };
}

/** The environment an instance of Meridian would get, pointed at the test stack. */
export function testEnv(overrides: Record<string, string | undefined> = {}): Record<string, string | undefined> {
  const s = stackInfo();
  return {
    ...s.temporalEnv,
    ...s.keys,
    DATABASE_URL: s.databaseUrl,
    REDIS_URL: s.redisUrl,
    MERIDIAN_REDIS_PREFIX: s.redisKeyPrefix,
    TEMPORAL_ADDRESS: s.temporalAddress,
    TEMPORAL_NAMESPACE: s.temporalNamespace,
    PORT: '0',
    MERIDIAN_DEV_S3_ACCESS_KEY: s.s3Credentials.accessKeyId,
    MERIDIAN_DEV_S3_SECRET_KEY: s.s3Credentials.secretAccessKey,
    MERIDIAN_STORAGE_PREFERENCE: s.regions.map((r) => r.name).join(','),
    LOG_LEVEL: process.env.LOG_LEVEL ?? 'warn',
    // Tests stop workers mid-activity on purpose; they do not wait out a shutdown grace.
    MERIDIAN_WORKER_SHUTDOWN_GRACE: '0',
    ...overrides,
  };
}

export function testConfig(overrides: Record<string, string | undefined> = {}): Config {
  return loadConfig(testEnv(overrides));
}

let locationsRegistered = false;
/** The three test regions as storage locations (idempotent). */
export async function ensureTestLocations(): Promise<void> {
  if (locationsRegistered) return;
  const db = connectDatabase(stackInfo().databaseUrl, { max: 1 });
  try {
    await registerDevLocations(db.db, stackInfo().regions);
  } finally {
    await db.close();
  }
  locationsRegistered = true;
}

export function testDatabase(): DbHandle {
  return connectDatabase(stackInfo().databaseUrl, { max: 4, applicationName: 'meridian-test' });
}

export async function startTestApi(overrides: Record<string, string | undefined> = {}): Promise<RunningApi & { config: Config }> {
  await ensureTestLocations();
  const config = testConfig(overrides);
  const api = await startApi(config);
  return Object.assign(api, { config: api.services.config });
}

export async function startTestWorkers(
  opts: Partial<WorkerOptions> = {},
  overrides: Record<string, string | undefined> = {},
): Promise<RunningWorkers> {
  await ensureTestLocations();
  const config = testConfig(overrides);
  return startWorkers(config, {
    control: true,
    mirror: true,
    copyLocations: stackInfo().regions.map((r) => r.name),
    workflowBundle: { codePath: stackInfo().workflowBundlePath },
    ...opts,
  });
}

type ServiceName = 'temporal' | `s3-${string}`;

/** Stops, starts or kills one of the shared services (outage simulation). */
export const stackControl = {
  async stop(service: ServiceName): Promise<void> {
    await control(service, 'stop');
  },
  async start(service: ServiceName): Promise<void> {
    await control(service, 'start');
  },
  async kill(service: ServiceName): Promise<void> {
    await control(service, 'kill');
  },
};

async function control(service: string, action: string): Promise<void> {
  const r = await fetch(`${stackInfo().controlUrl}/${service}/${action}`, { method: 'POST' });
  if (r.status !== 204) throw new Error(`stack control ${service}/${action} failed: ${r.status} ${await r.text()}`);
}

/** A fresh user (and namespace) with a random name; returns Basic credentials for it. */
export async function createTestUser(prefix = 'user'): Promise<{ username: string; password: string; authorization: string }> {
  const { createUser } = await import('../../auth/accounts.ts');
  const { randomBytes } = await import('node:crypto');
  const username = `${prefix}-${randomBytes(4).toString('hex')}`;
  const password = `pw-${randomBytes(8).toString('hex')}`;
  const db = testDatabase();
  try {
    await db.db.transaction((tx) => createUser(tx, { username, password }));
  } finally {
    await db.close();
  }
  return { username, password, authorization: `Basic ${Buffer.from(`${username}:${password}`).toString('base64')}` };
}

/** Basic credentials header for a user or robot. */
export function basic(name: string, secret: string): string {
  return `Basic ${Buffer.from(`${name}:${secret}`).toString('base64')}`;
}
