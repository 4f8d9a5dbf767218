// The copy engine: copies one blob into one location. It streams from a source location holding
// a verified copy into the target with a multipart upload, hashes as it goes, reports a
// checkpoint at every part boundary (the activity heartbeats it) and resumes from one after a
// crash, verifies the digest, and only then records the placement. Runs without Temporal: the
// caller passes the previous checkpoint, a heartbeat callback and an abort signal.
import { createHash } from 'node:crypto';
import type { Redis } from 'ioredis';
import type { CopyInput, CopyResult } from '../contract/replication.ts';
import type { DbOrTx } from '../db/client.ts';
import type { Logger } from '../platform/logger.ts';
import type { ReplicationMetrics } from '../platform/metrics.ts';
import { blobByDigest, placementStateAt, placementsOf } from '../registry/blobs.ts';
import { parseDigest } from '../registry/digest.ts';
import { createResumableHasher, createStreamingHasher, type ResumableHasher, restoreHasher } from '../registry/hashing.ts';
import { type BlobCopy, type PlacementDeps, readCopies } from '../registry/placement.ts';
import { type CompletedPart, DEFAULT_PART_SIZE, ObjectExistsError, ObjectNotFoundError, type ObjectRead, StorageUnavailableError } from '../storage/driver.ts';
import type { Location } from '../storage/locations.ts';
import { MultipartWriter } from '../storage/multipart-writer.ts';
import { blobKey } from '../storage/paths.ts';
import { ReplicationError, requireLocation } from './errors.ts';
import { placementAdded, recordPlacement } from './placements.ts';

export interface CopyDeps {
  db: DbOrTx;
  /** The placement cache readers consult. */
  redis: Redis;
  /** Where sources are chosen from (this instance's preference, location health). */
  placement: PlacementDeps;
  metrics: Pick<ReplicationMetrics, 'copied' | 'failed'>;
  logger: Logger;
}

/** What a copy reports at each part boundary: enough to continue the multipart upload after a
 * crash, from any location holding the blob (the bytes of a digest are the same everywhere). It
 * stays small whatever the number of parts: the parts themselves are listed from the target's
 * storage on resume and checked against `partsDigest`. */
export interface CopyCheckpoint {
  /** Where the bytes came from (informational: a resume may read from another holder). */
  source: string;
  /** Shown in the Temporal UI with the rest of the heartbeat. */
  target: string;
  uploadId: string;
  /** Parts 1..partCount are uploaded and cover exactly `offset` bytes. */
  partCount?: number;
  /** SHA-256 over those parts' ETags, in order. */
  partsDigest?: string;
  /** Checkpoints of earlier releases carried the parts themselves. */
  parts?: CompletedPart[];
  /** Bytes covered by the parts. */
  offset: number;
  /** Hash state after exactly `offset` bytes, base64. */
  hashState: string;
}

export interface CopyControl {
  /** What a previous attempt reported last, if anything. */
  checkpoint?: CopyCheckpoint;
  /** Called with the current checkpoint at each part boundary and while work goes on (a sign of
   * life); undefined only when no multipart upload is worth resuming. */
  heartbeat(checkpoint?: CopyCheckpoint): void;
  /** Aborts the copy (the activity was cancelled). */
  signal: AbortSignal;
}

/** Blobs up to this size are copied with one PUT (held in memory: bounded by the part size). */
const SINGLE_PUT_MAX = DEFAULT_PART_SIZE;

class SourceRejected extends Error {
  constructor(
    readonly reason: 'digest_mismatch' | 'source_missing' | 'size_mismatch',
    message: string,
    /** The bytes hashed included a previous attempt's (from another source, perhaps). */
    readonly resumed = false,
  ) {
    super(message);
  }
}

/** Where a copy continues a multipart upload a previous attempt began. */
interface ResumePoint {
  uploadId: string;
  parts: CompletedPart[];
  offset: number;
  hasher: ResumableHasher;
}

/** The heartbeat a copy keeps: a sign of life never drops the checkpoint. */
class CheckpointKeeper {
  constructor(
    private readonly control: CopyControl,
    public current: CopyCheckpoint | undefined,
  ) {}

  report(checkpoint?: CopyCheckpoint): void {
    if (checkpoint) this.current = checkpoint;
    this.control.heartbeat(this.current);
  }

  /** The upload it named is gone (aborted, or completed into the object). */
  forget(): void {
    this.current = undefined;
  }
}

export function partsDigestOf(parts: CompletedPart[]): string {
  const h = createHash('sha256');
  for (const p of parts) h.update(`${p.partNumber}:${p.etag}\n`);
  return h.digest('hex');
}

