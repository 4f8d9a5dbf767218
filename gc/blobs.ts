// Garbage collection of blobs: mark, then per-location sweep, then the rows.
//
// The deletion-pending protocol (why nothing a push, mount, mirror copy or replication brings
// back is ever lost):
//   1. mark    — under a FOR UPDATE lock of the blob row, a blob no manifest references and that
//                nothing touched within the grace period has its available placements set to
//                `deleting` (its damaged ones straight to `purging`: never revived). A deleting
//                placement is not served, but its object is untouched, so anything referencing
//                the blob again (a manifest PUT, a push of the same digest) turns it back to
//                `available` under the same row locks (registry/blobs.ts).
//   2. purge   — per location, on that location's task queue: `deleting` → `purging` (a row lock
//                on the placement; from here nobody may revive it: a push brings its own object
//                under a key nobody else writes and takes the placement over), then the object
//                recorded at that moment is deleted, then the row if it is still purging.
//                The orphan sweep removes an object no row accounts for the same way (gc/orphans.ts),
//                with `purging` placements of its own: `purge_owner` says whose a purging
//                placement is, and GC claims, counts and deletes only its own (gcPurgeable).
//   3. finish  — a blob row left with no placement and no manifest is deleted, again under
//                FOR UPDATE, re-checked by a statement started after the lock was granted
//                (commitBlob takes FOR KEY SHARE on the row, so the two serialize).
import { sql } from 'drizzle-orm';
import type { DbOrTx } from '../db/client.ts';
import type { LocationRegistry } from '../storage/locations.ts';
import { placementKey } from '../storage/paths.ts';
import { keptSet } from './manifests.ts';

/** How long an orphan sweep may hold a `purging` placement (its claim, one object's deletion, its
 * release) before GC takes it over: a sweep stopped in between left it, and nobody else would
 * ever delete the row. */
const STALE_ORPHAN_CLAIM = sql`interval '1 hour'`;

/** Placements (`p`) GC's purge deletes: those it marked, and purging ones that are its own (or from
 * before owners were recorded), or an orphan sweep's claim gone stale. A live orphan-sweep claim
 * is not GC's: taking it over made a run count the sweep's object as reclaimed garbage. */
export const gcPurgeable = sql`(p.state = 'deleting' or (p.state = 'purging' and (p.purge_owner is distinct from 'orphans' or p.purge_claimed_at < now() - ${STALE_ORPHAN_CLAIM})))`;

export interface GcBlobDeps {
  db: DbOrTx;
  locations: LocationRegistry;
}

/** `in (…)` for a list of ids (never empty: callers return early). */
function ids(list: number[]) {
  return sql.join(
    list.map((id) => sql`${id}`),
    sql`, `,
  );
}

/** A blob's grace period: the longest of those of the namespaces it is linked in (each its own
 * gc_grace_seconds, else the run's), the run's when it is linked nowhere. `b` is the blob. */
const blobGrace = (graceSeconds: number) => sql`coalesce(
  (select max(coalesce(n.gc_grace_seconds, ${graceSeconds})) from repository_blobs rb
     join repositories r on r.id = rb.repository_id join namespaces n on n.id = r.namespace_id
   where rb.blob_id = b.id),
  ${graceSeconds})`;

/** The candidate condition: unreferenced, and nothing (push, link, row) newer than the blob's
 * grace period. `keptOnly`: references from manifests about to expire do not count (a dry run's
 * forecast, the query then needs the `kept` set of gc/manifests.ts). */
function unreferenced(graceSeconds: number, keptOnly = false) {
  const cutoff = sql`(now() - make_interval(secs => ${blobGrace(graceSeconds)}))`;
  const referenced = keptOnly
    ? sql`exists (select 1 from manifest_blobs mb join kept k on k.id = mb.manifest_id where mb.blob_id = b.id)`
    : sql`exists (select 1 from manifest_blobs mb where mb.blob_id = b.id)`;
  return sql`
    not ${referenced}
    and b.created_at < ${cutoff}
    and not exists (select 1 from blob_placements p where p.blob_id = b.id and p.verified_at >= ${cutoff})
    and not exists (select 1 from repository_blobs rb where rb.blob_id = b.id and rb.created_at >= ${cutoff})`;
}

export interface LocationTally {
  location: string;
  blobs: number;
  bytes: number;
}

export interface MarkPage {
  /** Blobs examined in this page (by id). */
  scanned: number;
  /** Blobs marked (or, in a dry run, that would be). */
  marked: number;
  bytes: number;
  perLocation: LocationTally[];
  nextCursor: number;
  done: boolean;
}

/**
 * Marks (or with dryRun only counts) the garbage among the next `limit` blobs after `afterBlobId`:
 * blobs no manifest references, created, placed, verified and linked before their grace period
 * (blobGrace) began.
 */
