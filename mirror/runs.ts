// The bookkeeping of a sync run in the database: claiming the mirror (SYNCING, with Quay's
// expiration date), the snapshot of the repository's tags that a rollback restores, per-tag
// results as they come, removing tags that no longer match, the rollback itself, and the final
// status with Quay's retry counting (sync_retries_remaining down on a failure, back to 3 on a
// success or after the last retry; 0 after a cancel) and next start date.
import { and, eq, inArray, notInArray, sql } from 'drizzle-orm';
import type { DbOrTx } from '../db/client.ts';
import { manifests, mirrorConfigs, mirrorRuns, repositories, tags } from '../db/schema.ts';
import { findRepository, findRepositoryById, type Repository } from '../registry/repositories.ts';
import { MAX_SYNC_DURATION_SECONDS, MAX_SYNC_RETRIES, type MirrorConfigRow, type MirrorRunRow } from './config.ts';
import type { TagResult } from './copy.ts';
import { parseReference } from './reference.ts';

export type RunStatus = 'SUCCESS' | 'FAIL' | 'CANCEL';

export interface BegunRun {
  kind: 'run';
  runRowId: number;
  configId: number;
  repository: string;
  externalReference: string;
  upstreamHost: string;
  rollbackOnFailure: boolean;
  trigger: 'schedule' | 'manual';
  tagsBefore: number;
}

export type BeginResult = BegunRun | { kind: 'skipped'; reason: string; configMissing: boolean };

async function repositoryTags(db: DbOrTx, repositoryId: number): Promise<Record<string, string>> {
  const rows = await db
    .select({ name: tags.name, digest: manifests.digest })
    .from(tags)
    .innerJoin(manifests, eq(tags.manifestId, manifests.id))
    .where(eq(tags.repositoryId, repositoryId));
  return Object.fromEntries(rows.map((r) => [r.name, r.digest]));
}

/** Claims the mirror for this workflow run. Idempotent for the same run id (activity retries). */
export async function beginRun(db: DbOrTx, input: { repository: string; workflowId: string; runId: string }): Promise<BeginResult> {
  return db.transaction(async (tx) => {
    const repo = await findRepository(tx, input.repository);
    const [cfg] = repo ? await tx.select().from(mirrorConfigs).where(eq(mirrorConfigs.repositoryId, repo.id)).for('update') : [];
    if (!repo || !cfg) return { kind: 'skipped', reason: 'the repository has no mirror configuration', configMissing: true };
    const base = {
      configId: cfg.id,
      repository: repo.fullName,
      externalReference: cfg.externalReference,
      upstreamHost: parseReference(cfg.externalReference).apiAuthority.toLowerCase(),
      rollbackOnFailure: cfg.rollbackOnFailure,
    };
    const [mine] = await tx.select().from(mirrorRuns).where(eq(mirrorRuns.runId, input.runId));
    if (mine) {
      return { kind: 'run', ...base, runRowId: mine.id, trigger: mine.trigger === 'manual' ? 'manual' : 'schedule', tagsBefore: Object.keys(mine.tagsBefore ?? {}).length };
    }
    if (repo.state !== 'mirror') return { kind: 'skipped', reason: 'the repository is not in the MIRROR state', configMissing: false };
    if (cfg.syncStatus === 'CANCEL') return { kind: 'skipped', reason: 'the last sync was cancelled; scheduled syncs wait for a sync-now', configMissing: false };
    if (!cfg.isEnabled && cfg.syncStatus !== 'SYNC_NOW') return { kind: 'skipped', reason: 'the mirror is disabled', configMissing: false };
    // The schedule never overlaps runs, so a run still marked SYNCING was abandoned (its workflow
    // terminated or timed out): close it.
    await tx
      .update(mirrorRuns)
      .set({ status: 'FAIL', reason: 'abandoned: its workflow ended without finishing the run', finishedAt: sql`now()` })
      .where(and(eq(mirrorRuns.configId, cfg.id), eq(mirrorRuns.status, 'SYNCING')));
    const snapshot = await repositoryTags(tx, repo.id);
    const trigger = cfg.syncStatus === 'SYNC_NOW' ? 'manual' : 'schedule';
    const [run] = await tx
      .insert(mirrorRuns)
      .values({ configId: cfg.id, workflowId: input.workflowId, runId: input.runId, status: 'SYNCING', tagsBefore: snapshot, trigger })
      .returning({ id: mirrorRuns.id });
    await tx
      .update(mirrorConfigs)
      .set({ syncStatus: 'SYNCING', syncExpirationDate: sql`now() + make_interval(secs => ${MAX_SYNC_DURATION_SECONDS})` })
      .where(eq(mirrorConfigs.id, cfg.id));
    return { kind: 'run', ...base, runRowId: run!.id, trigger, tagsBefore: Object.keys(snapshot).length };
  });
}

