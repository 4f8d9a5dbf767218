// The integrity scrub: re-reads a location's copies (all, or a sample), recomputes their digests
// as the bytes stream, and marks a copy whose object is missing or hashes to another digest
// `damaged`. A damaged placement is never served (pulls read `available` placements only, and the
// placement cache is invalidated at once) and no longer counts as a holder, so the replication
// workflow, started in the same transaction as the mark, re-copies the blob there from a healthy
// replica; recording that copy makes the placement available again.
//
// Nothing here bumps verified_at: garbage collection reads it as "touched recently", and a blob is
// not in use just because the scrub read it.
import { createHash } from 'node:crypto';
import { sql } from 'drizzle-orm';
import type { Redis } from 'ioredis';
import type { ScrubFinding } from '../contract/scrub.ts';
import { replicateBlobWorkflow } from '../contract/replication.ts';
import type { DbOrTx } from '../db/client.ts';
import { enqueueWorkflowStart } from '../platform/outbox.ts';
import type { ReplicationMetrics } from '../platform/metrics.ts';
import { parseDigest } from '../registry/digest.ts';
import { createStreamingHasher } from '../registry/hashing.ts';
import { ObjectNotFoundError } from '../storage/driver.ts';
import type { Location, LocationRegistry } from '../storage/locations.ts';
import { placementKey } from '../storage/paths.ts';
import { WORKFLOW_IDS } from '../temporal.config.ts';
import { placementPlan } from './policy.ts';
import { placementsRemoved } from './placements.ts';

export interface ScrubDeps {
  db: DbOrTx;
  redis: Redis;
  locations: LocationRegistry;
  metrics: Pick<ReplicationMetrics, 'scrubbed' | 'damaged' | 'repaired'>;
}

export interface ScrubPageInput {
  location: string;
  afterBlobId: number;
  /** Copies to look at in this page (sampled or not). */
  limit: number;
  sample: number;
  seed: number;
  rateBytesPerSecond: number;
  /** Stop after the copy in progress once this many seconds have passed. */
  maxSeconds: number;
}

/** A page's outcome; also the heartbeat checkpoint a retried page continues from. */
export interface ScrubPage {
  examined: number;
  scrubbed: number;
  bytes: number;
  missing: number;
  corrupt: number;
  findings: ScrubFinding[];
  /** Digests of copies found damaged, now or by an earlier run, still waiting for repair. */
  awaitingRepair: string[];
  nextCursor: number;
  done: boolean;
}

export interface ScrubControl {
  /** The page so far: a retry continues from it. */
  checkpoint?: ScrubPage;
  heartbeat(progress: ScrubPage): void;
  signal: AbortSignal;
}

const sleep = (ms: number, signal: AbortSignal) =>
  new Promise<void>((resolve) => {
    const done = () => {
      clearTimeout(t);
      signal.removeEventListener('abort', done);
      resolve();
    };
    const t = setTimeout(done, ms);
    signal.addEventListener('abort', done);
  });

/** Whether a run with this seed re-reads the blob: a fixed pseudo-random fraction of ids. */
export function sampled(seed: number, blobId: number, fraction: number): boolean {
  if (fraction >= 1) return true;
  const h = createHash('sha256').update(`${seed}:${blobId}`).digest();
  return h.readUInt32BE(0) / 2 ** 32 < fraction;
}

/** Holds re-reads to `rate` bytes per second over the page (0: unlimited). */
class Throttle {
  private readonly started = Date.now();
  private bytes = 0;
  constructor(private readonly rate: number) {}
  async take(n: number, signal: AbortSignal): Promise<void> {
    this.bytes += n;
    if (this.rate <= 0) return;
    const ahead = (this.bytes / this.rate) * 1000 - (Date.now() - this.started);
    if (ahead > 5) await sleep(ahead, signal);
  }
}

type ScrubRow = {
  id: number;
  blob_id: number;
  digest: string;
  size: number;
  object_key: string | null;
  state: string;
  /** The row version when read: the mark applies only to a placement nobody changed since. */
  version: string;
};

/** What reading the copy found: undefined when its bytes hash to the digest. */
async function verifyCopy(loc: Location, row: ScrubRow, throttle: Throttle, control: ScrubControl, page: ScrubPage): Promise<ScrubFinding | undefined> {
  const key = placementKey(loc.pathPrefix, row.digest, row.object_key);
  let read;
  try {
    read = await loc.driver.read(key);
  } catch (e) {
    if (e instanceof ObjectNotFoundError) return { digest: row.digest, problem: 'missing', detail: `no object at ${key}` };
    throw e;
  }
  if (read.totalSize !== Number(row.size)) {
    read.body.destroy();
    return { digest: row.digest, problem: 'corrupt', detail: `${read.totalSize} bytes at ${key}, expected ${row.size}` };
  }
  const hasher = createStreamingHasher(parseDigest(row.digest).algorithm);
  const abort = () => read.body.destroy(new Error('scrub cancelled'));
  control.signal.addEventListener('abort', abort);
  try {
    for await (const chunk of read.body) {
      hasher.update(chunk as Buffer);
      page.bytes += (chunk as Buffer).length;
      control.heartbeat(page);
      await throttle.take((chunk as Buffer).length, control.signal);
    }
  } finally {
    control.signal.removeEventListener('abort', abort);
  }
  const actual = hasher.digest();
  return actual === row.digest ? undefined : { digest: row.digest, problem: 'corrupt', detail: `bytes at ${key} hash to ${actual}` };
}

/**
 * Marks the placement damaged — unless it changed since it was read (a push took it over, GC
 * marked it, a copy replaced it) — and, in the same transaction, asks for the blob's replication,
 * which re-copies it there. Returns whether it marked it.
 */
