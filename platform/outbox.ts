// The transactional outbox: intents to start a workflow, written in the same database transaction
// as the change that causes them (a new blob placement, a mirror config), and delivered to
// Temporal by the relay whenever it is reachable. A rolled-back transaction leaves no intent; a
// committed one is delivered at least once, and the deterministic workflow id with
// USE_EXISTING makes repeated deliveries start one workflow.
import type { Client } from '@temporalio/client';
import { type Workflow, WorkflowIdConflictPolicy } from '@temporalio/common';
import { and, eq, inArray, isNull, sql, type SQL } from 'drizzle-orm';
import type { Sql } from 'postgres';
import { type WorkflowDefinition, workflowDefinition } from '../contract/index.ts';
import type { Database, DbOrTx } from '../db/client.ts';
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
  /** Not delivered before this many seconds (a fallback another transaction may supersede). */
  delaySeconds?: number;
}

/** Writes the intent to start `def` in the caller's transaction; returns the outbox row's id. */
export async function enqueueWorkflowStart<F extends Workflow>(tx: DbOrTx, def: WorkflowDefinition<F>, start: WorkflowStart<F>): Promise<number> {
  const intent: WorkflowStartIntent = {
    workflowType: def.name,
    workflowId: start.workflowId,
    taskQueue: start.taskQueue ?? def.taskQueue,
    args: start.args,
    ...(start.memo ? { memo: start.memo } : {}),
  };
  const [row] = await tx
    .insert(outbox)
    .values({
      kind: 'start-workflow',
      payload: intent as unknown as Record<string, unknown>,
      ...(start.delaySeconds ? { availableAt: sql`now() + make_interval(secs => ${start.delaySeconds})` } : {}),
    })
    .returning({ id: outbox.id });
  // Delivered on commit only, so the relay wakes up exactly when there is something to do (a
  // delayed row is found by the relay's periodic poll).
  if (!start.delaySeconds) await tx.execute(sql`select pg_notify(${OUTBOX_CHANNEL}, '')`);
  return row!.id;
}

/** Marks undelivered intents done without starting them: another intent in the caller's
 * transaction covers their work. One already delivered stays as it was. */
export async function supersedeIntents(tx: DbOrTx, ids: number[], by: string): Promise<void> {
  if (ids.length === 0) return;
  await tx
    .update(outbox)
    .set({ deliveredAt: sql`now()`, lastError: `superseded by ${by}` })
    .where(and(inArray(outbox.id, ids), isNull(outbox.deliveredAt)));
}

export interface RelayStats {
  /** Rows taken from the backlog this round. */
  claimed: number;
  delivered: number;
  /** Rows Temporal refused (retried later with backoff, or dead-lettered). */
  failed: number;
  /** Rows that reached the attempt limit this round and were dead-lettered. */
  dead: number;
  /** Temporal could not take work at all (down, overloaded, our credentials refused): the relay
   * pauses with backoff and no row is blamed. */
  paused: boolean;
}

// gRPC status codes that say nothing about the row: Temporal is unreachable or slow
// (UNAVAILABLE, DEADLINE_EXCEEDED), rate-limiting us (RESOURCE_EXHAUSTED), or refusing this
// process's credentials (UNAUTHENTICATED, PERMISSION_DENIED). Any row would fail the same way.
const PAUSE_CODES = new Set([4, 7, 8, 14, 16]);
const AUTH_CODES = new Set([7, 16]);

/** The gRPC code of a pause-worthy error anywhere down the cause chain, 14 for connection errors. */
export function pauseCode(e: unknown): number | undefined {
  // The client wraps the gRPC error ("Failed to start Workflow"); look down the cause chain.
  for (let cur: unknown = e, depth = 0; cur && depth < 5; cur = (cur as { cause?: unknown }).cause, depth++) {
    const code = (cur as { code?: unknown }).code;
    if (typeof code === 'number' && PAUSE_CODES.has(code)) return code;
    const msg = cur instanceof Error ? cur.message : String(cur);
    if (/ECONNREFUSED|ECONNRESET|UNAVAILABLE|DEADLINE_EXCEEDED|deadline/i.test(msg)) return 14;
    // A namespace that does not exist is this deployment's setting, not the row's.
    if (/namespace .*not found/i.test(msg)) return 5;
  }
  return undefined;
}

/** The error's message with its causes' ("Failed to start Workflow: 8 RESOURCE_EXHAUSTED: …"). */
function errorChain(e: unknown): string {
  const parts: string[] = [];
  for (let cur: unknown = e, depth = 0; cur && depth < 5; cur = (cur as { cause?: unknown }).cause, depth++) {
    const msg = cur instanceof Error ? cur.message : String(cur);
    if (msg && !parts.some((p) => p.includes(msg))) parts.push(msg);
  }
  return parts.join(': ');
}

