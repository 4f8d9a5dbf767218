// Blob records: one row per digest, a placement per location that holds the bytes, a link per
// repository allowed to use it. Committing a blob's placement writes the replication intent in
// the same transaction, so no placement is ever left unreplicated.
import { createHash } from 'node:crypto';
import { and, eq, inArray, sql } from 'drizzle-orm';
import type { DbOrTx } from '../db/client.ts';
import { blobPlacements, blobs, repositoryBlobs } from '../db/schema.ts';
import { type ReplicateBlobInput, type ReplicateBlobsInput, replicateBlobsWorkflow, replicateBlobWorkflow } from '../contract/replication.ts';
import { enqueueWorkflowStart, supersedeIntents } from '../platform/outbox.ts';
import { WORKFLOW_IDS } from '../temporal.config.ts';

export type BlobRow = typeof blobs.$inferSelect;
export type BlobPlacementState = (typeof blobPlacements.$inferSelect)['state'];

/** States whose object must not be relied on at the content address: GC is deleting it, or the
 * scrub found it missing or wrong. A push brings its own object (a key nobody else writes) and
 * takes such a placement over. */
export function needsOwnObject(state: BlobPlacementState | undefined): boolean {
  return state === 'purging' || state === 'damaged';
}

export async function blobByDigest(db: DbOrTx, digest: string): Promise<BlobRow | undefined> {
  const [row] = await db.select().from(blobs).where(eq(blobs.digest, digest));
  return row;
}

/** The blob, when the repository may use it (it was pushed, mounted or mirrored there). */
export async function linkedBlob(db: DbOrTx, repositoryId: number, digest: string): Promise<BlobRow | undefined> {
  const [row] = await db
    .select({ blob: blobs })
    .from(blobs)
    .innerJoin(repositoryBlobs, and(eq(repositoryBlobs.blobId, blobs.id), eq(repositoryBlobs.repositoryId, repositoryId)))
    .where(eq(blobs.digest, digest));
  return row?.blob;
}

/** The blob, when the repository may use it and a copy of it is available: one whose copies
 * garbage collection has marked or is deleting is unknown to pulls (until a push revives it). */
export async function servableBlob(db: DbOrTx, repositoryId: number, digest: string): Promise<BlobRow | undefined> {
  const [row] = await db
    .select({ blob: blobs })
    .from(blobs)
    .innerJoin(repositoryBlobs, and(eq(repositoryBlobs.blobId, blobs.id), eq(repositoryBlobs.repositoryId, repositoryId)))
    .where(
      and(
        eq(blobs.digest, digest),
        sql`exists (select 1 from ${blobPlacements} p where p.blob_id = ${blobs.id} and p.state = 'available')`,
      ),
    );
  return row?.blob;
}

/** Which of the digests the repository may use. */
export async function linkedDigests(db: DbOrTx, repositoryId: number, digests: string[]): Promise<Map<string, BlobRow>> {
  if (digests.length === 0) return new Map();
  const rows = await db
    .select({ blob: blobs })
    .from(blobs)
    .innerJoin(repositoryBlobs, and(eq(repositoryBlobs.blobId, blobs.id), eq(repositoryBlobs.repositoryId, repositoryId)))
    .where(inArray(blobs.digest, digests));
  return new Map(rows.map((r) => [r.blob.digest, r.blob]));
}

export async function linkBlob(db: DbOrTx, repositoryId: number, blobId: number): Promise<void> {
  await db.insert(repositoryBlobs).values({ repositoryId, blobId }).onConflictDoNothing();
}

export async function unlinkBlob(db: DbOrTx, repositoryId: number, blobId: number): Promise<boolean> {
  const rows = await db
    .delete(repositoryBlobs)
    .where(and(eq(repositoryBlobs.repositoryId, repositoryId), eq(repositoryBlobs.blobId, blobId)))
    .returning();
  return rows.length > 0;
}

/** A verified copy of a blob: the location, and the object there when it is not the content
 * address (resolve with `storage/paths.ts` `placementKey`). */
export interface Placement {
  locationId: number;
  objectKey: string | null;
}

/** The verified copies of the blob. */
export async function placementsOf(db: DbOrTx, blobId: number): Promise<Placement[]> {
  return db
    .select({ locationId: blobPlacements.locationId, objectKey: blobPlacements.objectKey })
    .from(blobPlacements)
    .where(and(eq(blobPlacements.blobId, blobId), eq(blobPlacements.state, 'available')));
}

/** Ids of the locations holding a verified copy of the blob. */
export async function placementLocationIds(db: DbOrTx, blobId: number): Promise<number[]> {
  return (await placementsOf(db, blobId)).map((p) => p.locationId);
}

/** The verified copy of a blob in one location, if there is one. */
export async function placementAt(db: DbOrTx, digest: string, locationId: number): Promise<Placement | undefined> {
  const [row] = await db
    .select({ locationId: blobPlacements.locationId, objectKey: blobPlacements.objectKey })
    .from(blobPlacements)
    .innerJoin(blobs, eq(blobs.id, blobPlacements.blobId))
    .where(and(eq(blobs.digest, digest), eq(blobPlacements.locationId, locationId), eq(blobPlacements.state, 'available')));
  return row;
}

