// The transactional outbox: intents to start a workflow, written in the same database transaction
// as the change that causes them (a new blob placement, a mirror config), and delivered to
// Temporal by the relay whenever it is reachable. A rolled-back transaction leaves no intent; a
// committed one is delivered at least once, and the deterministic workflow id with
// USE_EXISTING makes repeated deliveries start one workflow.
import type { Client } from '@temporalio/client';
import { type Workflow, WorkflowIdConflictPolicy } from '@temporalio/common';
import { sql } from 'drizzle-orm';
import type { Sql } from 'postgres';
import { type WorkflowDefinition, workflowDefinition } from '../contract/index.ts';
import type { DbOrTx } from '../db/client.ts';
import { outbox } from '../db/schema.ts';
import type { Logger } from './logger.ts';
import { startWorkflow } from './workflows.ts';

export const OUTBOX_CHANNEL = 'meridian_outbox';

/** An outbox row's payload: a start of a workflow declared in the contract, by type name. */
export interface WorkflowStartIntent {
  workflowType: string;
  workflowId: string;
  taskQueue: string;
  args: unknown[];
  /** Written by the workflow itself as it runs; these are the values it starts with. */
  memo?: Record<string, unknown>;
}

export interface WorkflowStart<F extends Workflow> {
  workflowId: string;
  args: Parameters<F>;
  /** The declared task queue unless given. */
  taskQueue?: string;
  memo?: Record<string, unknown>;
}

/** Writes the intent to start `def` in the caller's transaction. */
export async function enqueueWorkflowStart<F extends Workflow>(tx: DbOrTx, def: WorkflowDefinition<F>, start: WorkflowStart<F>): Promise<void> {
  const intent: WorkflowStartIntent = {
    workflowType: def.name,
    workflowId: start.workflowId,
    taskQueue: start.taskQueue ?? def.taskQueue,
    args: start.args,
    ...(start.memo ? { memo: start.memo } : {}),
  };
  await tx.insert(outbox).values({ kind: 'start-workflow', payload: intent as unknown as Record<string, unknown> });
  // Delivered on commit only, so the relay wakes up exactly when there is something to do.
  await tx.execute(sql`select pg_notify(${OUTBOX_CHANNEL}, '')`);
}

export interface RelayStats {
  delivered: number;
  failed: number;
  /** Temporal itself was unreachable: the relay should pause, not blame the rows. */
  unavailable: boolean;
}

/** gRPC UNAVAILABLE / DEADLINE_EXCEEDED and connection errors: Temporal is down, not the row bad. */
function isUnavailable(e: unknown): boolean {
  // The client wraps the gRPC error ("Failed to start Workflow"); look down the cause chain.
  for (let cur: unknown = e, depth = 0; cur && depth < 5; cur = (cur as { cause?: unknown }).cause, depth++) {
    const code = (cur as { code?: number }).code;
    const msg = cur instanceof Error ? cur.message : String(cur);
    if (code === 14 || code === 4 || /UNAVAILABLE|DEADLINE_EXCEEDED|ECONNREFUSED|deadline/i.test(msg)) return true;
  }
  return false;
}

const BATCH = 200;
const DELIVERY_DEADLINE_MS = 5000;

/** Backoff for a row that failed: 1 s doubling to 1 min. */
function retryDelayMs(attempts: number): number {
  return Math.min(60_000, 1000 * 2 ** Math.min(attempts, 6));
}

export class OutboxRelay {
  private stopped = false;
  private wake: (() => void) | undefined;
  private loop: Promise<void> | undefined;
  private unlisten: (() => Promise<void>) | undefined;

  constructor(
    private readonly db: DbOrTx,
    private readonly pg: Sql,
    private readonly temporal: Client,
    private readonly logger: Logger,
    private readonly pollIntervalMs = 2000,
    /** Workflow types it may start: the contract's (tests add their own). */
    private readonly definitions: (name: string) => WorkflowDefinition | undefined = workflowDefinition,
  ) {}