/** Where a copy lands: the content address (recordPlacement records no object key). */
function objectKey(loc: Location, digest: string): string {
  return blobKey(loc.pathPrefix, digest);
}

/** Copies `input.digest` into `input.target` from the best location holding a verified copy. */
export async function copyBlob(d: CopyDeps, input: CopyInput, control: CopyControl): Promise<CopyResult> {
  const log = d.logger;
  const target = await requireLocation(d.placement.locations, input.target);
  if (target.state !== 'active') throw new ReplicationError('locationGone', `location ${target.name} is draining`);
  const blob = await blobByDigest(d.db, input.digest);
  if (!blob) throw new ReplicationError('blobGone', `blob ${input.digest} no longer exists`);
  const placements = await placementsOf(d.db, blob.id);
  if (placements.some((p) => p.locationId === target.id)) return { target: target.name, source: null, bytesTransferred: 0, resumedFrom: 0, alreadyPresent: true };
  // A placement GC marked: the object there may be the one its purge deletes (recordPlacement).
  const hadPlacement = (await placementStateAt(d.db, input.digest, target.id)) !== undefined;

  const record = async () => {
    await d.db.transaction((tx) => recordPlacement(tx, blob.id, target.id, { hadPlacement }));
    await placementAdded(d.redis, input.digest);
  };

  const keeper = new CheckpointKeeper(control, control.checkpoint);
  const key = objectKey(target, input.digest);
  const existing = await target.driver.stat(key);
  if (existing) {
    if (existing.size === input.size && (await verifyExisting(target, key, input.digest, keeper))) {
      await abortSuperseded(target, key, keeper, log);
      await record();
      return { target: target.name, source: null, bytesTransferred: 0, resumedFrom: 0, alreadyPresent: true };
    }
    // Wrong bytes under a content address (a torn write by some other tool): replace them.
    log.warn({ digest: input.digest, target: target.name }, 'object at content address has wrong content; replacing');
    await target.driver.delete(key);
  }

  const sources = (await readCopies(d.placement, input.digest, placements)).filter((c) => c.location.id !== target.id);
  const checkpoint = control.checkpoint;
  // Prefer the source we were copying from; any other holder continues the upload as well.
  if (checkpoint) sources.sort((a, b) => Number(b.location.name === checkpoint.source) - Number(a.location.name === checkpoint.source));
  const rejected: string[] = [];
  let outage: string | undefined;
  for (let i = 0; i < sources.length; i++) {
    const copy = sources[i]!;
    const source = copy.location;
    try {
      const resume = keeper.current ? await resumePoint(d, target, key, input, keeper) : undefined;
      const r = await copyFrom(d, copy, target, input, keeper, resume, control.signal);
      await record();
      await d.metrics.copied({ clientRegion: target.region, location: source.name, locationRegion: source.region }, target.name, r.bytesTransferred);
      log.info({ digest: input.digest, source: source.name, target: target.name, bytes: r.bytesTransferred, resumedFrom: r.resumedFrom }, 'blob copied');
      return { target: target.name, source: source.name, ...r, alreadyPresent: false };
    } catch (e) {
      if (e instanceof SourceRejected && e.resumed) {
        // The bytes before the checkpoint may have come from another source: start over from
        // this one before blaming it.
        log.warn({ digest: input.digest, source: source.name, target: target.name }, 'resumed copy hashed wrong; restarting from byte 0');
        i--;
        continue;
      }
      if (e instanceof SourceRejected) {
        await d.metrics.failed(e.reason, source.name, target.name);
        log.warn({ digest: input.digest, source: source.name, target: target.name, reason: e.reason }, e.message);
        rejected.push(`${source.name}: ${e.message}`);
        continue;
      }
      if (e instanceof StorageUnavailableError) {
        await d.metrics.failed(e.location === target.name ? 'target_unavailable' : 'source_unavailable', source.name, target.name);
        await d.placement.health.reportFailure(e.location, e.message);
        if (e.location === target.name) throw new ReplicationError('targetUnavailable', e.message);
        // The next holder continues from the last checkpoint.
        outage = e.message;
        continue;
      }
      throw e;
    }
  }
  if (outage || sources.length === 0) {
    // Every source is unreachable (or none is known yet): retried with backoff until one is back.
    throw new ReplicationError('sourcesUnavailable', outage ?? `no location holds ${input.digest} yet`);
  }
  throw new ReplicationError('noGoodSource', `no location has a good copy of ${input.digest}`, rejected);
}

/** The multipart upload the checkpoint names, if it can be continued: its parts are in storage
 * exactly as checkpointed and the hash state loads in this process. Otherwise the upload is
 * aborted (nothing would ever complete it) and the copy starts from byte 0. */