export interface RunContext {
  run: MirrorRunRow;
  config: MirrorConfigRow;
  repo: Repository;
}

export async function loadRun(db: DbOrTx, runRowId: number): Promise<RunContext | undefined> {
  const [row] = await db
    .select({ run: mirrorRuns, config: mirrorConfigs })
    .from(mirrorRuns)
    .innerJoin(mirrorConfigs, eq(mirrorRuns.configId, mirrorConfigs.id))
    .where(eq(mirrorRuns.id, runRowId));
  if (!row) return undefined;
  const repo = await findRepositoryById(db, row.config.repositoryId);
  return repo ? { ...row, repo } : undefined;
}

export async function savePlan(db: DbOrTx, runRowId: number, planned: string[]): Promise<void> {
  await db.update(mirrorRuns).set({ plannedTags: planned }).where(eq(mirrorRuns.id, runRowId));
}

/** Appends one tag's outcome to the run (and its bytes to the run's total). */
export async function recordTagResult(db: DbOrTx, runRowId: number, r: TagResult): Promise<void> {
  const entry = { tag: r.tag, status: r.status, ...(r.digest ? { digest: r.digest } : {}), ...(r.bytes ? { bytes: r.bytes } : {}), ...(r.error ? { error: r.error } : {}) };
  await db.execute(sql`
    update ${mirrorRuns} set
      tag_results = coalesce(tag_results, '[]'::jsonb) || ${JSON.stringify([entry])}::jsonb,
      bytes = bytes + ${r.bytes ?? 0}
    where id = ${runRowId}`);
}

/** Deletes the local tags that are not (or no longer) upstream tags matching the globs. */
export async function pruneTags(db: DbOrTx, runRowId: number): Promise<string[]> {
  const ctx = await loadRun(db, runRowId);
  if (!ctx) return [];
  const gone = new Set((ctx.run.tagResults ?? []).filter((t) => t.status === 'gone').map((t) => t.tag));
  const keep = (ctx.run.plannedTags ?? []).filter((t) => !gone.has(t));
  const deleted = await db
    .delete(tags)
    .where(and(eq(tags.repositoryId, ctx.repo.id), keep.length ? notInArray(tags.name, keep) : undefined))
    .returning({ name: tags.name });
  const names = deleted.map((d) => d.name).sort();
  for (const name of names) await recordTagResult(db, runRowId, { tag: name, status: 'deleted' });
  return names;
}

/** Puts the repository's tags back exactly as they were when the run began. */
export async function rollbackRun(db: DbOrTx, runRowId: number): Promise<{ restored: number; removed: number; missing: string[] }> {
  const ctx = await loadRun(db, runRowId);
  if (!ctx) return { restored: 0, removed: 0, missing: [] };
  const before = ctx.run.tagsBefore ?? {};
  return db.transaction(async (tx) => {
    const names = Object.keys(before);
    const removed = await tx
      .delete(tags)
      .where(and(eq(tags.repositoryId, ctx.repo.id), names.length ? notInArray(tags.name, names) : undefined))
      .returning({ name: tags.name });
    const digests = [...new Set(Object.values(before))];
    const rows = digests.length
      ? await tx
          .select({ id: manifests.id, digest: manifests.digest })
          .from(manifests)
          .where(and(eq(manifests.repositoryId, ctx.repo.id), inArray(manifests.digest, digests)))
      : [];
    const byDigest = new Map(rows.map((r) => [r.digest, r.id]));
    const missing: string[] = [];
    let restored = 0;
    for (const [name, digest] of Object.entries(before)) {
      const manifestId = byDigest.get(digest);
      if (manifestId === undefined) {
        missing.push(name);
        continue;
      }
      const changed = await tx
        .insert(tags)
        .values({ repositoryId: ctx.repo.id, name, manifestId })
        .onConflictDoUpdate({
          target: [tags.repositoryId, tags.name],
          set: { manifestId, updatedAt: sql`now()` },
          setWhere: sql`${tags.manifestId} <> ${manifestId}`,
        })
        .returning({ id: tags.id });
      restored += changed.length;
    }
    return { restored, removed: removed.length, missing };
  });
}