  /** Delivers one batch of due intents. Rows are locked (SKIP LOCKED) so several relays can run. */
  async drainOnce(): Promise<RelayStats> {
    const stats: RelayStats = { delivered: 0, failed: 0, unavailable: false };
    await this.db.transaction(async (tx) => {
      const rows = await tx.execute<{ id: number; kind: string; payload: WorkflowStartIntent; attempts: number }>(sql`
        select id, kind, payload, attempts from ${outbox}
        where delivered_at is null and available_at <= now()
        order by id limit ${BATCH}
        for update skip locked`);
      for (const row of rows) {
        try {
          await this.deliver(row.kind, row.payload);
          await tx.execute(sql`update ${outbox} set delivered_at = now(), attempts = attempts + 1, last_error = null where id = ${row.id}`);
          stats.delivered++;
        } catch (e) {
          const message = e instanceof Error ? e.message : String(e);
          stats.failed++;
          if (isUnavailable(e)) {
            // Temporal is down: the row is fine and stays due; the relay pauses and retries the
            // whole backlog as soon as Temporal answers again.
            stats.unavailable = true;
            await tx.execute(sql`update ${outbox} set attempts = attempts + 1, last_error = ${message.slice(0, 1000)} where id = ${row.id}`);
            this.logger.warn({ err: message }, 'Temporal unreachable; outbox delivery paused');
            break;
          }
          await tx.execute(sql`
            update ${outbox} set attempts = attempts + 1, last_error = ${message.slice(0, 1000)},
              available_at = now() + make_interval(secs => ${retryDelayMs(row.attempts) / 1000})
            where id = ${row.id}`);
          this.logger.warn({ outboxId: row.id, err: message }, 'outbox delivery failed; will retry');
        }
      }
    });
    return stats;
  }

  private async deliver(kind: string, intent: WorkflowStartIntent): Promise<void> {
    if (kind !== 'start-workflow') throw new Error(`unknown outbox kind ${kind}`);
    const def = this.definitions(intent.workflowType);
    if (!def) throw new Error(`unknown workflow type ${intent.workflowType}`);
    // A deadline keeps a down Temporal from holding the batch's row locks for the SDK's whole
    // retry schedule; the row is simply retried later.
    await this.temporal.withDeadline(Date.now() + DELIVERY_DEADLINE_MS, () =>
      startWorkflow(this.temporal, def, {
        workflowId: intent.workflowId,
        taskQueue: intent.taskQueue,
        args: intent.args,
        memo: intent.memo,
        workflowIdConflictPolicy: WorkflowIdConflictPolicy.USE_EXISTING,
      }),
    );
  }

  /** Runs until stop(): drains on every notification and at least every pollIntervalMs. */
  async start(): Promise<void> {
    try {
      const listener = await this.pg.listen(OUTBOX_CHANNEL, () => this.wake?.());
      this.unlisten = () => listener.unlisten();
    } catch (e) {
      this.logger.warn({ err: (e as Error).message }, 'outbox LISTEN unavailable; polling only');
    }
    this.loop = (async () => {
      let pauseMs = 0;
      while (!this.stopped) {
        let more = false;
        try {
          const stats = await this.drainOnce();
          more = stats.delivered + stats.failed === BATCH && !stats.unavailable;
          pauseMs = stats.unavailable ? Math.min(Math.max(pauseMs * 2, 500), 10_000) : 0;
        } catch (e) {
          this.logger.warn({ err: (e as Error).message }, 'outbox relay round failed');
        }
        if (more) continue;
        await new Promise<void>((resolve) => {
          const timer = setTimeout(resolve, pauseMs || this.pollIntervalMs);
          this.wake = () => {
            clearTimeout(timer);
            resolve();
          };
        });
        this.wake = undefined;
      }
    })();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.wake?.();
    await this.loop;
    await this.unlisten?.().catch(() => {});
  }
}

/** Pending intents and the age of the oldest, for metrics and the replication summary. */
export async function outboxDepth(db: DbOrTx): Promise<{ pending: number; oldestAgeSeconds: number }> {
  const [row] = await db.execute<{ pending: number; oldest: number | null }>(sql`
    select count(*)::int as pending, extract(epoch from now() - min(created_at))::float8 as oldest
    from ${outbox} where delivered_at is null`);
  return { pending: row?.pending ?? 0, oldestAgeSeconds: row?.oldest ?? 0 };
}
