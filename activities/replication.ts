// Replication activities. Copies run on the target location's task queue, i.e. in the target's
// region: they stream from a source location holding a verified copy into the target with a
// multipart upload, hash as they go, heartbeat a checkpoint at every part boundary and resume
// from it after a crash, verify the digest, and only then record the placement.
import { ApplicationFailure, Context } from '@temporalio/activity';
import { and, eq, gt, inArray, sql } from 'drizzle-orm';
import { blobPlacements, blobs, storageLocations } from '../db/schema.ts';
import type { Services } from '../platform/services.ts';
import { blobByDigest, placementLocationIds } from '../registry/blobs.ts';
import { parseDigest } from '../registry/digest.ts';
import { createResumableHasher, createStreamingHasher, restoreHasher } from '../registry/hashing.ts';
import { readCandidates } from '../registry/placement.ts';
import { placementAdded, placementsRemoved, recordPlacement } from '../replication/placements.ts';
import { placementPlan, placementPlans } from '../replication/policy.ts';
import { type CompletedPart, DEFAULT_PART_SIZE, ObjectExistsError, type ObjectRead, ObjectNotFoundError, StorageUnavailableError } from '../storage/driver.ts';
import type { Location } from '../storage/locations.ts';
import { MultipartWriter } from '../storage/multipart-writer.ts';
import { blobKey } from '../storage/paths.ts';

export interface ReplicationPlan {
  blobId: number;
  digest: string;
  size: number;
  wanted: string[];
  holders: string[];
  missing: string[];
}

export interface CopyInput {
  digest: string;
  size: number;
  target: string;
}

export interface CopyResult {
  target: string;
  source: string | null;
  /** Bytes read from the source in this attempt (less than size after a resume). */
  bytesTransferred: number;
  /** Where this attempt resumed from a heartbeat checkpoint; 0 for a fresh copy. */
  resumedFrom: number;
  alreadyPresent: boolean;
}

/** What a copy heartbeats: enough to continue the multipart upload after a crash. */
export interface CopyCheckpoint {
  source: string;
  /** Shown in the Temporal UI with the rest of the heartbeat. */
  target: string;
  uploadId: string;
  parts: CompletedPart[];
  /** Bytes covered by `parts`. */
  offset: number;
  /** Hash state after exactly `offset` bytes, base64. */
  hashState: string;
}

/** Blobs up to this size are copied with one PUT (held in memory: bounded by the part size). */
const SINGLE_PUT_MAX = DEFAULT_PART_SIZE;

/** Failure types the workflows treat as final for one target. */
export const NON_RETRYABLE = {
  noGoodSource: 'NoGoodSource',
  locationGone: 'LocationGone',
  blobGone: 'BlobGone',
} as const;

class SourceRejected extends Error {
  constructor(
    readonly reason: 'digest_mismatch' | 'source_missing' | 'size_mismatch',
    message: string,
  ) {
    super(message);
  }
}