export async function markGarbage(
  d: GcBlobDeps,
  input: { graceSeconds: number; afterBlobId: number; limit: number; dryRun: boolean },
): Promise<MarkPage> {
  await d.locations.fresh();
  const page = await d.db.execute<{ id: number }>(sql`
    select b.id from blobs b where b.id > ${input.afterBlobId} order by b.id limit ${input.limit}`);
  const scanned = page.length;
  const nextCursor = page.length > 0 ? Number(page[page.length - 1]!.id) : input.afterBlobId;
  const empty: MarkPage = { scanned, marked: 0, bytes: 0, perLocation: [], nextCursor, done: scanned < input.limit };
  if (scanned === 0) return empty;
  const pageIds = page.map((r) => Number(r.id));
  const run = async (tx: DbOrTx) => {
    let chosen: number[];
    if (input.dryRun) {
      const rows = await tx.execute<{ id: number }>(sql`
        ${keptSet(input.graceSeconds)}
        select b.id from blobs b where b.id in (${ids(pageIds)}) and ${unreferenced(input.graceSeconds, true)}`);
      chosen = rows.map((r) => Number(r.id));
    } else {
      // Lock first; the next statement starts after the lock is granted and so sees every
      // reference committed before it (a manifest PUT or push holding the row finished first).
      const locked = await tx.execute<{ id: number }>(sql`
        select b.id from blobs b where b.id in (${ids(pageIds)}) and ${unreferenced(input.graceSeconds)}
        order by b.id for update skip locked`);
      chosen = locked.map((r) => Number(r.id));
    }
    if (chosen.length === 0) return [];
    if (input.dryRun) {
      return tx.execute<{ blob_id: number; location_id: number; size: number }>(sql`
        select p.blob_id, p.location_id, b.size from blob_placements p join blobs b on b.id = p.blob_id
        where p.blob_id in (${ids(chosen)}) and p.state in ('available', 'damaged')`);
    }
    // A damaged copy (the scrub found it missing or wrong) goes too, straight to `purging`: its
    // bytes must never be revived by a push the way a marked available copy is (a push brings
    // its own object instead, as for any purging copy); left alone it kept the blob row and its
    // object forever.
    const marked = await tx.execute<{ blob_id: number; location_id: number; size: number }>(sql`
      update blob_placements p set state = case when p.state = 'damaged' then 'purging' else 'deleting' end,
        purge_owner = case when p.state = 'damaged' then 'gc' end,
        purge_claimed_at = case when p.state = 'damaged' then now() end
      from blobs b
      where b.id = p.blob_id and p.blob_id in (${ids(chosen)}) and p.state in ('available', 'damaged') and ${unreferenced(input.graceSeconds)}
      returning p.blob_id, p.location_id, b.size`);
    // Marked blobs are unknown to pulls from the commit on: API processes cache which blobs a
    // repository may serve per blob version (registry/blob-server.ts).
    if (marked.length > 0) await tx.execute(sql`update blob_version set version = version + 1 where id = 1`);
    return marked;
  };
  const placed = input.dryRun ? await run(d.db) : await d.db.transaction(run);
  const tallies = new Map<number, LocationTally>();
  const blobSizes = new Map<number, number>();
  for (const p of placed) {
    blobSizes.set(Number(p.blob_id), Number(p.size));
    const loc = d.locations.get(Number(p.location_id));
    const t = tallies.get(Number(p.location_id)) ?? { location: loc?.name ?? `#${p.location_id}`, blobs: 0, bytes: 0 };
    t.blobs++;
    t.bytes += Number(p.size);
    tallies.set(Number(p.location_id), t);
  }
  return {
    ...empty,
    marked: blobSizes.size,
    bytes: [...blobSizes.values()].reduce((a, b) => a + b, 0),
    perLocation: [...tallies.values()],
  };
}

/** Names of the locations with placements waiting to be purged. */
export async function locationsWithPendingDeletions(d: GcBlobDeps): Promise<string[]> {
  const registry = await d.locations.fresh();
  const rows = await d.db.execute<{ location_id: number }>(sql`
    select distinct location_id from blob_placements p where ${gcPurgeable}`);
  return rows.map((r) => registry.get(Number(r.location_id))?.name).filter((n): n is string => n !== undefined);
}

export interface PurgeBatch {
  deleted: number;
  bytes: number;
  /** More pending deletions may remain at the location. */
  remaining: boolean;
}

/**
 * Purges up to `limit` deleting placements of one location: claims them (`purging`), deletes
 * their objects, then their rows. Placements left `purging` by an interrupted attempt are
 * claimed again (their objects may or may not be gone; deleting twice is harmless).
 */
