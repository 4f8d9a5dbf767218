// Keeps Temporal in step with a repository's mirror row: one Schedule per mirror (created,
// updated, paused while disabled, deleted with the config), overlap policy SKIP; a SYNC_NOW
// status triggers it (still without overlap), a CANCEL status cancels the running sync.
//
// Run by the reconcileMirror workflow, itself started through the outbox by every change to the
// row. The whole read-and-apply happens under a per-repository advisory lock, so two reconciles
// never interleave: whichever applies last read the latest row, and repeated changes converge.
import { type Client, ScheduleAlreadyRunning, ScheduleNotFoundError, ScheduleOverlapPolicy, type ScheduleUpdateOptions } from '@temporalio/client';
import { WorkflowNotFoundError } from '@temporalio/common';
import { and, eq, sql } from 'drizzle-orm';
import type { DbOrTx } from '../db/client.ts';
import { mirrorConfigs, mirrorRuns } from '../db/schema.ts';
import type { Logger } from '../platform/logger.ts';
import { findRepository } from '../registry/repositories.ts';
import { type MirrorSyncInput, mirrorSyncWorkflow } from '../contract/mirror.ts';
import { scheduledStart, workflowHandle } from '../platform/workflows.ts';
import { SEARCH_ATTRIBUTES, WORKFLOW_IDS } from '../temporal.config.ts';
import type { MirrorConfigRow } from './config.ts';
import { parseReference } from './reference.ts';

export interface ReconcileResult {
  schedule: 'created' | 'updated' | 'deleted' | 'absent';
  paused: boolean;
  triggered: boolean;
  cancelled: string[];
}

/** Times are `epoch + n·interval + offset`: the offset puts them on sync_start_date's grid. */
export function scheduleSpec(cfg: Pick<MirrorConfigRow, 'syncInterval' | 'syncStartDate'>) {
  const interval = cfg.syncInterval;
  const offset = Math.floor(cfg.syncStartDate.getTime() / 1000) % interval;
  return {
    intervals: [{ every: `${interval}s`, ...(offset ? { offset: `${offset}s` } : {}) }],
    startAt: cfg.syncStartDate,
  };
}

function scheduleOptions(repository: string, cfg: MirrorConfigRow): ScheduleUpdateOptions {
  const upstream = parseReference(cfg.externalReference).apiAuthority.toLowerCase();
  const input: MirrorSyncInput = { repository };
  return {
    spec: scheduleSpec(cfg),
    action: scheduledStart(mirrorSyncWorkflow, {
      workflowId: WORKFLOW_IDS.mirrorSync(repository),
      args: [input],
      typedSearchAttributes: [
        { key: SEARCH_ATTRIBUTES.repository, value: repository },
        { key: SEARCH_ATTRIBUTES.upstream, value: upstream },
        { key: SEARCH_ATTRIBUTES.state, value: 'STARTING' },
      ],
      memo: { repository, upstream: cfg.externalReference },
      staticSummary: `Mirror ${cfg.externalReference} into ${repository}`,
    }),
    policies: { overlap: ScheduleOverlapPolicy.SKIP, catchupWindow: '10 minutes' },
    state: {
      paused: !cfg.isEnabled,
      note: cfg.isEnabled ? `mirrors ${cfg.externalReference} every ${cfg.syncInterval}s` : 'mirror disabled (is_enabled: false)',
    },
  };
}

async function cancelRunning(client: Client, db: DbOrTx, repository: string, configId: number | undefined, scheduleRunning: string[]): Promise<string[]> {
  const ids = new Set(scheduleRunning);
  if (configId !== undefined) {
    const rows = await db
      .select({ workflowId: mirrorRuns.workflowId })
      .from(mirrorRuns)
      .where(and(eq(mirrorRuns.configId, configId), eq(mirrorRuns.status, 'SYNCING')));
    for (const r of rows) ids.add(r.workflowId);
  }
  const cancelled: string[] = [];
  for (const id of ids) {
    try {
      // No run id: the latest run of the chain (syncs continue-as-new on long tag lists).
      await workflowHandle(client, mirrorSyncWorkflow, id).cancel();
      cancelled.push(id);
    } catch (e) {
      if (!(e instanceof WorkflowNotFoundError) && !/not found|already completed/i.test((e as Error).message)) throw e;
    }
  }
  void repository;
  return cancelled;
}