export function createReplicationActivities(s: Services) {
  const log = s.logger.child({ component: 'replication' });

  async function locationByName(name: string): Promise<Location> {
    await s.locations.fresh();
    let loc = s.locations.byName(name);
    if (!loc) {
      await s.locations.refresh();
      loc = s.locations.byName(name);
    }
    if (!loc) throw ApplicationFailure.nonRetryable(`location ${name} no longer exists`, NON_RETRYABLE.locationGone);
    return loc;
  }

  async function record(blobId: number, digest: string, loc: Location): Promise<void> {
    await s.db.transaction((tx) => recordPlacement(tx, blobId, loc.id));
    await placementAdded(s.redis, digest);
  }

  /** Hashes an object already in the target (a previous attempt finished the upload but did
   * not record it): trust nothing that was not verified. */
  async function verifyExisting(loc: Location, key: string, digest: string): Promise<boolean> {
    const h = createStreamingHasher(parseDigest(digest).algorithm);
    const r = await loc.driver.read(key);
    for await (const c of r.body) {
      h.update(c as Buffer);
      Context.current().heartbeat();
    }
    return h.digest() === digest;
  }

  async function copyFrom(
    source: Location,
    target: Location,
    input: CopyInput,
    checkpoint: CopyCheckpoint | undefined,
  ): Promise<{ bytesTransferred: number; resumedFrom: number }> {
    const key = blobKey(target.pathPrefix, input.digest);
    const sourceKey = blobKey(source.pathPrefix, input.digest);
    const ctx = Context.current();
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
    if (input.size <= SINGLE_PUT_MAX && !checkpoint) return copySmall(source, target, input, sourceKey, key);

    let offset = 0;
    let hasher = await createResumableHasher(algorithm);
    let uploadId: string | undefined;
    let parts: CompletedPart[] = [];
    if (checkpoint && checkpoint.source === source.name) {
      try {
        const present = await target.driver.listParts(key, checkpoint.uploadId);
        const intact = checkpoint.parts.every((p) => present.some((q) => q.partNumber === p.partNumber && q.etag === p.etag));
        if (intact) {
          offset = checkpoint.offset;
          hasher = await restoreHasher(Buffer.from(checkpoint.hashState, 'base64'));
          uploadId = checkpoint.uploadId;
          parts = checkpoint.parts;
          log.info({ digest: input.digest, target: target.name, offset }, 'resuming copy from heartbeat');
        }
      } catch (e) {
        if (!(e instanceof ObjectNotFoundError)) throw e;
      }
    }

    const read = await openSource(source, sourceKey, input, offset);

    // Part boundaries: the hash state after each part, in order. A checkpoint is the last
    // boundary whose part and every earlier part are uploaded.
    let cutOffset = offset;
    const boundaries = new Map<number, { end: number; state: string }>();
    const done = new Map<number, CompletedPart>(parts.map((p) => [p.partNumber, p]));
    let contiguous = Math.max(0, ...parts.map((p) => p.partNumber));
    let latest: CopyCheckpoint | undefined = uploadId ? checkpoint : undefined;
    const writer: MultipartWriter = new MultipartWriter(target.driver, key, {
      uploadId,
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
        latest = {
          source: source.name,
          target: target.name,
          uploadId: writer.uploadId,
          parts: [...done.values()].filter((q) => q.partNumber <= contiguous).sort((x, y) => x.partNumber - y.partNumber),
          offset: b.end,
          hashState: b.state,
        };
        ctx.heartbeat(latest);
      },
    });
    // Heartbeat even while a part is uploading, so a slow part is not taken for a dead worker.
    const beat = setInterval(() => ctx.heartbeat(latest), 2000);
    const abort = () => read.body.destroy(new Error('copy cancelled'));
    ctx.cancellationSignal.addEventListener('abort', abort);
    let transferred = 0;
    try {
      for await (const chunk of read.body) {
        transferred += (chunk as Buffer).length;
        await writer.write(chunk as Buffer);
      }
      await writer.flushRemainder();
      const all = await writer.parts();
      const actual = hasher.digest();
      if (actual !== input.digest) {
        await writer.abort();
        throw new SourceRejected('digest_mismatch', `bytes from ${source.name} hash to ${actual}, not ${input.digest}`);
      }
      try {
        await target.driver.completeMultipart(key, writer.uploadId!, all, { ifAbsent: true });
      } catch (e) {
        if (!(e instanceof ObjectExistsError)) throw e;
        // Another copy of the same content won the race; ours is redundant.
        await writer.abort();
      }
      return { bytesTransferred: transferred, resumedFrom: offset };
    } finally {
      // On failure the multipart upload is kept: the next attempt resumes from the checkpoint.
      clearInterval(beat);
      ctx.cancellationSignal.removeEventListener('abort', abort);
    }
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
    const h = createStreamingHasher(parseDigest(input.digest).algorithm);
    for await (const c of read.body) {
      chunks.push(c as Buffer);
      h.update(c as Buffer);
    }
    const actual = h.digest();
    if (actual !== input.digest) throw new SourceRejected('digest_mismatch', `bytes from ${source.name} hash to ${actual}, not ${input.digest}`);
    try {
      await target.driver.write(key, Buffer.concat(chunks, input.size), { ifAbsent: true });
    } catch (e) {
      if (!(e instanceof ObjectExistsError)) throw e;
    }
    return { bytesTransferred: input.size, resumedFrom: 0 };
  }

  return {
    /** What the blob's replication must do: the wanted locations minus those holding it. */
    async planReplication(digest: string): Promise<ReplicationPlan | null> {
      await s.locations.fresh();
      const blob = await blobByDigest(s.db, digest);
      if (!blob) return null;
      const plan = await placementPlan(s.db, blob.id, s.locations.all());
      return {
        blobId: blob.id,
        digest,
        size: blob.size,
        wanted: plan.wanted.map((l) => l.name),
        holders: plan.holders.map((l) => l.name),
        missing: plan.missing.map((l) => l.name),
      };
    },

    async copyBlobToLocation(input: CopyInput): Promise<CopyResult> {
      const target = await locationByName(input.target);
      if (target.state !== 'active') throw ApplicationFailure.nonRetryable(`location ${target.name} is draining`, NON_RETRYABLE.locationGone);
      const blob = await blobByDigest(s.db, input.digest);
      if (!blob) throw ApplicationFailure.nonRetryable(`blob ${input.digest} no longer exists`, NON_RETRYABLE.blobGone);
      const holders = await placementLocationIds(s.db, blob.id);
      if (holders.includes(target.id)) return { target: target.name, source: null, bytesTransferred: 0, resumedFrom: 0, alreadyPresent: true };

      const key = blobKey(target.pathPrefix, input.digest);
      const existing = await target.driver.stat(key);
      if (existing) {
        if (existing.size === input.size && (await verifyExisting(target, key, input.digest))) {
          await record(blob.id, input.digest, target);
          return { target: target.name, source: null, bytesTransferred: 0, resumedFrom: 0, alreadyPresent: true };
        }
        // Wrong bytes under a content address (a torn write by some other tool): replace them.
        log.warn({ digest: input.digest, target: target.name }, 'object at content address has wrong content; replacing');
        await target.driver.delete(key);
      }

      const sources = (await readCandidates({ locations: s.locations, health: s.health, preference: s.config.storagePreference }, holders)).filter(
        (l) => l.id !== target.id,
      );
      const checkpoint = Context.current().info.heartbeatDetails as CopyCheckpoint | undefined;
      // Resume from the source we were copying from when we can.
      if (checkpoint) sources.sort((a, b) => Number(b.name === checkpoint.source) - Number(a.name === checkpoint.source));
      const rejected: string[] = [];
      let outage: string | undefined;
      for (const source of sources) {
        try {
          const r = await copyFrom(source, target, input, checkpoint);
          await record(blob.id, input.digest, target);
          await s.metrics.replication.copied(source.name, target.name, r.bytesTransferred);
          log.info({ digest: input.digest, source: source.name, target: target.name, bytes: r.bytesTransferred, resumedFrom: r.resumedFrom }, 'blob copied');
          return { target: target.name, source: source.name, ...r, alreadyPresent: false };
        } catch (e) {
          if (e instanceof SourceRejected) {
            await s.metrics.replication.failed(e.reason, source.name, target.name);
            log.warn({ digest: input.digest, source: source.name, target: target.name, reason: e.reason }, e.message);
            rejected.push(`${source.name}: ${e.message}`);
            continue;
          }
          if (e instanceof StorageUnavailableError) {
            await s.metrics.replication.failed(e.location === target.name ? 'target_unavailable' : 'source_unavailable', source.name, target.name);
            await s.health.reportFailure(e.location, e.message);
            if (e.location === target.name) throw ApplicationFailure.retryable(e.message, 'TargetUnavailable');
            outage = e.message;
            continue;
          }
          throw e;
        }
      }
      if (outage || sources.length === 0) {
        // Every source is unreachable (or none is known yet): retried with backoff until one is back.
        throw ApplicationFailure.retryable(outage ?? `no location holds ${input.digest} yet`, 'SourcesUnavailable');
      }
      throw ApplicationFailure.nonRetryable(`no location has a good copy of ${input.digest}`, NON_RETRYABLE.noGoodSource, rejected);
    },

    /** Records replication lag once every wanted location holds the blob. */
    async finishReplication(digest: string): Promise<{ complete: boolean; lagSeconds: number | null }> {
      const blob = await blobByDigest(s.db, digest);
      if (!blob) return { complete: false, lagSeconds: null };
      await s.locations.fresh();
      const plan = await placementPlan(s.db, blob.id, s.locations.all());
      if (plan.missing.length > 0) return { complete: false, lagSeconds: null };
      const [row] = await s.db.execute<{ lag: number }>(sql`
        select extract(epoch from max(verified_at) - min(created_at))::float8 as lag
        from ${blobPlacements} where blob_id = ${blob.id} and state = 'available'`);
      const lag = row?.lag ?? 0;
      await s.metrics.replication.lag(lag);
      return { complete: true, lagSeconds: lag };
    },

    /** A page of blobs (by id) with the locations each is missing from. */
    async scanForBackfill(input: { afterBlobId: number; limit: number; location?: string }): Promise<{
      items: { digest: string; size: number; missing: string[] }[];
      scanned: number;
      nextCursor: number;
      done: boolean;
    }> {
      await s.locations.refresh();
      const page = await s.db
        .select({ id: blobs.id, digest: blobs.digest, size: blobs.size })
        .from(blobs)
        .where(gt(blobs.id, input.afterBlobId))
        .orderBy(blobs.id)
        .limit(input.limit);
      const plans = await placementPlans(s.db, page.map((b) => b.id), s.locations.all());
      const items = page
        .map((b) => ({
          digest: b.digest,
          size: b.size,
          missing: plans.get(b.id)!.missing.map((l) => l.name).filter((n) => !input.location || n === input.location),
          held: plans.get(b.id)!.holders.length,
        }))
        .filter((i) => i.missing.length > 0 && i.held > 0)
        .map(({ held: _held, ...i }) => i);
      return { items, scanned: page.length, nextCursor: page.at(-1)?.id ?? input.afterBlobId, done: page.length < input.limit };
    },

    /** Site removal, step 1: no new writes, reads prefer other locations. Returns the old state. */
    async markDraining(name: string): Promise<'active' | 'draining'> {
      const loc = await locationByName(name);
      await s.db.update(storageLocations).set({ state: 'draining' }).where(eq(storageLocations.id, loc.id));
      await s.locations.refresh();
      return loc.state;
    },

    async restoreLocationState(input: { name: string; state: 'active' | 'draining' }): Promise<void> {
      await s.db.update(storageLocations).set({ state: input.state }).where(eq(storageLocations.name, input.name));
      await s.locations.refresh();
    },

    /** Site removal, step 2: blobs held at `location` that have no verified copy anywhere else,
     * with the locations they could be copied to. */
    async unprotectedBlobs(input: { location: string; afterBlobId: number; limit: number }): Promise<{
      items: { digest: string; size: number; targets: string[] }[];
      scanned: number;
      nextCursor: number;
      done: boolean;
    }> {
      const loc = await locationByName(input.location);
      const page = await s.db
        .select({ id: blobs.id, digest: blobs.digest, size: blobs.size })
        .from(blobPlacements)
        .innerJoin(blobs, eq(blobs.id, blobPlacements.blobId))
        .where(and(eq(blobPlacements.locationId, loc.id), gt(blobPlacements.blobId, input.afterBlobId)))
        .orderBy(blobPlacements.blobId)
        .limit(input.limit);
      const plans = await placementPlans(s.db, page.map((b) => b.id), s.locations.all());
      const others = s.locations.all().filter((l) => l.state === 'active' && l.id !== loc.id);
      const items = page
        .filter((b) => plans.get(b.id)!.holders.every((h) => h.id === loc.id))
        .map((b) => {
          const plan = plans.get(b.id)!;
          // Where it should be by policy; failing that, anywhere active (better than losing it).
          const wanted = plan.wanted.filter((l) => l.id !== loc.id);
          const targets = (wanted.length > 0 ? wanted : others.slice(0, 1)).map((l) => l.name);
          return { digest: b.digest, size: b.size, targets };
        });
      return { items, scanned: page.length, nextCursor: page.at(-1)?.id ?? input.afterBlobId, done: page.length < input.limit };
    },

    /** Site removal, step 3: deletes a batch of the location's placements — only of blobs with a
     * verified copy elsewhere — and, with purge, their objects. */
    async deletePlacementsBatch(input: { location: string; limit: number; purge: boolean }): Promise<{ deleted: number; blocked: string[]; remaining: boolean }> {
      const loc = await locationByName(input.location);
      const page = await s.db
        .select({ blobId: blobPlacements.blobId, digest: blobs.digest })
        .from(blobPlacements)
        .innerJoin(blobs, eq(blobs.id, blobPlacements.blobId))
        .where(eq(blobPlacements.locationId, loc.id))
        .orderBy(blobPlacements.blobId)
        .limit(input.limit);
      if (page.length === 0) return { deleted: 0, blocked: [], remaining: false };
      const elsewhere = await s.db
        .selectDistinct({ blobId: blobPlacements.blobId })
        .from(blobPlacements)
        .innerJoin(storageLocations, eq(storageLocations.id, blobPlacements.locationId))
        .where(
          and(
            inArray(blobPlacements.blobId, page.map((p) => p.blobId)),
            sql`${blobPlacements.locationId} <> ${loc.id}`,
            eq(blobPlacements.state, 'available'),
          ),
        );
      const safe = new Set(elsewhere.map((r) => r.blobId));
      const deletable = page.filter((p) => safe.has(p.blobId));
      const blocked = page.filter((p) => !safe.has(p.blobId)).map((p) => p.digest);
      if (deletable.length > 0) {
        await s.db
          .delete(blobPlacements)
          .where(and(eq(blobPlacements.locationId, loc.id), inArray(blobPlacements.blobId, deletable.map((p) => p.blobId))));
        await placementsRemoved(s.redis);
        if (input.purge) await loc.driver.deleteMany(deletable.map((p) => blobKey(loc.pathPrefix, p.digest)));
      }
      return { deleted: deletable.length, blocked, remaining: page.length === input.limit || blocked.length > 0 };
    },

    /** Site removal, last step. Fails while any placement remains. */
    async deleteLocationRow(name: string): Promise<void> {
      const loc = await locationByName(name);
      const [left] = await s.db.select({ n: sql<number>`count(*)::int` }).from(blobPlacements).where(eq(blobPlacements.locationId, loc.id));
      if ((left?.n ?? 0) > 0) throw ApplicationFailure.retryable(`${left!.n} placements remain at ${name}`, 'PlacementsRemain');
      await s.db.delete(storageLocations).where(eq(storageLocations.id, loc.id));
      await placementsRemoved(s.redis);
      await s.locations.refresh();
    },
  };
}