export interface CommitBlobInput {
  digest: string;
  size: number;
  mediaType?: string | null;
  locationId: number;
  /** The object holding the bytes when it is not the content address (an upload's own object). */
  objectKey?: string | null;
  /** The caller wrote nothing: it relies on the location's existing (available or deleting)
   * placement. Fails with BlobCollectedError when that copy was claimed by GC meanwhile. */
  reuse?: boolean;
  /** Link the blob to this repository too. */
  repositoryId?: number;
  repositoryName?: string;
  /** Replicate with the other blobs of this batch (startReplicationBatch) rather than alone. */
  replication?: ReplicationBatch;
}

/**
 * The blobs one mirrored image brings in, replicated as one workflow (replicateBlobs) once the
 * image's manifests commit: a mirror of 50 tags otherwise starts ~120 replicateBlob workflows and
 * ~240 copy activities, and on a small machine running the Temporal server that work competed with
 * the mirror itself. Each blob still gets its own intent, delayed by DEFERRED_REPLICATION_SECONDS:
 * the batch's transaction supersedes them, and if the image never commits (the worker dies, the
 * tag fails) they start replicateBlob as a push would, a little later.
 */
export class ReplicationBatch {
  readonly digests = new Set<string>();
  readonly deferredIntents: number[] = [];
}

/** How long a batched blob's own replication waits for its batch to supersede it. */
export const DEFERRED_REPLICATION_SECONDS = 120;

/** Starts the batch's replication (one replicateBlobs per set of digests) in the caller's
 * transaction, superseding the blobs' deferred intents. */
export async function startReplicationBatch(tx: DbOrTx, batch: ReplicationBatch, repositoryName?: string): Promise<void> {
  if (batch.digests.size === 0) return;
  const digests = [...batch.digests].sort();
  const workflowId = WORKFLOW_IDS.replicateBlobs(createHash('sha256').update(digests.join('\n')).digest('hex'));
  const args: ReplicateBlobsInput = { digests, ...(repositoryName ? { repository: repositoryName } : {}) };
  await enqueueWorkflowStart(tx, replicateBlobsWorkflow, { workflowId, args: [args] });
  await supersedeIntents(tx, batch.deferredIntents, workflowId);
}

export interface CommittedPlacement {
  blob: BlobRow;
  newPlacement: boolean;
  /** Whether the placement now refers to the caller's object (`input.objectKey`). When not, the
   * location already held the blob elsewhere and the caller's object is redundant. */
  usesObject: boolean;
}

/** A push relied on a copy that garbage collection claimed while the push ran: the client
 * pushes again (answered 503 with Retry-After, which clients retry). */
export class BlobCollectedError extends Error {
  constructor(readonly digest: string) {
    super(`blob ${digest} was being garbage-collected while it was pushed; push it again`);
    this.name = 'BlobCollectedError';
  }
}

/** The blob row, locked FOR KEY SHARE (GC deletes blob rows under FOR UPDATE, so a commit and
 * the deletion serialize), created when missing. */
async function lockedBlob(tx: DbOrTx, input: { digest: string; size: number; mediaType?: string | null }): Promise<BlobRow> {
  for (let attempt = 0; ; attempt++) {
    await tx.insert(blobs).values({ digest: input.digest, size: input.size, mediaType: input.mediaType ?? null }).onConflictDoNothing();
    const [row] = await tx.select().from(blobs).where(eq(blobs.digest, input.digest)).for('key share');
    if (row) return row;
    // Deleted by GC between the insert and the lock: insert again.
    if (attempt >= 3) throw new Error(`blob ${input.digest} keeps disappearing`);
  }
}

/**
 * Records that `location` holds the verified bytes of `digest`: the blob row (once per digest),
 * the placement (once per location), the repository link, and — when the placement is new or
 * revived from GC — the intent to replicate the blob to the other locations, all in the caller's
 * transaction.
 *
 * Placements GC marked `deleting` still have their object: a commit revives them (keeping that
 * object). One GC is `purging` has an object about to go: only a caller bringing its own object
 * (a key nobody else writes) takes it over; the purge then removes just the old object. A
 * `damaged` one (the scrub found its object missing or wrong) is taken over the same way.
 */
