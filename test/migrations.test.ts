import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { promisify } from 'node:util';
import postgres from 'postgres';
import { afterAll, describe, expect, it } from 'vitest';
import { applyMigrations, ensureDatabase } from '../db/migrate.ts';
import { PROJECT_ROOT } from '../devstack/tools.ts';
import { stackInfo } from './support/harness.ts';

const run = promisify(execFile);

describe('database migrations', () => {
  const name = `meridian_migr_${randomBytes(4).toString('hex')}`;
  const url = new URL(stackInfo().databaseUrl);
  url.pathname = `/${name}`;
  const admin = postgres(stackInfo().databaseUrl, { max: 1, onnotice: () => {} });

  afterAll(async () => {
    await admin.unsafe(`drop database if exists "${name}" with (force)`);
    await admin.end();
  });

  it('apply on an empty database and re-applying is a no-op', async () => {
    await ensureDatabase(url.toString());
    await applyMigrations(url.toString());
    const db = postgres(url.toString(), { max: 1, onnotice: () => {} });
    try {
      const tables = await db`select table_name from information_schema.tables where table_schema = 'public'`;
      const names = tables.map((t) => t.table_name as string);
      for (const t of ['namespaces', 'users', 'robots', 'repositories', 'blobs', 'blob_placements', 'storage_locations', 'upload_sessions', 'manifests', 'tags', 'manifest_blobs', 'manifest_children', 'repository_permissions', 'tokens', 'mirror_configs', 'mirror_runs', 'webhook_subscriptions', 'outbox']) {
        expect(names).toContain(t);
      }
      const [before] = await db`select count(*)::int as n from __drizzle_migrations`;
      // drizzle-kit (what the setup script runs) agrees nothing is left to apply.
      await run('npx', ['drizzle-kit', 'migrate'], { cwd: PROJECT_ROOT, env: { ...process.env, DATABASE_URL: url.toString() } });
      await applyMigrations(url.toString());
      const [after] = await db`select count(*)::int as n from __drizzle_migrations`;
      expect(after?.n).toBe(before?.n);
    } finally {
      await db.end();
    }
  });

  it('keeps one row per digest and one placement per blob and location under concurrent writers', async () => {
    const db = postgres(url.toString(), { max: 8, onnotice: () => {} });
    try {
      const digest = `sha256:${'a'.repeat(64)}`;
      await Promise.all(
        Array.from({ length: 8 }, () => db`insert into blobs (digest, size) values (${digest}, 1) on conflict (digest) do nothing`),
      );
      const [{ n }] = (await db`select count(*)::int as n from blobs where digest = ${digest}`) as unknown as [{ n: number }];
      expect(n).toBe(1);
      const [loc] = await db`insert into storage_locations (name, region, endpoint, bucket, credentials_ref) values ('x', 'x', 'http://x', 'b', 'env:X') returning id`;
      const [blob] = await db`select id from blobs where digest = ${digest}`;
      await db`insert into blob_placements (blob_id, location_id) values (${blob!.id}, ${loc!.id})`;
      await expect(db`insert into blob_placements (blob_id, location_id) values (${blob!.id}, ${loc!.id})`).rejects.toThrow(/duplicate key/);
    } finally {
      await db.end();
    }
  });
});
