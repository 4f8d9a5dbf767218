// `meridian temporal setup`: everything a Temporal namespace needs before (and after) a Meridian
// release runs in it, idempotent, so it is run on every deploy and by `npm start`:
//   1. the namespace, registered when missing (where the connection may);
//   2. Meridian's custom search attributes, added when missing;
//   3. the maintenance schedules, created or updated to this release's definitions, with a
//      scrub schedule per storage location;
//   4. every mirror schedule reconciled with its database row (created, updated to this release's
//      schedule options, paused or deleted), including schedules whose mirror is gone.
import { Connection } from '@temporalio/client';
import { eq } from 'drizzle-orm';
import type { Config } from '../config.ts';
import { connectDatabase } from '../db/client.ts';
import { mirrorConfigs, namespaces, repositories, storageLocations } from '../db/schema.ts';
import { reconcileMirror } from '../mirror/schedule.ts';
import { createLogger } from '../platform/logger.ts';
import { ensureNamespace, ensureSearchAttributes, waitForNamespace, type NamespaceOutcome, type SearchAttributeOutcome } from '../platform/temporal-admin.ts';
import { connectTemporal, temporalConnectOptions } from '../platform/temporal.ts';
import { MAINTENANCE_SCHEDULES, reconcileMaintenanceSchedules, SCRUB_SCHEDULE_PREFIX, type ScheduleOutcome, scrubSchedules } from './schedules.ts';

const MIRROR_SCHEDULE_PREFIX = 'mirror/';

export interface TemporalSetupOptions {
  /** Retention of a namespace setup registers. */
  retentionDays: number;
  /** Skip what needs the database: the mirror schedules, and the scrub schedules (existing
   * ones are kept). */
  skipMirrors?: boolean;
  /** Progress lines. */
  log?: (line: string) => void;
}

export interface TemporalSetupReport {
  namespace: NamespaceOutcome;
  searchAttributes: SearchAttributeOutcome;
  schedules: { scheduleId: string; outcome: ScheduleOutcome }[];
  mirrors: { reconciled: number; failed: { repository: string; error: string }[] } | undefined;
}

export async function setupTemporal(config: Config, opts: TemporalSetupOptions): Promise<TemporalSetupReport> {
  const log = opts.log ?? (() => {});
  const { namespace } = config.temporal;
  const connection = await Connection.connect({ ...temporalConnectOptions(config.temporal), connectTimeout: 5_000 });
  let ns: NamespaceOutcome;
  let sa: SearchAttributeOutcome;
  try {
    ns = await ensureNamespace(connection, namespace, opts.retentionDays);
    log(`namespace ${namespace}: ${ns === 'registered' ? `registered (retention ${opts.retentionDays} days)` : 'exists'}`);
    sa = await ensureSearchAttributes(connection, namespace);
    log(`search attributes: ${sa.added.length ? `added ${sa.added.join(', ')}` : 'none to add'}${sa.present.length ? `; ${sa.present.length} present` : ''}`);
    await waitForNamespace(connection, namespace);
  } finally {
    await connection.close();
  }

  const temporal = connectTemporal(config);
  try {
    const schedules = opts.skipMirrors
      ? await reconcileMaintenanceSchedules(temporal.client, MAINTENANCE_SCHEDULES, [SCRUB_SCHEDULE_PREFIX])
      : await reconcileMaintenanceSchedules(temporal.client, [...MAINTENANCE_SCHEDULES, ...scrubSchedules(await locationNames(config))]);
    for (const s of schedules) log(`schedule ${s.scheduleId}: ${s.outcome}`);
    const mirrors = opts.skipMirrors ? undefined : await reconcileMirrorSchedules(config, temporal.client);
    if (mirrors) {
      log(`mirror schedules: ${mirrors.reconciled} reconciled${mirrors.failed.length ? `, ${mirrors.failed.length} failed` : ''}`);
      for (const f of mirrors.failed) log(`  ${f.repository}: ${f.error}`);
    }
    return { namespace: ns, searchAttributes: sa, schedules, mirrors };
  } finally {
    await temporal.close();
  }
}

/** Every repository with a mirror row or a `mirror/…` schedule, each brought in line. */
async function reconcileMirrorSchedules(config: Config, client: ReturnType<typeof connectTemporal>['client']) {
  const database = connectDatabase(config.databaseUrl, { max: 4, applicationName: 'meridian-temporal-setup' });
  const logger = createLogger('temporal-setup', config.logLevel);
  try {
    const rows = await database.db
      .select({ ns: namespaces.name, repo: repositories.name })
      .from(mirrorConfigs)
      .innerJoin(repositories, eq(mirrorConfigs.repositoryId, repositories.id))
      .innerJoin(namespaces, eq(repositories.namespaceId, namespaces.id));
    const names = new Set(rows.map((r) => `${r.ns}/${r.repo}`));
    for await (const s of client.schedule.list()) {
      if (s.scheduleId.startsWith(MIRROR_SCHEDULE_PREFIX)) names.add(s.scheduleId.slice(MIRROR_SCHEDULE_PREFIX.length));
    }
    const failed: { repository: string; error: string }[] = [];
    let reconciled = 0;
    const queue = [...names];
    const worker = async () => {
      for (let name = queue.shift(); name !== undefined; name = queue.shift()) {
        try {
          await reconcileMirror({ db: database.db, client, logger }, name);
          reconciled++;
        } catch (e) {
          failed.push({ repository: name, error: (e as Error).message });
        }
      }
    };
    await Promise.all(Array.from({ length: 4 }, worker));
    return { reconciled, failed };
  } finally {
    await database.close();
  }
}

/** The storage locations' names, in the order they were added. */
async function locationNames(config: Config): Promise<string[]> {
  const database = connectDatabase(config.databaseUrl, { max: 1, applicationName: 'meridian-temporal-setup' });
  try {
    return (await database.db.select({ name: storageLocations.name }).from(storageLocations).orderBy(storageLocations.id)).map((r) => r.name);
  } finally {
    await database.close();
  }
}