async function resumePoint(d: CopyDeps, target: Location, key: string, input: CopyInput, keeper: CheckpointKeeper): Promise<ResumePoint | undefined> {
  const cp = keeper.current!;
  let why: string;
  try {
    const present = (await target.driver.listParts(key, cp.uploadId)).sort((a, b) => a.partNumber - b.partNumber);
    const parts = cp.parts ?? present.filter((p) => p.partNumber <= (cp.partCount ?? 0));
    const intact = cp.parts
      ? cp.parts.every((p) => present.some((q) => q.partNumber === p.partNumber && q.etag === p.etag))
      : parts.length === cp.partCount && parts.every((p, i) => p.partNumber === i + 1) && partsDigestOf(parts) === cp.partsDigest;
    const covered = parts.reduce((n, p) => n + p.size, 0);
    if (!intact || parts.length === 0 || (!cp.parts && covered !== cp.offset) || cp.offset > input.size) {
      why = 'its parts are not in storage as checkpointed';
    } else {
      try {
        const hasher = await restoreHasher(Buffer.from(cp.hashState, 'base64'));
        d.logger.info({ digest: input.digest, target: target.name, offset: cp.offset }, 'resuming copy from heartbeat');
        return { uploadId: cp.uploadId, parts, offset: cp.offset, hasher };
      } catch (e) {
        // e.g. saved by the native hasher, restored where only the WebAssembly one loads.
        why = `its hash state cannot be restored here (${(e as Error).message})`;
      }
    }
  } catch (e) {
    if (!(e instanceof ObjectNotFoundError)) throw e;
    keeper.forget();
    return undefined;
  }
  d.logger.warn({ digest: input.digest, target: target.name, uploadId: cp.uploadId }, `not resuming the copy: ${why}; starting over`);
  await abortSuperseded(target, key, keeper, d.logger);
  return undefined;
}

/** Aborts the multipart upload the checkpoint names: the copy no longer needs it. */
async function abortSuperseded(target: Location, key: string, keeper: CheckpointKeeper, log: Logger): Promise<void> {
  const cp = keeper.current;
  if (!cp) return;
  try {
    await target.driver.abortMultipart(key, cp.uploadId);
  } catch (e) {
    if (!(e instanceof ObjectNotFoundError)) throw e;
  }
  log.info({ target: target.name, uploadId: cp.uploadId }, 'aborted a superseded multipart upload');
  keeper.forget();
  keeper.report();
}

/** Hashes an object already in the target (a previous attempt finished the upload but did
 * not record it): trust nothing that was not verified. */
async function verifyExisting(loc: Location, key: string, digest: string, keeper: CheckpointKeeper): Promise<boolean> {
  const h = createStreamingHasher(parseDigest(digest).algorithm);
  const r = await loc.driver.read(key);
  for await (const c of r.body) {
    h.update(c as Buffer);
    keeper.report();
  }
  return h.digest() === digest;
}

