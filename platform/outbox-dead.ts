// Dead-lettered outbox intents: starts Temporal refused on every one of the relay's attempts (an
// unknown workflow type after a rollback, arguments the server rejects). They wait for an
// operator, who reads why (GET /api/v1/outbox, `meridian outbox`) and requeues them once the
// cause is fixed; meridian_outbox_dead counts them for an alert.
import { and, desc, eq, isNotNull, isNull, sql } from 'drizzle-orm';
import type { DbOrTx } from '../db/client.ts';
import { outbox } from '../db/schema.ts';
import { DomainError } from './errors.ts';
import { outboxDepth, type WorkflowStartIntent } from './outbox.ts';

export interface DeadIntent {
  id: number;
  workflow_type: string;
  workflow_id: string;
  attempts: number;
  last_error: string | null;
  created_at: string;
  dead_at: string;
}

export interface OutboxView {
  pending: number;
  oldest_pending_age_seconds: number;
  dead: number;
  /** The most recently dead-lettered intents, newest first. */
  dead_intents: DeadIntent[];
}

export async function outboxView(db: DbOrTx, limit = 100): Promise<OutboxView> {
  const depth = await outboxDepth(db);
  const rows = await db.select().from(outbox).where(and(isNull(outbox.deliveredAt), isNotNull(outbox.deadAt))).orderBy(desc(outbox.id)).limit(limit);
  return {
    pending: depth.pending,
    oldest_pending_age_seconds: depth.oldestAgeSeconds,
    dead: depth.dead,
    dead_intents: rows.map((r) => {
      const intent = r.payload as unknown as Partial<WorkflowStartIntent>;
      return {
        id: r.id,
        workflow_type: String(intent.workflowType ?? r.kind),
        workflow_id: String(intent.workflowId ?? ''),
        attempts: r.attempts,
        last_error: r.lastError,
        created_at: r.createdAt.toISOString(),
        dead_at: r.deadAt!.toISOString(),
      };
    }),
  };
}

/** Puts a dead intent back in the relay's queue with a fresh attempt budget. */
export async function requeueDeadIntent(db: DbOrTx, id: number): Promise<{ id: number; requeued: true }> {
  const updated = await db
    .update(outbox)
    .set({ deadAt: null, attempts: 0, availableAt: sql`now()` })
    .where(and(eq(outbox.id, id), isNotNull(outbox.deadAt), isNull(outbox.deliveredAt)))
    .returning({ id: outbox.id });
  if (updated.length === 0) throw new DomainError('not_found', `no dead-lettered outbox intent ${id}`);
  // Wake the relay: the intent is due now.
  await db.execute(sql`select pg_notify('meridian_outbox', '')`);
  return { id, requeued: true };
}