/** A sync-now arrived while the previous sync's workflow was finishing; retry shortly. */
export class SyncStillClosingError extends Error {
  constructor(repository: string) {
    super(`the previous sync of ${repository} is still closing; the requested sync starts once it has`);
    this.name = 'SyncStillClosingError';
  }
}

async function hasSyncingRun(db: DbOrTx, configId: number): Promise<boolean> {
  const [row] = await db
    .select({ id: mirrorRuns.id })
    .from(mirrorRuns)
    .where(and(eq(mirrorRuns.configId, configId), eq(mirrorRuns.status, 'SYNCING')))
    .limit(1);
  return row !== undefined;
}

export async function reconcileMirror(deps: { db: DbOrTx; client: Client; logger: Logger }, repository: string): Promise<ReconcileResult> {
  const { client } = deps;
  return deps.db.transaction(async (tx) => {
    await tx.execute(sql`select pg_advisory_xact_lock(hashtextextended(${`mirror-schedule:${repository}`}, 0))`);
    const repo = await findRepository(tx, repository);
    const [cfg] = repo ? await tx.select().from(mirrorConfigs).where(eq(mirrorConfigs.repositoryId, repo.id)) : [];
    const handle = client.schedule.getHandle(WORKFLOW_IDS.mirrorSchedule(repository));
    let running: string[] = [];
    try {
      const d = await handle.describe();
      running = d.info.runningActions.map((a) => a.workflow.workflowId);
    } catch (e) {
      if (!(e instanceof ScheduleNotFoundError)) throw e;
    }

    if (!cfg) {
      // Deleted (or its repository deleted): no schedule, and no sync left running.
      const cancelled = await cancelRunning(client, tx, repository, undefined, running);
      try {
        await handle.delete();
        return { schedule: 'deleted', paused: false, triggered: false, cancelled };
      } catch (e) {
        if (!(e instanceof ScheduleNotFoundError)) throw e;
        return { schedule: 'absent', paused: false, triggered: false, cancelled };
      }
    }

    const options = scheduleOptions(repository, cfg);
    let outcome: ReconcileResult['schedule'];
    try {
      await handle.update(() => options);
      outcome = 'updated';
    } catch (e) {
      if (!(e instanceof ScheduleNotFoundError)) throw e;
      try {
        await client.schedule.create({ scheduleId: WORKFLOW_IDS.mirrorSchedule(repository), ...options, memo: { repository } });
        outcome = 'created';
      } catch (e2) {
        if (!(e2 instanceof ScheduleAlreadyRunning)) throw e2;
        await handle.update(() => options);
        outcome = 'updated';
      }
    }
    let triggered = false;
    let cancelled: string[] = [];
    if (cfg.syncStatus === 'SYNC_NOW' && running.length > 0 && !(await hasSyncingRun(tx, cfg.id))) {
      // The previous sync has recorded its outcome but its workflow is still closing (announcing
      // the result); a trigger now would be skipped and the request lost. Retried (the reconcile
      // activity's policy) until that workflow has closed.
      throw new SyncStillClosingError(repository);
    }
    if (cfg.syncStatus === 'SYNC_NOW' && running.length === 0) {
      // SKIP: a trigger never starts a second sync next to a running one.
      await handle.trigger(ScheduleOverlapPolicy.SKIP);
      triggered = true;
    } else if (cfg.syncStatus === 'CANCEL') {
      cancelled = await cancelRunning(client, tx, repository, cfg.id, running);
    }
    deps.logger.debug({ repository, outcome, triggered, cancelled }, 'mirror schedule reconciled');
    return { schedule: outcome, paused: !cfg.isEnabled, triggered, cancelled };
  });
}
