// Runs before every test file (vitest setupFiles): gives the file its own database (a copy of
// the migrated template made by global-setup.ts), its own Temporal namespace and its own Redis
// key prefix, so that no file sees another's workflows, schedules, outbox backlog or rows. The
// S3 servers and the Temporal server itself stay shared.
import { randomBytes } from 'node:crypto';
import { afterAll, inject } from 'vitest';
import postgres from 'postgres';
import { Connection } from '@temporalio/client';
import { loadConfig } from '../../config.ts';
import { ensureNamespace, ensureSearchAttributes, waitForNamespace } from '../../platform/temporal-admin.ts';
import { temporalConnectOptions } from '../../platform/temporal.ts';
import { setFileContext } from './harness.ts';

const base = inject('stack');
const id = randomBytes(4).toString('hex');
const template = new URL(base.databaseUrl).pathname.slice(1);
const dbName = `${template}_f${id}`;
const admin = postgres(base.databaseUrl.replace(/\/[^/]+$/, '/postgres'), { max: 1, onnotice: () => {} });
await admin.unsafe(`create database "${dbName}" template "${template}"`);
const dbUrl = new URL(base.databaseUrl);
dbUrl.pathname = `/${dbName}`;

// What `meridian temporal setup` does for a deployment's namespace (without its schedules).
const namespace = `test-${id}`;
const connection = await Connection.connect(temporalConnectOptions(loadConfig({ ...base.temporalEnv, TEMPORAL_ADDRESS: base.temporalAddress }, { requireKeys: false }).temporal));
await ensureNamespace(connection, namespace, 1);
await ensureSearchAttributes(connection, namespace);
await waitForNamespace(connection, namespace);
await connection.close();

setFileContext({ databaseUrl: dbUrl.toString(), temporalNamespace: namespace, redisKeyPrefix: `${base.redisKeyPrefix}${id}:` });

afterAll(async () => {
  await admin.unsafe(`drop database if exists "${dbName}" with (force)`).catch(() => {});
  await admin.end();
});
