// Blob records: one row per digest, a placement per location that holds the bytes, a link per
// repository allowed to use it. Committing a blob's placement writes the replication intent in
// the same transaction, so no placement is ever left unreplicated.
import { and, eq, inArray, sql } from 'drizzle-orm';
import type { DbOrTx } from '../db/client.ts';
import { blobPlacements, blobs, repositoryBlobs } from '../db/schema.ts';
import { type ReplicateBlobInput, replicateBlobWorkflow } from '../contract/replication.ts';
import { enqueueWorkflowStart } from '../platform/outbox.ts';
import { WORKFLOW_IDS } from '../temporal.config.ts';

export type BlobRow = typeof blobs.$inferSelect;

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
  /** Link the blob to this repository too. */
  repositoryId?: number;
  repositoryName?: string;
}

export interface CommittedPlacement {
  blob: BlobRow;
  newPlacement: boolean;
  /** Whether the placement now refers to the caller's object (`input.objectKey`). When not, the
   * location already held the blob elsewhere and the caller's object is redundant. */
  usesObject: boolean;
}

/**
 * Records that `location` holds the verified bytes of `digest`: the blob row (once per digest),
 * the placement (once per location), the repository link, and — when the placement is new — the
 * intent to replicate the blob to the other locations, all in the caller's transaction.
 *
 * An existing available placement keeps its object. One being deleted (GC) is taken over when
 * the caller brings its own object (a key nobody else writes): it points at the new object and is
 * available again, so the deletion removes only the object it marked, never the new one.
 */
export async function commitBlob(tx: DbOrTx, input: CommitBlobInput): Promise<CommittedPlacement> {
  await tx
    .insert(blobs)
    .values({ digest: input.digest, size: input.size, mediaType: input.mediaType ?? null })
    .onConflictDoNothing();
  const blob = (await blobByDigest(tx, input.digest))!;
  if (blob.size !== input.size) {
    // Same digest, different size: impossible unless a hash collision or a bug; refuse loudly.
    throw new Error(`blob ${input.digest} is recorded with size ${blob.size}, not ${input.size}`);
  }
  const objectKey = input.objectKey ?? null;
  const takeOver = objectKey !== null;
  const placed = await tx
    .insert(blobPlacements)
    .values({ blobId: blob.id, locationId: input.locationId, state: 'available', objectKey, verifiedAt: sql`now()` })
    .onConflictDoUpdate({
      target: [blobPlacements.blobId, blobPlacements.locationId],
      set: takeOver
        ? {
            verifiedAt: sql`now()`,
            objectKey: sql`case when ${blobPlacements.state} = 'available' then ${blobPlacements.objectKey} else excluded.object_key end`,
            state: 'available',
          }
        : { verifiedAt: sql`now()` },
      setWhere: takeOver ? undefined : sql`${blobPlacements.state} = 'available'`,
    })
    // xmax is 0 on a freshly inserted row version and non-zero on one written by the update.
    .returning({ inserted: sql<boolean>`(xmax = 0)`, objectKey: blobPlacements.objectKey });
  const newPlacement = placed[0]?.inserted === true;
  const usesObject = placed[0] !== undefined && placed[0].objectKey === objectKey;
  if (input.repositoryId !== undefined) await linkBlob(tx, input.repositoryId, blob.id);
  if (newPlacement) {
    const args: ReplicateBlobInput = { digest: input.digest, ...(input.repositoryName ? { repository: input.repositoryName } : {}) };
    await enqueueWorkflowStart(tx, replicateBlobWorkflow, { workflowId: WORKFLOW_IDS.replicateBlob(input.digest), args: [args] });
  }
  return { blob, newPlacement, usesObject };
}
