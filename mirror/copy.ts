// Copying one upstream tag into the local repository: its manifest (an index with every platform
// manifest it lists), every blob they need that the repository does not have yet (streamed into
// this instance's preferred location, digest verified), and the referrers (signatures, SBOMs) the
// upstream lists for them. The manifests and the tag are written in one transaction at the end, so
// a tag is either moved to the complete new image or not at all; that transaction also starts the
// replication of every blob the tag brought in, as one workflow (registry/blobs.ts
// ReplicationBatch).
//
// A blob is fetched once per repository even when several tags copied at the same time need it
// (an in-process single flight plus a Redis lock across workers). A blob is skipped only when
// this repository already has it: linking a blob that another repository holds, on the word of
// an upstream's manifest, would let a mirror of a crafted upstream read any private layer whose
// digest it knows. (When the bytes are already in storage, putBlob hashes them and stores nothing.)
import { and, eq, inArray } from 'drizzle-orm';
import { Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { blobs, repositoryBlobs } from '../db/schema.ts';
import type { Services } from '../platform/services.ts';
import { linkedBlob, ReplicationBatch, startReplicationBatch } from '../registry/blobs.ts';
import { type Descriptor, manifestByDigest, manifestByTag, parseManifest, type ParsedManifest, putManifest, setTag } from '../registry/manifests.ts';
import type { Repository } from '../registry/repositories.ts';
import { putBlobToPreferred } from '../registry/uploads.ts';
import { sleep } from './semaphore.ts';
import { UpstreamError, type UpstreamClient } from './upstream.ts';

export type TagOutcome = 'synced' | 'unchanged' | 'gone' | 'failed' | 'deleted';

export interface TagResult {
  tag: string;
  status: TagOutcome;
  digest?: string;
  /** Bytes read from the upstream for this tag (blobs and manifests). */
  bytes?: number;
  error?: string;
}

export interface CopyContext {
  s: Services;
  repo: Repository;
  upstream: UpstreamClient;
  /** Called as bytes flow and between steps (Temporal heartbeats). */
  heartbeat: () => void;
  signal?: AbortSignal;
  flights: BlobFlights;
  /** The blobs this tag's copy brought in, replicated together when its tag moves. */
  replication?: ReplicationBatch;
}

/** Layers that live outside registries (foreign, non-distributable) are not copied, as on push. */
function mustCopy(d: Descriptor): boolean {
  return !(d.urls && d.urls.length > 0) && !/nondistributable|foreign/.test(d.mediaType);
}

/** Within one process: concurrent copies of the same blob into the same repository share one fetch. */
export class BlobFlights {
  private readonly inFlight = new Map<string, Promise<number>>();

  run(key: string, fn: () => Promise<number>): Promise<number> {
    const existing = this.inFlight.get(key);
    // A waiter reads nothing from the upstream itself.
    if (existing) return existing.then(() => 0);
    const p = fn().finally(() => this.inFlight.delete(key));
    this.inFlight.set(key, p);
    return p;
  }
}

const LOCK_TTL_MS = 60_000;

/** Across processes: a Redis lock per (repository, blob). Without Redis, each process fetches. */
async function withBlobLock(c: CopyContext, digest: string, fetch: () => Promise<number>): Promise<number> {
  const key = `mirror:blob:${c.repo.id}:${digest}`;
  const owner = `${process.pid}:${Math.random()}`;
  for (;;) {
    let acquired: boolean;
    try {
      acquired = (await c.s.redis.set(key, owner, 'PX', LOCK_TTL_MS, 'NX')) === 'OK';
    } catch {
      return fetch();
    }
    if (acquired) break;
    // Someone else is fetching it: wait until it is linked here or their lock goes away.
    await sleep(250, c.signal);
    c.heartbeat();
    if (await linkedBlob(c.s.db, c.repo.id, digest)) return 0;
  }
  const renew = setInterval(() => c.s.redis.pexpire(key, LOCK_TTL_MS).catch(() => {}), LOCK_TTL_MS / 3);
  try {
    if (await linkedBlob(c.s.db, c.repo.id, digest)) return 0;
    return await fetch();
  } finally {
    clearInterval(renew);
    // Only our own lock; a lock that expired and was taken over stays with its new owner.
    await c.s.redis.eval(`if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0`, 1, key, owner).catch(() => {});
  }
}

/** Which of `digests` are linked to the repository. */
async function linkedDigests(c: CopyContext, digests: string[]): Promise<Set<string>> {
  if (digests.length === 0) return new Set();
  const rows = await c.s.db
    .select({ digest: blobs.digest })
    .from(blobs)
    .innerJoin(repositoryBlobs, and(eq(repositoryBlobs.blobId, blobs.id), eq(repositoryBlobs.repositoryId, c.repo.id)))
    .where(inArray(blobs.digest, digests));
  return new Set(rows.map((r) => r.digest));
}

/** Streams one blob from the upstream into the preferred location, unless the repository has it
 * by the time the blob's lock is held (the caller checked before). Returns bytes read. */
async function copyBlob(c: CopyContext, d: Descriptor): Promise<number> {
  if (!mustCopy(d)) return 0;
  return c.flights.run(`${c.repo.id}:${d.digest}`, () =>
    withBlobLock(c, d.digest, async () => {
      const blob = await c.upstream.getBlob(d.digest, c.signal);
      if (blob.size !== undefined && blob.size !== d.size) {
        blob.body.destroy();
        throw new UpstreamError('protocol', `blob ${d.digest} is ${blob.size} bytes upstream, the manifest says ${d.size}`);
      }
      let bytes = 0;
      const meter = new Transform({
        transform(chunk: Buffer, _enc, cb) {
          bytes += chunk.length;
          c.heartbeat();
          cb(null, chunk);
        },
      });
      // putBlob verifies the digest and the size before the blob becomes visible; an upstream
      // that fails mid-stream destroys the meter, which fails putBlob (and aborts its upload).
      const piping = pipeline(blob.body, meter).then(
        () => undefined,
        (e: unknown) => e,
      );
      try {
        await putBlobToPreferred(c.s, c.repo, d.digest, meter, d.size, { replication: c.replication });
      } catch (e) {
        blob.body.destroy();
        meter.destroy();
        await piping;
        throw e;
      }
      const pipeError = await piping;
      if (pipeError) throw pipeError;
      c.heartbeat();
      return bytes;
    }),
  );
}

/** Copies blobs a few at a time (the host semaphore bounds the total). */
async function copyBlobs(c: CopyContext, descriptors: Descriptor[]): Promise<number> {
  const wanted = [...new Map(descriptors.filter(mustCopy).map((d) => [d.digest, d])).values()];
  // Those the repository already has, in one query rather than one per blob (copyBlob asks again
  // for the rest under the blob's lock, as another copy may link them meanwhile).
  const have = await linkedDigests(c, wanted.map((d) => d.digest));
  const missing = wanted.filter((d) => !have.has(d.digest));
  const bytes = await mapLimit(missing, BLOBS_AT_ONCE, (d) => copyBlob(c, d));
  return bytes.reduce((a, b) => a + b, 0);
}

/** Blobs of one image, and platforms of one index, copied at once. */
const BLOBS_AT_ONCE = 3;
const CHILDREN_AT_ONCE = 4;

/** `fn` over `items`, `limit` at a time, results in order. A failure rejects only once every
 * started call has settled (none keeps copying behind the caller's back) and starts no more. */
async function mapLimit<T, R>(items: T[], limit: number, fn: (item: T) => Promise<R>): Promise<R[]> {
  const results: R[] = new Array(items.length);
  let next = 0;
  let failed = false;
  const worker = async () => {
    while (!failed && next < items.length) {
      const i = next++;
      try {
        results[i] = await fn(items[i]!);
      } catch (e) {
        failed = true;
        throw e;
      }
    }
  };
  const settled = await Promise.allSettled(Array.from({ length: Math.min(limit, items.length) }, worker));
  const rejected = settled.find((r): r is PromiseRejectedResult => r.status === 'rejected');
  if (rejected) throw rejected.reason;
  return results;
}

interface Staged {
  bytes: Buffer;
  mediaType: string;
  digest: string;
}

function parseUpstream(bytes: Buffer, mediaType: string, what: string): ParsedManifest {
  try {
    return parseManifest(bytes, mediaType || undefined);
  } catch (e) {
    throw new UpstreamError('protocol', `${what}: ${(e as Error).message}`);
  }
}

/**
 * Fetches a manifest's dependencies (blobs; for an index its child manifests, recursively) and
 * returns the manifests to store, children before parents. Manifests the repository already has
 * are not fetched again.
 */
async function stage(c: CopyContext, m: Staged, out: Staged[], depth: number, counter: { bytes: number }): Promise<void> {
  const parsed = parseUpstream(m.bytes, m.mediaType, `manifest ${m.digest}`);
  counter.bytes += m.bytes.length;
  if (parsed.kind === 'image') {
    const n = await copyBlobs(c, parsed.blobs);
    counter.bytes += n;
  } else {
    if (depth > 3) throw new UpstreamError('protocol', `manifest ${m.digest}: indexes nested too deeply`);
    // The platforms are fetched side by side (the host semaphore bounds the requests), each
    // staged on its own list; the lists join in the index's order, children before parents.
    const seen = new Set(out.map((s) => s.digest));
    const children = [...new Map(parsed.children.map((d) => [d.digest, d])).values()].filter((d) => !seen.has(d.digest));
    const lists = await mapLimit(children, CHILDREN_AT_ONCE, async (child) => {
      const mine: Staged[] = [];
      if (await manifestByDigest(c.s.db, c.repo.id, child.digest)) return mine;
      c.heartbeat();
      const fetched = await c.upstream.getManifest(child.digest, child.digest, c.signal);
      await stage(c, fetched, mine, depth + 1, counter);
      return mine;
    });
    for (const list of lists) for (const s of list) if (!out.some((o) => o.digest === s.digest)) out.push(s);
  }
  out.push(m);
}

/** Copies what refers to `subjects` (and what refers to those, two levels), untagged. */
async function copyReferrers(c: CopyContext, subjects: string[], counter: { bytes: number }, depth = 0): Promise<void> {
  if (depth > 1) return;
  for (const subject of subjects) {
    const refs = await c.upstream.referrers(subject, c.signal);
    // No referrers API upstream: nothing more to ask for.
    if (refs === undefined) return;
    const copied: string[] = [];
    for (const r of refs) {
      c.heartbeat();
      if (await manifestByDigest(c.s.db, c.repo.id, r.digest)) continue;
      const fetched = await c.upstream.getManifest(r.digest, r.digest, c.signal);
      const staged: Staged[] = [];
      await stage(c, fetched, staged, 0, counter);
      await c.s.db.transaction(async (tx) => {
        for (const s of staged) await putManifest(tx, c.repo, { bytes: s.bytes, contentType: s.mediaType || undefined, digestReference: s.digest, tags: [] });
      });
      copied.push(r.digest);
    }
    if (copied.length) await copyReferrers(c, copied, counter, depth + 1);
  }
}

/**
 * Brings one tag in step with the upstream. `unchanged` when the local tag already points at the
 * upstream's digest (a HEAD tells); `gone` when the upstream no longer has the tag.
 */
export async function copyTag(shared: CopyContext, tag: string): Promise<TagResult> {
  const c: CopyContext = { ...shared, replication: new ReplicationBatch() };
  const local = await manifestByTag(c.s.db, c.repo.id, tag);
  // The HEAD only pays when there is a local tag it may find unchanged: a tag new here needs the
  // GET anyway (which names its digest too), and every request costs the upstream (a bcrypt
  // check per request on an htpasswd registry).
  let expected: string | undefined;
  if (local) {
    const head = await c.upstream.headManifest(tag, c.signal);
    if (!head) return { tag, status: 'gone' };
    if (head.digest && head.digest === local.digest) return { tag, status: 'unchanged', digest: local.digest, bytes: 0 };
    expected = head.digest;
    c.heartbeat();
  }
  let top;
  try {
    top = await c.upstream.getManifest(tag, expected, c.signal);
  } catch (e) {
    if (e instanceof UpstreamError && e.kind === 'not_found') return { tag, status: 'gone' };
    throw e;
  }
  const counter = { bytes: 0 };
  const staged: Staged[] = [];
  await stage(c, top, staged, 0, counter);
  c.heartbeat();
  await c.s.db.transaction(async (tx) => {
    for (const s of staged) {
      await putManifest(tx, c.repo, { bytes: s.bytes, contentType: s.mediaType || undefined, digestReference: s.digest, tags: [] });
    }
  });
  // The referrers of the image and of each platform manifest, before the tag moves: a tag
  // points at a complete image or keeps its old one.
  await copyReferrers(c, [...new Set(staged.map((s) => s.digest))], counter);
  // A cancelled run must not move a tag after it gave up (its rollback may already be done).
  c.signal?.throwIfAborted();
  await c.s.db.transaction(async (tx) => {
    const m = await manifestByDigest(tx, c.repo.id, top.digest);
    if (!m) throw new Error(`manifest ${top.digest} vanished while ${tag} was being copied`);
    await setTag(tx, c.repo.id, tag, m.id);
    await startReplicationBatch(tx, c.replication!, c.repo.fullName);
  });
  return { tag, status: 'synced', digest: top.digest, bytes: counter.bytes };
}