export interface RelayOptions {
  /** Longest wait between rounds without a notification. */
  pollIntervalMs?: number;
  /** Rows claimed per round. */
  batchSize?: number;
  /** Start calls in flight at once. */
  concurrency?: number;
  /** Attempts Temporal may refuse a row before it is dead-lettered. */
  maxAttempts?: number;
  /** How long delivered rows are kept (for looking into what was started) before pruning. */
  retentionMs?: number;
  /** Workflow types it may start: the contract's (tests add their own). */
  definitions?: (name: string) => WorkflowDefinition | undefined;
}

const DELIVERY_DEADLINE_MS = 5000;
/** A claimed row is not due again for this long: enough for a whole batch to be delivered (each
 * call has DELIVERY_DEADLINE_MS), short enough that rows a crashed relay had claimed go out soon. */
const CLAIM_LEASE_SECONDS = 120;
const PRUNE_EVERY_MS = 60_000;
const PRUNE_BATCH = 5000;
const MAX_PAUSE_MS = 10_000;

/** Backoff for a row Temporal refused: 1 s doubling to 5 min. */
function retryDelayMs(attempts: number): number {
  return Math.min(300_000, 1000 * 2 ** Math.min(attempts, 9));
}

/** The relay's pick of due rows: oldest first, skipping rows another relay holds. Served by
 * outbox_pending_idx in id order (see test/outbox.test.ts). */
export function dueRows(limit: number): SQL {
  return sql`select id from ${outbox}
    where delivered_at is null and dead_at is null and available_at <= now()
    order by id limit ${limit}
    for update skip locked`;
}

type ClaimedRow = {
  id: number;
  kind: string;
  payload: WorkflowStartIntent;
  attempts: number;
};

export class OutboxRelay {
  private stopped = false;
  private wake: (() => void) | undefined;
  private loop: Promise<void> | undefined;
  private unlisten: (() => Promise<void>) | undefined;
  private lastPrune = 0;
  /** The current pause after Temporal could not take work (0: not paused). */
  private pauseMs = 0;
  private readonly opts: Required<RelayOptions>;

  constructor(
    private readonly db: Database,
    private readonly pg: Sql,
    private readonly temporal: Client,
    private readonly logger: Logger,
    options: RelayOptions = {},
  ) {
    this.opts = {
      pollIntervalMs: 2000,
      batchSize: 100,
      concurrency: 8,
      maxAttempts: 15,
      retentionMs: 3600_000,
      definitions: workflowDefinition,
      ...options,
    };
  }

  /**
   * One round: claims a batch of due rows in a short transaction (SKIP LOCKED, so relays share the
   * backlog; the claim pushes available_at out by a lease, so a relay that dies mid-round leaves
   * them due again soon), starts their workflows with bounded concurrency outside any
   * transaction, and records each outcome. Temporal being unable to take work pauses the round:
   * the rest of the batch is released untouched.
   */
  async drainOnce(): Promise<RelayStats> {
    const stats: RelayStats = { claimed: 0, delivered: 0, failed: 0, dead: 0, paused: false };
    await this.pruneDelivered();
    const rows = await this.db.transaction(async (tx) =>
      tx.execute<ClaimedRow>(sql`
        with due as (${dueRows(this.opts.batchSize)})
        update ${outbox} o set available_at = now() + make_interval(secs => ${CLAIM_LEASE_SECONDS})
        from due where o.id = due.id
        returning o.id, o.kind, o.payload, o.attempts`),
    );
    const claimed = [...rows].sort((a, b) => a.id - b.id);
    stats.claimed = claimed.length;
    if (claimed.length === 0) return stats;

    const delivered: number[] = [];
    let next = 0;
    const lane = async (): Promise<void> => {
      while (!stats.paused && next < claimed.length) {
        const row = claimed[next++]!;
        try {
          await this.deliver(row.kind, row.payload);
          delivered.push(row.id);
        } catch (e) {
          await this.recordFailure(row, e, stats);
        }
      }
    };
    await Promise.all(Array.from({ length: Math.min(this.opts.concurrency, claimed.length) }, lane));

    if (delivered.length > 0) {
      await this.db
        .update(outbox)
        .set({ deliveredAt: sql`now()`, attempts: sql`${outbox.attempts} + 1`, lastError: null })
        .where(inArray(outbox.id, delivered));
      stats.delivered = delivered.length;
    }
    // Rows a pause kept from being tried are due again at once (the relay's backoff paces them).
    const untried = claimed.slice(next).map((r) => r.id);
    if (untried.length > 0) await this.db.update(outbox).set({ availableAt: sql`now()` }).where(inArray(outbox.id, untried));
    return stats;
  }

