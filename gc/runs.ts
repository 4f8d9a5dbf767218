// The record of finished garbage-collection runs: written by the workflow's last activity, read
// by the management API (last run, last dry run, reclaimable and reclaimed bytes per location)
// and by /metrics. Marked copies still waiting for their location (a region that was down) are
// read live from the placements.
import { and, desc, eq, sql } from 'drizzle-orm';
import type { GcLocationTally, GcProgress } from '../contract/gc.ts';
import type { DbOrTx } from '../db/client.ts';
import { gcRuns } from '../db/schema.ts';
import { gcPurgeable } from './blobs.ts';

export type GcOutcome = 'completed' | 'partial' | 'failed';

export interface GcRunRecord {
  workflowId: string;
  runId: string;
  dryRun: boolean;
  /** ISO time the run (its first execution) started. */
  startedAt: string;
  outcome: GcOutcome;
  report: GcProgress;
  error?: string;
}

/** Records a finished run (idempotent: a retried activity rewrites the same row). */
export async function recordGcRun(db: DbOrTx, run: GcRunRecord): Promise<void> {
  const row = {
    workflowId: run.workflowId,
    runId: run.runId,
    dryRun: run.dryRun,
    outcome: run.outcome,
    startedAt: new Date(run.startedAt),
    report: run.report as unknown as Record<string, unknown>,
    error: run.error ?? null,
  };
  await db
    .insert(gcRuns)
    .values(row)
    .onConflictDoUpdate({ target: gcRuns.runId, set: { ...row, finishedAt: sql`now()` } });
}

export interface GcRunView {
  workflowId: string;
  runId: string;
  dryRun: boolean;
  outcome: GcOutcome;
  startedAt: string;
  finishedAt: string;
  error: string | null;
  report: GcProgress;
}

function view(r: typeof gcRuns.$inferSelect): GcRunView {
  return {
    workflowId: r.workflowId,
    runId: r.runId,
    dryRun: r.dryRun,
    outcome: r.outcome,
    startedAt: r.startedAt.toISOString(),
    finishedAt: r.finishedAt.toISOString(),
    error: r.error,
    report: r.report as unknown as GcProgress,
  };
}

/** The newest finished runs, newest first (dryRun: only dry runs, or only real runs). */
export async function recentGcRuns(db: DbOrTx, opts: { limit: number; dryRun?: boolean }): Promise<GcRunView[]> {
  const rows = await db
    .select()
    .from(gcRuns)
    .where(opts.dryRun === undefined ? undefined : and(eq(gcRuns.dryRun, opts.dryRun)))
    .orderBy(desc(gcRuns.finishedAt), desc(gcRuns.id))
    .limit(opts.limit);
  return rows.map(view);
}

export interface GcSummary {
  lastRun: GcRunView | null;
  lastDryRun: GcRunView | null;
  /** Per location: what the last dry run found reclaimable (copies, bytes). */
  reclaimable: GcLocationTally[];
  /** Per location: copies marked by a run and not deleted yet (their location was down). */
  pending: GcLocationTally[];
  /** Per location: everything every recorded run deleted. */
  reclaimed: GcLocationTally[];
}

export async function gcSummary(db: DbOrTx): Promise<GcSummary> {
  const [[lastRun], [lastDryRun], pending, reclaimed] = await Promise.all([
    recentGcRuns(db, { limit: 1, dryRun: false }),
    recentGcRuns(db, { limit: 1, dryRun: true }),
    db.execute<{ location: string; blobs: number; bytes: number }>(sql`
      select l.name as location, count(*)::int as blobs, coalesce(sum(b.size), 0)::float8 as bytes
      from blob_placements p join blobs b on b.id = p.blob_id join storage_locations l on l.id = p.location_id
      where ${gcPurgeable} group by l.name order by l.name`),
    db.execute<{ location: string; blobs: number; bytes: number }>(sql`
      select t->>'location' as location, sum((t->>'blobs')::bigint)::float8 as blobs, sum((t->>'bytes')::bigint)::float8 as bytes
      from gc_runs g, jsonb_array_elements(g.report->'reclaimedPerLocation') t
      where not g.dry_run group by 1 order by 1`),
  ]);
  const tally = (rows: { location: string; blobs: number; bytes: number }[]) =>
    rows.map((r) => ({ location: r.location, blobs: Number(r.blobs), bytes: Number(r.bytes) }));
  return {
    lastRun: lastRun ?? null,
    lastDryRun: lastDryRun ?? null,
    reclaimable: lastDryRun?.report.markedPerLocation ?? [],
    pending: tally(pending),
    reclaimed: tally(reclaimed),
  };
}

/** Prometheus text for garbage collection (read at scrape time). */
export function gcExposition(s: GcSummary): string {
  const lines: string[] = [];
  const metric = (name: string, type: string, help: string, samples: [string, number][]) => {
    lines.push(`# HELP ${name} ${help}`, `# TYPE ${name} ${type}`);
    for (const [labels, v] of samples) lines.push(`${name}${labels} ${v}`);
  };
  const runs = [
    ['false', s.lastRun],
    ['true', s.lastDryRun],
  ] as const;
  metric(
    'meridian_gc_last_run_timestamp_seconds',
    'gauge',
    'When the last garbage-collection run (dry_run="true": dry run) finished.',
    runs.filter(([, r]) => r).map(([d, r]) => [`{dry_run="${d}"}`, Date.parse(r!.finishedAt) / 1000]),
  );
  metric(
    'meridian_gc_last_run_success',
    'gauge',
    '1 when the last run completed, 0 when it failed or a location gave up (outcome label).',
    runs.filter(([, r]) => r).map(([d, r]) => [`{dry_run="${d}",outcome="${r!.outcome}"}`, r!.outcome === 'completed' ? 1 : 0]),
  );
  metric(
    'meridian_gc_reclaimable_bytes',
    'gauge',
    'Bytes the last dry run found reclaimable, per location.',
    s.reclaimable.map((t) => [`{location="${t.location}"}`, t.bytes]),
  );
  metric(
    'meridian_gc_pending_bytes',
    'gauge',
    'Bytes marked by garbage collection and not deleted yet (their location was unavailable), per location.',
    s.pending.map((t) => [`{location="${t.location}"}`, t.bytes]),
  );
  metric(
    'meridian_gc_reclaimed_bytes_total',
    'counter',
    'Bytes garbage collection deleted, per location (all recorded runs).',
    s.reclaimed.map((t) => [`{location="${t.location}"}`, t.bytes]),
  );
  metric(
    'meridian_gc_reclaimed_copies_total',
    'counter',
    'Blob copies garbage collection deleted, per location (all recorded runs).',
    s.reclaimed.map((t) => [`{location="${t.location}"}`, t.blobs]),
  );
  return lines.join('\n') + '\n';
}
