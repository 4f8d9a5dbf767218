// Orphans: what a location's bucket holds that no row accounts for — objects a crash left between
// their write and the commit of their row, scratch of upload sessions that are gone, and multipart
// uploads no upload session or copy owns. Found by listing the bucket (storage → rows, the other
// direction from garbage collection's rows → storage) and removed once older than a grace period.
//
// Which objects a row accounts for:
//   <prefix>/sha256/…      a placement at the location with no object key (any state: GC and the
//                          scrub deal with those) — the content address;
//   <prefix>/_blobs/<id>   a placement's object key, or an upload session's object;
//   <prefix>/_uploads/<id>/…  the tails of upload session <id>, while it exists.
// A content-address key can be written again at any time (a push or a copy of the same digest),
// so an orphan there is removed by the deletion-pending protocol of gc/blobs.ts: a `purging`
// placement is recorded first (a push then brings its own object, or is told to retry), then the
// object is deleted, then the placement. That placement's `purge_owner` is `orphans`: GC's purge,
// which deletes purging placements too, leaves it to the sweep (else a run running meanwhile
// deleted it and counted the orphan as garbage it reclaimed). `_blobs/` and `_uploads/` keys are
// never reused.
//
// Multipart uploads an upload session names are its; one at a content address belongs to a copy
// while the blob exists and the location does not hold it yet (the copy may resume it). Others
// are aborted. Servers that support it also get a lifecycle rule aborting anything left for a week.
import { sql } from 'drizzle-orm';
import type { OrphanSweep } from '../contract/orphans.ts';
import type { DbOrTx } from '../db/client.ts';
import { isDigest } from '../registry/digest.ts';
import type { ListedObject, PendingMultipart } from '../storage/driver.ts';
import type { Location, LocationRegistry } from '../storage/locations.ts';
import { blobKey, blobsPrefix, uploadedBlobsPrefix, uploadsPrefix } from '../storage/paths.ts';

export interface OrphanDeps {
  db: DbOrTx;
  locations: LocationRegistry;
}

export interface OrphanSweepInput {
  location: string;
  /** Only what is older than this is an orphan (an in-flight write has no row yet). */
  graceSeconds: number;
  /** Count, remove nothing. */
  dryRun: boolean;
}

type Phase = OrphanSweep['phase'];
const PHASES: Phase[] = ['sha256', 'sha512', 'uploaded', 'scratch', 'multipart', 'done'];

export interface OrphanControl {
  checkpoint?: OrphanSweep;
  heartbeat(progress: OrphanSweep): void;
  signal: AbortSignal;
}

const PAGE = 1000;
const SAMPLE = 20;

function list(keys: string[]) {
  return sql.join(
    keys.map((k) => sql`${k}`),
    sql`, `,
  );
}

/** The digest a content-address key holds, if it is one. */
function digestOfKey(loc: Location, algorithm: 'sha256' | 'sha512', key: string): string | undefined {
  const hex = key.split('/').pop() ?? '';
  const digest = `${algorithm}:${hex}`;
  return isDigest(digest) && blobKey(loc.pathPrefix, digest) === key ? digest : undefined;
}