export interface RunSummary {
  runRowId: number;
  repository: string;
  externalReference: string;
  status: RunStatus;
  /** The config's sync_status after the run (CANCEL wins over the run's own outcome). */
  syncStatus: MirrorConfigRow['syncStatus'];
  reason: string | null;
  trigger: string | null;
  startedAt: string;
  finishedAt: string;
  durationSeconds: number;
  bytes: number;
  counts: Record<string, number>;
  tags: { tag: string; status: string; digest?: string; error?: string }[];
  retriesRemaining: number;
}

/** Quay's release_mirror: the next start time after now on the interval grid. */
export function nextStartDate(start: Date, intervalSeconds: number, now = new Date()): Date {
  const elapsed = Math.floor((now.getTime() - start.getTime()) / 1000);
  if (elapsed < 0) return start;
  return new Date(now.getTime() + (intervalSeconds - (elapsed % intervalSeconds)) * 1000);
}

export async function finishRun(db: DbOrTx, runRowId: number, status: RunStatus, reason: string | null): Promise<RunSummary | undefined> {
  return db.transaction(async (tx) => {
    const [current] = await tx.select().from(mirrorRuns).where(eq(mirrorRuns.id, runRowId)).for('update');
    if (!current) return undefined;
    // Idempotent: a retried finish does not count a failure twice.
    const [run] =
      current.status === 'SYNCING'
        ? await tx.update(mirrorRuns).set({ status, reason, finishedAt: sql`now()` }).where(eq(mirrorRuns.id, runRowId)).returning()
        : [current];
    const [cfg] = await tx.select().from(mirrorConfigs).where(eq(mirrorConfigs.id, run!.configId)).for('update');
    const [repo] = cfg ? await tx.select().from(repositories).where(eq(repositories.id, cfg.repositoryId)) : [];
    let syncStatus = cfg?.syncStatus ?? status;
    let retries = cfg?.syncRetriesRemaining ?? 0;
    if (cfg && current.status === 'SYNCING') {
      const changes: Partial<typeof mirrorConfigs.$inferInsert> = { syncExpirationDate: null };
      if (cfg.syncStatus === 'CANCEL' || status === 'CANCEL') {
        // A cancel asked for while the run went on stands, whatever the run did after it.
        syncStatus = 'CANCEL';
        retries = 0;
      } else if (status === 'SUCCESS') {
        syncStatus = 'SUCCESS';
        retries = MAX_SYNC_RETRIES;
        changes.syncStartDate = nextStartDate(cfg.syncStartDate, cfg.syncInterval);
      } else {
        syncStatus = 'FAIL';
        retries = Math.max(0, cfg.syncRetriesRemaining - 1);
        // After the last retry, wait for the next interval with a full set of retries (Quay).
        if (retries < 1) {
          retries = MAX_SYNC_RETRIES;
          changes.syncStartDate = nextStartDate(cfg.syncStartDate, cfg.syncInterval);
        }
      }
      changes.syncStatus = syncStatus;
      changes.syncRetriesRemaining = retries;
      await tx.update(mirrorConfigs).set(changes).where(eq(mirrorConfigs.id, cfg.id));
    }
    const results = run!.tagResults ?? [];
    const counts: Record<string, number> = {};
    for (const t of results) counts[t.status] = (counts[t.status] ?? 0) + 1;
    const ns = repo ? (await findRepositoryById(tx, repo.id))?.fullName : undefined;
    const finishedAt = run!.finishedAt ?? new Date();
    return {
      runRowId,
      repository: ns ?? '',
      externalReference: cfg?.externalReference ?? '',
      status: run!.status as RunStatus,
      syncStatus,
      reason: run!.reason,
      trigger: run!.trigger,
      startedAt: run!.startedAt.toISOString(),
      finishedAt: finishedAt.toISOString(),
      durationSeconds: (finishedAt.getTime() - run!.startedAt.getTime()) / 1000,
      bytes: run!.bytes,
      counts,
      tags: results,
      retriesRemaining: retries,
    };
  });
}
