// Runs before every test file (vitest setupFiles): gives the file its own database (a copy of
// the migrated template made by global-setup.ts), its own Temporal namespace and its own Redis
// key prefix, so that no file sees another's workflows, schedules, outbox backlog or rows. The
// S3 servers and the Temporal server itself stay shared.
import { randomBytes } from 'node:crypto';
import { afterAll, inject } from 'vitest';
import postgres from 'postgres';
import { Connection } from '@temporalio/client';
import Long from 'long';
import { SEARCH_ATTRIBUTES } from '../../temporal.config.ts';
import { setFileContext } from './harness.ts';

const base = inject('stack');
const id = randomBytes(4).toString('hex');
const template = new URL(base.databaseUrl).pathname.slice(1);
const dbName = `${template}_f${id}`;
const admin = postgres(base.databaseUrl.replace(/\/[^/]+$/, '/postgres'), { max: 1, onnotice: () => {} });
await admin.unsafe(`create database "${dbName}" template "${template}"`);
const dbUrl = new URL(base.databaseUrl);
dbUrl.pathname = `/${dbName}`;

const namespace = `test-${id}`;
const connection = await Connection.connect({ address: base.temporalAddress });
await connection.workflowService.registerNamespace({ namespace, workflowExecutionRetentionPeriod: { seconds: Long.fromNumber(86_400) } });
const TYPES: Record<string, number> = { TEXT: 1, KEYWORD: 2, INT: 3, DOUBLE: 4, BOOL: 5, DATETIME: 6, KEYWORD_LIST: 7 };
await connection.operatorService.addSearchAttributes({
  namespace,
  searchAttributes: Object.fromEntries(Object.values(SEARCH_ATTRIBUTES).map((k) => [k.name, TYPES[k.type]!])),
});
await connection.close();

setFileContext({ databaseUrl: dbUrl.toString(), temporalNamespace: namespace, redisKeyPrefix: `${base.redisKeyPrefix}${id}:` });

afterAll(async () => {
  await admin.unsafe(`drop database if exists "${dbName}" with (force)`).catch(() => {});
  await admin.end();
});