/** Of the listed keys, those no row accounts for (see the module comment). */
async function unaccounted(d: OrphanDeps, loc: Location, phase: Phase, objects: ListedObject[]): Promise<ListedObject[]> {
  if (objects.length === 0) return [];
  if (phase === 'sha256' || phase === 'sha512') {
    const byDigest = new Map<string, ListedObject>();
    for (const o of objects) {
      const digest = digestOfKey(loc, phase, o.key);
      if (digest) byDigest.set(digest, o);
    }
    if (byDigest.size === 0) return [];
    const held = await d.db.execute<{ digest: string }>(sql`
      select b.digest from blobs b join blob_placements p on p.blob_id = b.id
      where p.location_id = ${loc.id} and p.object_key is null and b.digest in (${list([...byDigest.keys()])})`);
    for (const h of held) byDigest.delete(h.digest);
    return [...byDigest.values()];
  }
  const keys = objects.map((o) => o.key);
  if (phase === 'uploaded') {
    const used = await d.db.execute<{ key: string }>(sql`
      select object_key as key from blob_placements where location_id = ${loc.id} and object_key in (${list(keys)})
      union select object_key from upload_sessions where location_id = ${loc.id} and object_key in (${list(keys)})`);
    const usedKeys = new Set(used.map((u) => u.key));
    return objects.filter((o) => !usedKeys.has(o.key));
  }
  // Scratch: <prefix>/_uploads/<session id>/tail.N belongs to its session while it exists.
  const scratch = uploadsPrefix(loc.pathPrefix);
  const sessionOf = (key: string) => key.slice(scratch.length).split('/')[0] ?? '';
  const ids = [...new Set(objects.map((o) => sessionOf(o.key)))].filter((id) => /^[0-9a-f-]{36}$/.test(id));
  const live = ids.length
    ? await d.db.execute<{ id: string }>(sql`select id::text from upload_sessions where id::text in (${list(ids)})`)
    : [];
  const liveIds = new Set(live.map((l) => l.id));
  return objects.filter((o) => !liveIds.has(sessionOf(o.key)));
}

/**
 * Removes an orphan at a content address under the deletion-pending protocol. Returns false when
 * a row for it appeared meanwhile (it is no orphan any more).
 */
async function removeContentAddressed(d: OrphanDeps, loc: Location, digest: string, object: ListedObject): Promise<boolean> {
  const claimed = await d.db.transaction(async (tx) => {
    await tx.execute(sql`insert into blobs (digest, size) values (${digest}, ${object.size}) on conflict do nothing`);
    const [blob] = await tx.execute<{ id: number; created: boolean }>(sql`
      select id, (created_at = now()) as created from blobs where digest = ${digest} for update`);
    if (!blob) return undefined;
    const placed = await tx.execute<{ id: number }>(sql`
      insert into blob_placements (blob_id, location_id, state, object_key, purge_owner, purge_claimed_at)
      values (${blob.id}, ${loc.id}, 'purging', null, 'orphans', now())
      on conflict (blob_id, location_id) do nothing returning id`);
    return placed[0] ? { blobId: Number(blob.id), placementId: Number(placed[0].id), created: blob.created } : undefined;
  });
  if (!claimed) return false;
  await loc.driver.delete(object.key);
  await d.db.transaction(async (tx) => {
    await tx.execute(sql`delete from blob_placements where id = ${claimed.placementId} and state = 'purging' and purge_owner = 'orphans'`);
    // A row made only to claim the object goes again (unless something uses it by now).
    if (claimed.created) {
      await tx.execute(sql`
        delete from blobs b where b.id = ${claimed.blobId}
          and not exists (select 1 from blob_placements p where p.blob_id = b.id)
          and not exists (select 1 from manifest_blobs mb where mb.blob_id = b.id)
          and not exists (select 1 from repository_blobs rb where rb.blob_id = b.id)`);
    }
  });
  return true;
}

/** Of the listed multipart uploads, those nothing owns (see the module comment). */
async function unownedUploads(d: OrphanDeps, loc: Location, uploads: PendingMultipart[]): Promise<PendingMultipart[]> {
  if (uploads.length === 0) return [];
  const sessions = await d.db.execute<{ id: string }>(sql`
    select multipart_upload_id as id from upload_sessions where location_id = ${loc.id} and multipart_upload_id in (${list(uploads.map((u) => u.uploadId))})`);
  const owned = new Set(sessions.map((s) => s.id));
  const digests = new Map<string, string>();
  for (const u of uploads) {
    const digest = digestOfKey(loc, 'sha256', u.key) ?? digestOfKey(loc, 'sha512', u.key);
    if (digest) digests.set(u.key, digest);
  }
  const copying = new Set<string>();
  if (digests.size > 0) {
    const rows = await d.db.execute<{ digest: string }>(sql`
      select b.digest from blobs b where b.digest in (${list([...new Set(digests.values())])})
        and not exists (select 1 from blob_placements p where p.blob_id = b.id and p.location_id = ${loc.id} and p.state = 'available')`);
    for (const r of rows) copying.add(r.digest);
  }
  return uploads.filter((u) => !owned.has(u.uploadId) && !copying.has(digests.get(u.key) ?? ''));
}