export async function commitBlob(tx: DbOrTx, input: CommitBlobInput): Promise<CommittedPlacement> {
  const blob = await lockedBlob(tx, input);
  if (blob.size !== input.size) {
    // Same digest, different size: impossible unless a hash collision or a bug; refuse loudly.
    throw new Error(`blob ${input.digest} is recorded with size ${blob.size}, not ${input.size}`);
  }
  const objectKey = input.objectKey ?? null;
  const where = and(eq(blobPlacements.blobId, blob.id), eq(blobPlacements.locationId, input.locationId));
  let newPlacement = false;
  let finalKey: string | null = null;
  for (let attempt = 0; ; attempt++) {
    const [current] = await tx.select().from(blobPlacements).where(where).for('update');
    if (!current) {
      if (input.reuse) throw new BlobCollectedError(input.digest);
      const inserted = await tx
        .insert(blobPlacements)
        .values({ blobId: blob.id, locationId: input.locationId, state: 'available', objectKey, verifiedAt: sql`now()` })
        .onConflictDoNothing()
        .returning({ id: blobPlacements.id });
      if (inserted.length === 0 && attempt < 3) continue; // another commit inserted it meanwhile
      newPlacement = true;
      finalKey = objectKey;
      break;
    }
    if (needsOwnObject(current.state)) {
      if (objectKey === null) throw new BlobCollectedError(input.digest);
      await tx.update(blobPlacements).set({ state: 'available', objectKey, verifiedAt: sql`now()` }).where(where);
      finalKey = objectKey;
    } else {
      await tx.update(blobPlacements).set({ state: 'available', verifiedAt: sql`now()` }).where(where);
      finalKey = current.objectKey;
    }
    // A revived placement: the blob's other copies may be gone meanwhile, so replicate again.
    newPlacement = current.state !== 'available';
    break;
  }
  const usesObject = finalKey === objectKey;
  if (input.repositoryId !== undefined) await linkBlob(tx, input.repositoryId, blob.id);
  if (newPlacement) await enqueueReplication(tx, input.digest, input.repositoryName, input.replication);
  return { blob, newPlacement, usesObject };
}

async function enqueueReplication(tx: DbOrTx, digest: string, repositoryName?: string, batch?: ReplicationBatch): Promise<void> {
  const args: ReplicateBlobInput = { digest, ...(repositoryName ? { repository: repositoryName } : {}) };
  const id = await enqueueWorkflowStart(tx, replicateBlobWorkflow, {
    workflowId: WORKFLOW_IDS.replicateBlob(digest),
    args: [args],
    ...(batch ? { delaySeconds: DEFERRED_REPLICATION_SECONDS } : {}),
  });
  // Recorded before the caller's transaction commits: should it roll back, the batch names a row
  // that does not exist (superseding it changes nothing) and a digest its workflow finds gone.
  if (batch) {
    batch.digests.add(digest);
    batch.deferredIntents.push(id);
  }
}

/**
 * Called by a manifest PUT for the blobs it references, in its transaction: locks their rows
 * (so GC's mark waits and then sees the reference), revives placements GC marked `deleting`
 * (their objects are intact) and returns the digests that have no usable copy left — those a
 * manifest must not reference until they are pushed again.
 */
export async function claimBlobsForManifest(tx: DbOrTx, blobRows: BlobRow[], repositoryName?: string): Promise<string[]> {
  if (blobRows.length === 0) return [];
  const ids = blobRows.map((b) => b.id);
  await tx.select({ id: blobs.id }).from(blobs).where(inArray(blobs.id, ids)).for('key share');
  const revived = await tx
    .update(blobPlacements)
    .set({ state: 'available' })
    .where(and(inArray(blobPlacements.blobId, ids), eq(blobPlacements.state, 'deleting')))
    .returning({ blobId: blobPlacements.blobId });
  const live = await tx
    .selectDistinct({ blobId: blobPlacements.blobId })
    .from(blobPlacements)
    .where(and(inArray(blobPlacements.blobId, ids), eq(blobPlacements.state, 'available')));
  const liveIds = new Set(live.map((r) => r.blobId));
  const revivedIds = new Set(revived.map((r) => r.blobId));
  for (const b of blobRows) if (revivedIds.has(b.id)) await enqueueReplication(tx, b.digest, repositoryName);
  return blobRows.filter((b) => !liveIds.has(b.id)).map((b) => b.digest);
}

/**
 * Links an existing blob to a repository (a cross-repository mount) when it still has a copy:
 * one GC marked is revived, as a push would. False when GC is deleting its last copies (the
 * client then uploads the bytes).
 */
export async function mountBlob(db: DbOrTx, blob: BlobRow, repositoryId: number): Promise<boolean> {
  return db.transaction(async (tx) => {
    const collected = await claimBlobsForManifest(tx, [blob]);
    if (collected.length > 0) return false;
    await linkBlob(tx, repositoryId, blob.id);
    return true;
  });
}

/** The location's placement of a blob in any state (uploads decide from it whether to write). */
export async function placementStateAt(
  db: DbOrTx,
  digest: string,
  locationId: number,
): Promise<BlobPlacementState | undefined> {
  const [row] = await db
    .select({ state: blobPlacements.state })
    .from(blobPlacements)
    .innerJoin(blobs, eq(blobs.id, blobPlacements.blobId))
    .where(and(eq(blobs.digest, digest), eq(blobPlacements.locationId, locationId)));
  return row?.state;
}