export async function markDamaged(d: Pick<ScrubDeps, 'db' | 'redis'>, row: Pick<ScrubRow, 'id' | 'digest' | 'version'>): Promise<boolean> {
  const marked = await d.db.transaction(async (tx) => {
    const rows = await tx.execute<{ id: number }>(sql`
      update blob_placements set state = 'damaged'
      where id = ${row.id} and state = 'available' and xmin::text = ${row.version}
      returning id`);
    if (rows.length === 0) return false;
    await enqueueWorkflowStart(tx, replicateBlobWorkflow, { workflowId: WORKFLOW_IDS.replicateBlob(row.digest), args: [{ digest: row.digest }] });
    return true;
  });
  // Pull paths cache placements: the damaged one must not be served from the cache either.
  if (marked) await placementsRemoved(d.redis);
  return marked;
}

const MAX_FINDINGS = 100;
const MAX_AWAITING = 300;

/**
 * Scrubs the next copies of `location` after blob id `afterBlobId`, in blob id order, until
 * `limit` copies were looked at or `maxSeconds` passed. Storage outages throw (the activity is
 * retried and continues from its checkpoint); a missing or corrupt copy is marked damaged.
 */
export async function scrubPage(d: ScrubDeps, input: ScrubPageInput, control: ScrubControl): Promise<ScrubPage> {
  const loc = (await d.locations.fresh()).byName(input.location);
  const page: ScrubPage = control.checkpoint
    ? { ...control.checkpoint, findings: [...control.checkpoint.findings], awaitingRepair: [...control.checkpoint.awaitingRepair] }
    : { examined: 0, scrubbed: 0, bytes: 0, missing: 0, corrupt: 0, findings: [], awaitingRepair: [], nextCursor: input.afterBlobId, done: false };
  if (!loc) return { ...page, done: true };
  const started = Date.now();
  const throttle = new Throttle(input.rateBytesPerSecond);
  const rows = await d.db.execute<ScrubRow>(sql`
    select p.id, p.blob_id, b.digest, b.size, p.object_key, p.state, p.xmin::text as version
    from blob_placements p join blobs b on b.id = p.blob_id
    where p.location_id = ${loc.id} and p.blob_id > ${page.nextCursor} and p.state in ('available', 'damaged')
    order by p.blob_id limit ${Math.max(0, input.limit - page.examined)}`);
  for (const row of rows) {
    if (control.signal.aborted) throw new Error('scrub cancelled');
    if (row.state === 'damaged') {
      if (page.awaitingRepair.length < MAX_AWAITING) page.awaitingRepair.push(row.digest);
    } else if (sampled(input.seed, Number(row.blob_id), input.sample)) {
      const before = page.bytes;
      const finding = await verifyCopy(loc, row, throttle, control, page);
      page.scrubbed++;
      await d.metrics.scrubbed(loc.name, page.bytes - before);
      if (finding && (await markDamaged(d, row))) {
        page[finding.problem]++;
        await d.metrics.damaged(loc.name, finding.problem);
        if (page.findings.length < MAX_FINDINGS) page.findings.push(finding);
        if (page.awaitingRepair.length < MAX_AWAITING) page.awaitingRepair.push(row.digest);
      }
    }
    page.examined++;
    page.nextCursor = Number(row.blob_id);
    control.heartbeat(page);
    if ((Date.now() - started) / 1000 >= input.maxSeconds) return page;
  }
  return { ...page, done: page.examined < input.limit };
}

export interface RepairCheck {
  /** Available again. */
  repaired: string[];
  /** Still damaged, with a repair under way (or asked for again here). */
  waiting: string[];
  /** Still damaged and no other location has an available copy to repair it from. */
  unrepairable: string[];
}

/**
 * Where the repairs of `digests` at `location` stand. A damaged copy at a location the blob is
 * no longer wanted in (a namespace's replication changed) is not re-copied: its placement is
 * deleted when another copy is available. `restart` is called for the damaged copies with a
 * healthy replica elsewhere, to (re)start their replication (idempotent: an id-deduplicated start).
 */
export async function checkRepairs(
  d: Pick<ScrubDeps, 'db' | 'redis' | 'locations' | 'metrics'>,
  input: { location: string; digests: string[] },
  restart: (digest: string) => Promise<void>,
): Promise<RepairCheck> {
  const out: RepairCheck = { repaired: [], waiting: [], unrepairable: [] };
  const loc = (await d.locations.fresh()).byName(input.location);
  if (!loc || input.digests.length === 0) return out;
  const rows = await d.db.execute<{ blob_id: number; digest: string; state: string | null }>(sql`
    select b.id as blob_id, b.digest, p.state
    from blobs b left join blob_placements p on p.blob_id = b.id and p.location_id = ${loc.id}
    where b.digest in (${sql.join(input.digests.map((x) => sql`${x}`), sql`, `)})`);
  let dropped = false;
  for (const r of rows) {
    if (r.state !== 'damaged') {
      // Available again (repaired), or gone altogether (collected, or dropped below): done.
      if (r.state === 'available') out.repaired.push(r.digest);
      continue;
    }
    const plan = await placementPlan(d.db, Number(r.blob_id), d.locations.all());
    if (plan.holders.length === 0) {
      out.unrepairable.push(r.digest);
    } else if (!plan.wanted.some((l) => l.id === loc.id)) {
      await d.db.execute(sql`delete from blob_placements where blob_id = ${r.blob_id} and location_id = ${loc.id} and state = 'damaged'`);
      dropped = true;
    } else {
      await restart(r.digest);
      out.waiting.push(r.digest);
    }
  }
  if (dropped) await placementsRemoved(d.redis);
  if (out.repaired.length > 0) await d.metrics.repaired(loc.name, out.repaired.length);
  return out;
}