function prefixOf(loc: Location, phase: Phase): string {
  if (phase === 'sha256' || phase === 'sha512') return blobsPrefix(loc.pathPrefix, phase);
  if (phase === 'uploaded') return uploadedBlobsPrefix(loc.pathPrefix);
  return uploadsPrefix(loc.pathPrefix);
}

/**
 * Sweeps one location: lists its bucket (under its prefix) phase by phase, removing (or in a dry
 * run counting) the orphans older than the grace period. Continues from the checkpoint.
 */
export async function sweepOrphans(d: OrphanDeps, input: OrphanSweepInput, control: OrphanControl): Promise<OrphanSweep> {
  const loc = (await d.locations.fresh()).byName(input.location);
  const s: OrphanSweep = control.checkpoint
    ? { ...control.checkpoint, sample: [...control.checkpoint.sample] }
    : { location: input.location, phase: 'sha256', objectsListed: 0, orphanObjects: 0, orphanBytes: 0, multipartListed: 0, orphanMultipart: 0, sample: [] };
  if (!loc) return { ...s, phase: 'done' };
  const cutoff = Date.now() - input.graceSeconds * 1000;
  const old = (t: Date | undefined) => t !== undefined && t.getTime() <= cutoff;
  const note = (what: string) => s.sample.length < SAMPLE && s.sample.push(what);
  const next = () => {
    s.phase = PHASES[PHASES.indexOf(s.phase) + 1]!;
    delete s.startAfter;
    delete s.after;
  };

  while (s.phase !== 'multipart' && s.phase !== 'done') {
    if (control.signal.aborted) throw new Error('sweep cancelled');
    const phase = s.phase;
    const page = await loc.driver.list(prefixOf(loc, phase), { ...(s.startAfter ? { startAfter: s.startAfter } : {}), limit: PAGE });
    s.objectsListed += page.length;
    for (const o of await unaccounted(d, loc, phase, page.filter((o) => old(o.lastModified)))) {
      const digest = phase === 'sha256' || phase === 'sha512' ? digestOfKey(loc, phase, o.key) : undefined;
      if (!input.dryRun) {
        if (digest) {
          if (!(await removeContentAddressed(d, loc, digest, o))) continue;
        } else await loc.driver.delete(o.key);
      }
      s.orphanObjects++;
      s.orphanBytes += o.size;
      note(o.key);
    }
    if (page.length < PAGE) next();
    else s.startAfter = page.at(-1)!.key;
    control.heartbeat(s);
  }

  while (s.phase === 'multipart') {
    if (control.signal.aborted) throw new Error('sweep cancelled');
    const root = loc.pathPrefix.replace(/^\/+|\/+$/g, '');
    const page = await loc.driver.listMultipartUploads(root ? `${root}/` : '', { ...(s.after ? { after: s.after } : {}), limit: PAGE });
    s.multipartListed += page.uploads.length;
    for (const u of await unownedUploads(d, loc, page.uploads.filter((u) => old(u.initiated)))) {
      if (!input.dryRun) await loc.driver.abortMultipart(u.key, u.uploadId);
      s.orphanMultipart++;
      note(`${u.key} (multipart upload ${u.uploadId})`);
    }
    if (page.next) s.after = page.next;
    else next();
    control.heartbeat(s);
  }
  return s;
}
