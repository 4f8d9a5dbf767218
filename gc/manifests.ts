// Untagged manifests expire after the grace period (Quay's time machine; a namespace may set its
// own, gc_grace_seconds, which also wins over a run's --grace): a manifest is kept
// while it is tagged, younger than the grace period, a child of a kept index, the subject of a
// kept referrer, or a referrer of a kept manifest. Everything else is deleted, in batches, each
// re-checked after its rows are locked (a tag pushed meanwhile wins: putManifest takes FOR KEY
// SHARE on the manifest row it tags, so the two serialize).
import { sql } from 'drizzle-orm';
import type { DbOrTx } from '../db/client.ts';

export interface ExpiredManifests {
  /** Deleted (in a dry run: that would be deleted). */
  count: number;
  /** Digests of the first few, for the report. */
  sample: string[];
  /** The last manifest id examined: the next page starts after it. */
  nextCursor: number;
  /** No expired manifest after the cursor. */
  done: boolean;
}

/** A manifest's grace period: its namespace's own, else the run's (MERIDIAN_GC_GRACE or --grace).
 * A fragment for a query where `m` is the manifest. */
export const manifestGrace = (graceSeconds: number) => sql`coalesce(
  (select n.gc_grace_seconds from repositories r join namespaces n on n.id = r.namespace_id where r.id = m.repository_id),
  ${graceSeconds})`;

/** `with recursive … kept(id)`: the manifests GC keeps (a prefix for a query using `kept`). */
export const keptSet = (graceSeconds: number) => sql`
  with recursive edges(from_id, to_id) as (
    select parent_id, child_id from manifest_children
    union all
    select r.id, s.id from manifests r join manifests s on s.repository_id = r.repository_id and s.digest = r.subject_digest
    union all
    select s.id, r.id from manifests r join manifests s on s.repository_id = r.repository_id and s.digest = r.subject_digest
  ),
  kept(id) as (
    select m.id from manifests m
    where m.created_at >= now() - make_interval(secs => ${manifestGrace(graceSeconds)})
       or exists (select 1 from tags t where t.manifest_id = m.id)
    union
    select e.to_id from edges e join kept k on k.id = e.from_id
  )`;

/**
 * Deletes (dry run: counts) the expired untagged manifests among the next `limit` candidates
 * after manifest id `afterId`; their blob and child links go with them (the blobs themselves are
 * the blob collector's). Pages by id, so a dry run, which deletes nothing, still sees them all.
 */
export async function expireUntaggedManifests(
  db: DbOrTx,
  input: { graceSeconds: number; limit: number; dryRun: boolean; afterId?: number },
): Promise<ExpiredManifests> {
  const afterId = input.afterId ?? 0;
  const candidates = () => sql`
    ${keptSet(input.graceSeconds)}
    select m.id, m.digest from manifests m where m.id > ${afterId} and not exists (select 1 from kept k where k.id = m.id)
    order by m.id limit ${input.limit}`;
  const page = (rows: { id: number }[]) => ({
    nextCursor: rows.length > 0 ? Number(rows[rows.length - 1]!.id) : afterId,
    done: rows.length < input.limit,
  });
  if (input.dryRun) {
    const rows = await db.execute<{ id: number; digest: string }>(candidates());
    return { count: rows.length, sample: rows.slice(0, 10).map((r) => r.digest), ...page(rows) };
  }
  return db.transaction(async (tx) => {
    const rows = await tx.execute<{ id: number; digest: string }>(sql`${candidates()} for update of m skip locked`);
    if (rows.length === 0) return { count: 0, sample: [], nextCursor: afterId, done: true };
    const list = sql.join(
      rows.map((r) => sql`${Number(r.id)}`),
      sql`, `,
    );
    // Re-checked by a statement that starts after the locks were granted: a tag or a parent
    // committed meanwhile keeps the manifest (parents in this same batch do not).
    const deleted = await tx.execute<{ digest: string }>(sql`
      delete from manifests m where m.id in (${list})
        and m.created_at < now() - make_interval(secs => ${manifestGrace(input.graceSeconds)})
        and not exists (select 1 from tags t where t.manifest_id = m.id)
        and not exists (select 1 from manifest_children c where c.child_id = m.id and c.parent_id not in (${list}))
        and not exists (select 1 from manifests r where r.repository_id = m.repository_id and r.subject_digest = m.digest and r.id not in (${list}))
        and not exists (select 1 from manifests s where s.repository_id = m.repository_id and s.digest = m.subject_digest and s.id not in (${list}))
      returning m.digest`);
    return { count: deleted.length, sample: deleted.slice(0, 10).map((r) => r.digest), ...page(rows) };
  });
}