  private async recordFailure(row: ClaimedRow, e: unknown, stats: RelayStats): Promise<void> {
    const message = errorChain(e).slice(0, 1000);
    const code = pauseCode(e);
    if (code !== undefined) {
      // Not the row's fault: it stays due, its attempts untouched, and the relay pauses.
      if (!stats.paused) {
        const log = { err: message, code };
        if (AUTH_CODES.has(code)) this.logger.error(log, 'Temporal refused the relay\'s credentials; outbox delivery paused');
        else this.logger.warn(log, 'Temporal cannot take work; outbox delivery paused');
      }
      stats.paused = true;
      await this.db.update(outbox).set({ availableAt: sql`now()`, lastError: message }).where(eq(outbox.id, row.id));
      return;
    }
    stats.failed++;
    const attempts = row.attempts + 1;
    if (attempts >= this.opts.maxAttempts) {
      stats.dead++;
      await this.db.update(outbox).set({ attempts, lastError: message, deadAt: sql`now()` }).where(eq(outbox.id, row.id));
      this.logger.error({ outboxId: row.id, workflowId: row.payload.workflowId, attempts, err: message }, 'outbox row dead-lettered: Temporal refused it on every attempt');
      return;
    }
    await this.db
      .update(outbox)
      .set({ attempts, lastError: message, availableAt: sql`now() + make_interval(secs => ${retryDelayMs(row.attempts) / 1000})` })
      .where(eq(outbox.id, row.id));
    this.logger.warn({ outboxId: row.id, attempts, err: message }, 'outbox delivery failed; will retry');
  }

  /** Deletes rows delivered longer ago than the retention, a bounded batch at most once a minute. */
  private async pruneDelivered(): Promise<void> {
    if (Date.now() - this.lastPrune < PRUNE_EVERY_MS) return;
    this.lastPrune = Date.now();
    await this.db.execute(sql`
      delete from ${outbox} where id in (
        select id from ${outbox}
        where delivered_at is not null and delivered_at < now() - make_interval(secs => ${this.opts.retentionMs / 1000})
        order by delivered_at limit ${PRUNE_BATCH})`);
  }

  private async deliver(kind: string, intent: WorkflowStartIntent): Promise<void> {
    if (kind !== 'start-workflow') throw new Error(`unknown outbox kind ${kind}`);
    const def = this.opts.definitions(intent.workflowType);
    if (!def) throw new Error(`unknown workflow type ${intent.workflowType}`);
    // A deadline keeps a down Temporal from holding the round for the SDK's whole retry
    // schedule; the relay pauses and the row is simply retried later.
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
      // A paused relay is not woken by new rows: Temporal could not take the old ones either.
      const listener = await this.pg.listen(OUTBOX_CHANNEL, () => {
        if (!this.pauseMs) this.wake?.();
      });
      this.unlisten = () => listener.unlisten();
    } catch (e) {
      this.logger.warn({ err: (e as Error).message }, 'outbox LISTEN unavailable; polling only');
    }
    this.loop = (async () => {
      while (!this.stopped) {
        let more = false;
        try {
          const stats = await this.drainOnce();
          more = stats.claimed === this.opts.batchSize && !stats.paused;
          this.pauseMs = stats.paused ? Math.min(Math.max(this.pauseMs * 2, 500), MAX_PAUSE_MS) : 0;
        } catch (e) {
          this.logger.warn({ err: (e as Error).message }, 'outbox relay round failed');
        }
        if (more) continue;
        await new Promise<void>((resolve) => {
          const timer = setTimeout(resolve, this.pauseMs || this.opts.pollIntervalMs);
          this.wake = () => {
            clearTimeout(timer);
            resolve();
          };
          if (this.stopped) resolve();
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

/** Pending intents and the age of the oldest, for metrics and the replication summary; dead
 * (dead-lettered) rows are counted apart: they wait for an operator, not for Temporal. */
export async function outboxDepth(db: DbOrTx): Promise<{ pending: number; oldestAgeSeconds: number; dead: number }> {
  const [row] = await db.execute<{ pending: number; oldest: number | null; dead: number }>(sql`
    select count(*) filter (where dead_at is null)::int as pending,
      extract(epoch from now() - min(created_at) filter (where dead_at is null))::float8 as oldest,
      count(*) filter (where dead_at is not null)::int as dead
    from ${outbox} where delivered_at is null`);
  return { pending: row?.pending ?? 0, oldestAgeSeconds: row?.oldest ?? 0, dead: row?.dead ?? 0 };
}