export async function purgeLocationBatch(
  d: GcBlobDeps,
  input: { location: string; limit: number },
  /** Called once the claim committed, before any object is deleted: cached answers naming the
   * claimed copies must be gone before their objects are (a redirect to a deleted object). */
  beforeDeleting: () => Promise<void> = async () => {},
): Promise<PurgeBatch> {
  const registry = await d.locations.fresh();
  const loc = registry.byName(input.location);
  if (!loc) return { deleted: 0, bytes: 0, remaining: false };
  const claimed = await d.db.transaction((tx) =>
    tx.execute<{ id: number; object_key: string | null; digest: string; size: number }>(sql`
      update blob_placements p set state = 'purging', purge_owner = 'gc', purge_claimed_at = now()
      from blobs b
      where b.id = p.blob_id and p.id in (
        select p.id from blob_placements p where p.location_id = ${loc.id} and ${gcPurgeable}
        order by p.blob_id limit ${input.limit} for update skip locked)
      returning p.id, p.object_key, b.digest, b.size`),
  );
  if (claimed.length === 0) return { deleted: 0, bytes: 0, remaining: false };
  await beforeDeleting();
  // The keys as claimed: a push that takes a purging placement over points it at a new object,
  // which is never among these.
  await loc.driver.deleteMany(claimed.map((c) => placementKey(loc.pathPrefix, c.digest, c.object_key)));
  const gone = await d.db.execute<{ id: number }>(sql`
    delete from blob_placements where id in (${ids(claimed.map((c) => Number(c.id)))}) and state = 'purging' and purge_owner = 'gc' returning id`);
  const goneIds = new Set(gone.map((g) => Number(g.id)));
  const bytes = claimed.filter((c) => goneIds.has(Number(c.id))).reduce((a, c) => a + Number(c.size), 0);
  return { deleted: goneIds.size, bytes, remaining: claimed.length === input.limit };
}

/** Deletes up to `limit` blob rows left with no placement and no manifest. Returns how many.
 * Only for runs started before the 'gc-finish-cursor' patch (workflows/gc.ts): every call
 * scans the whole table from the start, and with the statistics of before the purge (every blob
 * placed) PostgreSQL joins it against manifest_blobs row by row — minutes per call at 100,000
 * blobs. Runs since page with deleteUnplacedBlobPage. */
export async function deleteUnplacedBlobs(d: GcBlobDeps, input: { limit: number }): Promise<number> {
  return d.db.transaction(async (tx) => {
    const locked = await tx.execute<{ id: number }>(sql`
      select b.id from blobs b
      where not exists (select 1 from blob_placements p where p.blob_id = b.id)
        and not exists (select 1 from manifest_blobs mb where mb.blob_id = b.id)
      order by b.id limit ${input.limit} for update skip locked`);
    if (locked.length === 0) return 0;
    return deleteLocked(tx, locked.map((r) => Number(r.id)));
  });
}

/** Of the locked ids, deletes the rows still unplaced and unreferenced (re-checked by a statement
 * started after the locks were granted). */
async function deleteLocked(tx: DbOrTx, locked: number[]): Promise<number> {
  const deleted = await tx.execute<{ id: number }>(sql`
    delete from blobs b where b.id in (${ids(locked)})
      and not exists (select 1 from blob_placements p where p.blob_id = b.id)
      and not exists (select 1 from manifest_blobs mb where mb.blob_id = b.id)
    returning b.id`);
  return deleted.length;
}

export interface FinishPage {
  /** Blob rows deleted in this page. */
  deleted: number;
  /** Blob rows examined (by id). */
  scanned: number;
  nextCursor: number;
  done: boolean;
}

/**
 * The finish phase by keyset: the next `limit` blob ids after `afterBlobId` (an index range, so
 * a page costs the same at the end of the table as at its start, whatever the statistics say),
 * and of those, the rows left with no placement and no manifest are deleted under FOR UPDATE.
 */
export async function deleteUnplacedBlobPage(d: GcBlobDeps, input: { afterBlobId: number; limit: number }): Promise<FinishPage> {
  const page = await d.db.execute<{ id: number }>(sql`
    select id from blobs where id > ${input.afterBlobId} order by id limit ${input.limit}`);
  const scanned = page.length;
  const nextCursor = scanned > 0 ? Number(page[scanned - 1]!.id) : input.afterBlobId;
  const out: FinishPage = { deleted: 0, scanned, nextCursor, done: scanned < input.limit };
  if (scanned === 0) return out;
  out.deleted = await d.db.transaction(async (tx) => {
    // The range is bounded by ids, so each exists() is an index probe per row.
    const locked = await tx.execute<{ id: number }>(sql`
      select b.id from blobs b
      where b.id > ${input.afterBlobId} and b.id <= ${nextCursor}
        and not exists (select 1 from blob_placements p where p.blob_id = b.id)
        and not exists (select 1 from manifest_blobs mb where mb.blob_id = b.id)
      order by b.id for update skip locked`);
    return locked.length === 0 ? 0 : deleteLocked(tx, locked.map((r) => Number(r.id)));
  });
  return out;
}
