// Replication activities: Temporal's side of the copy engine (replication/copy.ts), the
// replication planning (replication/planning.ts) and site removal (replication/removal.ts).
// Copies run on the target location's task queue, i.e. in the target's region; the rest only
// touch the database and run on the control queue. Here: heartbeats, cancellation, and domain
// errors turned into the contract's failure types.
import { ApplicationFailure, Context } from '@temporalio/activity';
import { type CopyBatchInput, type CopyBatchResult, type CopyInput, type CopyResult, REPLICATION_FAILURES, REPLICATION_NON_RETRYABLE } from '../contract/replication.ts';
import type { Services } from '../platform/services.ts';
import { type CopyCheckpoint, copyBlob } from '../replication/copy.ts';
import { type CopyBatchCheckpoint, copyBlobBatch } from '../replication/copy-batch.ts';
import { ReplicationError } from '../replication/errors.ts';
import { finishReplication, finishReplications, planReplication, planReplications, scanForBackfill } from '../replication/planning.ts';
import {
  deleteLocationRow,
  deletePlacementsBatch,
  type LocationState,
  markDraining,
  restoreLocationState,
  unprotectedBlobs,
} from '../replication/removal.ts';
import { deleteScrubSchedule } from '../workers/schedules.ts';

export type { ReplicationPlan } from '../replication/planning.ts';

/** Domain errors as Temporal failures: the contract's type, retryable or not. A storage 4xx
 * (storage/s3.ts StorageRequestError) is not retried: it would fail the same way forever. */
export function toFailure(e: unknown): unknown {
  if (e instanceof ReplicationError) {
    return ApplicationFailure.create({ type: e.type, message: e.message, details: e.details, nonRetryable: REPLICATION_NON_RETRYABLE.includes(e.type) });
  }
  if (e instanceof Error && e.name === 'StorageRequestError') {
    return ApplicationFailure.create({ type: REPLICATION_FAILURES.storageRefused, message: e.message, nonRetryable: true });
  }
  return e;
}

async function mapped<T>(fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (e) {
    throw toFailure(e);
  }
}

/** Scans and batched deletes run under a heartbeat timeout: a beat every few seconds while they work. */
async function beating<T>(fn: () => Promise<T>): Promise<T> {
  const ctx = Context.current();
  const beat = setInterval(() => ctx.heartbeat(), 5000);
  try {
    return await mapped(fn);
  } finally {
    clearInterval(beat);
  }
}

export function createReplicationActivities(s: Services) {
  const log = s.logger.child({ component: 'replication' });
  const copyDeps = { db: s.db, redis: s.redis, placement: s.placement, metrics: s.metrics.replication, logger: log };
  const planning = { db: s.db, locations: s.locations, metrics: s.metrics.replication };
  const removal = { db: s.db, redis: s.redis, locations: s.locations };

  return {
    planReplication: (digest: string) => mapped(() => planReplication(planning, digest)),

    async copyBlobToLocation(input: CopyInput): Promise<CopyResult> {
      const ctx = Context.current();
      return mapped(() =>
        copyBlob(copyDeps, input, {
          checkpoint: ctx.info.heartbeatDetails as CopyCheckpoint | undefined,
          heartbeat: (checkpoint) => ctx.heartbeat(checkpoint),
          signal: ctx.cancellationSignal,
        }),
      );
    },

    finishReplication: (digest: string) => mapped(() => finishReplication(planning, digest)),

    planReplications: (digests: string[]) => mapped(() => planReplications(planning, digests)),

    /** replicateBlobs' copies into one location: its missing blobs of the batch. */
    async copyBlobsToLocation(input: CopyBatchInput): Promise<CopyBatchResult> {
      const ctx = Context.current();
      return mapped(() =>
        copyBlobBatch(copyDeps, input, {
          checkpoint: ctx.info.heartbeatDetails as CopyBatchCheckpoint | undefined,
          heartbeat: (checkpoint) => ctx.heartbeat(checkpoint),
          signal: ctx.cancellationSignal,
        }),
      );
    },

    finishReplications: (digests: string[]) => mapped(() => finishReplications(planning, digests)),

    scanForBackfill: (input: { afterBlobId: number; limit: number; location?: string }) => beating(() => scanForBackfill(planning, input)),

    /** Site removal, step 1. Returns the old state. */
    markDraining: (name: string) => mapped(() => markDraining(removal, name)),

    restoreLocationState: (input: { name: string; state: LocationState }) => mapped(() => restoreLocationState(removal, input.name, input.state)),

    unprotectedBlobs: (input: { location: string; afterBlobId: number; limit: number }) => beating(() => unprotectedBlobs(removal, input)),

    deletePlacementsBatch: (input: { location: string; limit: number; purge: boolean }) => beating(() => deletePlacementsBatch(removal, input)),

    /** The row, then the location's scrub schedule (idempotent: a retry finds both gone). */
    deleteLocationRow: (name: string) =>
      mapped(async () => {
        const r = await deleteLocationRow(removal, name);
        if (r.deleted) await deleteScrubSchedule(s.temporal.client, name);
        return r;
      }),
  };
}