async function copyFrom(
  d: CopyDeps,
  { location: source, key: sourceKey }: BlobCopy,
  target: Location,
  input: CopyInput,
  keeper: CheckpointKeeper,
  resume: ResumePoint | undefined,
  signal: AbortSignal,
): Promise<{ bytesTransferred: number; resumedFrom: number }> {
  const key = objectKey(target, input.digest);
  const { algorithm } = parseDigest(input.digest);

  if (input.size === 0) {
    try {
      await target.driver.write(key, Buffer.alloc(0), { ifAbsent: true });
    } catch (e) {
      if (!(e instanceof ObjectExistsError)) throw e;
    }
    return { bytesTransferred: 0, resumedFrom: 0 };
  }

  // Small blobs: one GET and one PUT, nothing to checkpoint.
  if (input.size <= SINGLE_PUT_MAX && !resume) return copySmall(source, target, input, sourceKey, key);

  const offset = resume?.offset ?? 0;
  const hasher = resume?.hasher ?? (await createResumableHasher(algorithm));
  const parts = resume?.parts ?? [];

  // Part boundaries: the hash state after each part, in order. A checkpoint is the last
  // boundary whose part and every earlier part are uploaded.
  let cutOffset = offset;
  const boundaries = new Map<number, { end: number; state: string }>();
  const done = new Map<number, CompletedPart>(parts.map((p) => [p.partNumber, p]));
  let contiguous = Math.max(0, ...parts.map((p) => p.partNumber));
  const writer: MultipartWriter = new MultipartWriter(target.driver, key, {
    uploadId: resume?.uploadId,
    parts,
    onCut: (bytes, n) => {
      hasher.update(bytes);
      cutOffset += bytes.length;
      boundaries.set(n, { end: cutOffset, state: hasher.save().toString('base64') });
    },
    onPart: (p) => {
      done.set(p.partNumber, p);
      const before = contiguous;
      while (done.has(contiguous + 1) && boundaries.has(contiguous + 1)) contiguous++;
      if (contiguous === before || !writer.uploadId) return;
      const b = boundaries.get(contiguous)!;
      const covered = [...done.values()].filter((q) => q.partNumber <= contiguous).sort((x, y) => x.partNumber - y.partNumber);
      keeper.report({
        source: source.name,
        target: target.name,
        uploadId: writer.uploadId,
        partCount: contiguous,
        partsDigest: partsDigestOf(covered),
        offset: b.end,
        hashState: b.state,
      });
    },
  });
  const fail = async (message: string) => {
    await writer.abort();
    keeper.forget();
    keeper.report();
    throw new SourceRejected('digest_mismatch', message, offset > 0);
  };

  // Every byte is already uploaded (the last attempt ended between its last part and the
  // completion): nothing to read, only the completion to redo.
  if (offset === input.size) {
    const actual = hasher.digest();
    if (actual !== input.digest) await fail(`resumed upload of ${input.size} bytes hashes to ${actual}, not ${input.digest}`);
    await complete(target, key, writer, parts, keeper);
    return { bytesTransferred: 0, resumedFrom: offset };
  }

  const read = await openSource(source, sourceKey, input, offset);
  // Heartbeat even while a part is uploading, so a slow part is not taken for a dead worker.
  const beat = setInterval(() => keeper.report(), 2000);
  const abort = () => read.body.destroy(new Error('copy cancelled'));
  signal.addEventListener('abort', abort);
  let transferred = 0;
  try {
    for await (const chunk of read.body) {
      transferred += (chunk as Buffer).length;
      await writer.write(chunk as Buffer);
    }
    await writer.flushRemainder();
    const all = await writer.parts();
    const actual = hasher.digest();
    if (actual !== input.digest) await fail(`bytes from ${source.name} hash to ${actual}, not ${input.digest}`);
    await complete(target, key, writer, all, keeper);
    return { bytesTransferred: transferred, resumedFrom: offset };
  } finally {
    // On failure the multipart upload is kept: the next attempt resumes from the checkpoint.
    clearInterval(beat);
    signal.removeEventListener('abort', abort);
  }
}

async function complete(target: Location, key: string, writer: MultipartWriter, parts: CompletedPart[], keeper: CheckpointKeeper): Promise<void> {
  try {
    await target.driver.completeMultipart(key, writer.uploadId!, parts, { ifAbsent: true });
  } catch (e) {
    if (!(e instanceof ObjectExistsError)) throw e;
    // Another copy of the same content won the race; ours is redundant.
    await writer.abort();
  }
  keeper.forget();
}

/** Opens the source object from `offset`; a missing object or a wrong size rejects the source. */
async function openSource(source: Location, sourceKey: string, input: CopyInput, offset: number): Promise<ObjectRead> {
  let read: ObjectRead;
  try {
    read = await source.driver.read(sourceKey, offset > 0 ? { start: offset } : undefined);
  } catch (e) {
    if (e instanceof ObjectNotFoundError) throw new SourceRejected('source_missing', `${source.name} has no object for ${input.digest}`);
    throw e;
  }
  if (read.totalSize !== input.size) {
    read.body.destroy();
    throw new SourceRejected('size_mismatch', `${source.name} holds ${read.totalSize} bytes for ${input.digest}, expected ${input.size}`);
  }
  return read;
}

async function copySmall(source: Location, target: Location, input: CopyInput, sourceKey: string, key: string): Promise<{ bytesTransferred: number; resumedFrom: number }> {
  const read = await openSource(source, sourceKey, input, 0);
  const chunks: Buffer[] = [];
  // Hashed on the thread pool as the chunks arrive (registry/hashing.ts queue()), beside the
  // event loop that also runs the mirror and the other copies.
  const h = await createResumableHasher(parseDigest(input.digest).algorithm);
  for await (const c of read.body) {
    chunks.push(c as Buffer);
    h.queue(c as Buffer);
  }
  await h.settled();
  const actual = h.digest();
  if (actual !== input.digest) throw new SourceRejected('digest_mismatch', `bytes from ${source.name} hash to ${actual}, not ${input.digest}`);
  try {
    await target.driver.write(key, Buffer.concat(chunks, input.size), { ifAbsent: true });
  } catch (e) {
    if (!(e instanceof ObjectExistsError)) throw e;
  }
  return { bytesTransferred: input.size, resumedFrom: 0 };
}
