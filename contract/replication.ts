// The replication workflows' contract: replicateBlob (one per blob), replicateBlobs (the blobs one
// mirrored image brought in, as one workflow), backfill and removeLocation,
// their inputs, results, progress queries and the failure types their copies end with.
import { defineQuery } from '@temporalio/workflow';
import { TASK_QUEUES } from '../temporal.config.ts';
import { defineWorkflow } from './define.ts';

/** Failure types of replication activities. Those in COPY_NON_RETRYABLE end a copy at once. */
export const REPLICATION_FAILURES = {
  /** Every holder was read and none had the bytes of the digest. */
  noGoodSource: 'NoGoodSource',
  /** The target location was removed or is draining. */
  locationGone: 'LocationGone',
  /** The blob was deleted while its copy waited. */
  blobGone: 'BlobGone',
  /** The target location is down: retried. */
  targetUnavailable: 'TargetUnavailable',
  /** Every source is down (or none holds the blob yet): retried. */
  sourcesUnavailable: 'SourcesUnavailable',
  /** Placements appeared at a location being removed. */
  placementsRemain: 'PlacementsRemain',
  /** A removal refused: blobs exist only at the location and could not be copied. */
  blobsAtRisk: 'BlobsAtRisk',
  /** The storage refused the request (4xx: AccessDenied after a credential change, a missing
   * bucket): a configuration problem retrying will not fix. */
  storageRefused: 'StorageRefused',
} as const;

/** Failure types retrying cannot help: the activities raise them non-retryable, and the copy's
 * retry policy lists them too. */
export const REPLICATION_NON_RETRYABLE: string[] = [
  REPLICATION_FAILURES.noGoodSource,
  REPLICATION_FAILURES.locationGone,
  REPLICATION_FAILURES.blobGone,
  REPLICATION_FAILURES.blobsAtRisk,
  REPLICATION_FAILURES.storageRefused,
];

export interface ReplicateBlobInput {
  digest: string;
  /** The repository that caused it, for search and display only. */
  repository?: string;
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

export interface ReplicateBlobResult {
  digest: string;
  state: 'complete' | 'incomplete' | 'gone';
  copies: CopyResult[];
  failed: { target: string; reason: string }[];
  lagSeconds: number | null;
}

/** The blobs one mirrored image brought in, replicated together: one workflow and one copy
 * activity per target location instead of one workflow and one activity per blob and target. */
export interface ReplicateBlobsInput {
  digests: string[];
  /** The repository that caused it, for search and display only. */
  repository?: string;
}

export interface ReplicateBlobsResult {
  blobs: number;
  /** Blobs every wanted location holds now. */
  complete: number;
  /** Blobs deleted before they were copied. */
  gone: number;
  /** Copies made (blob × target), and bytes read for them. */
  copies: number;
  bytesTransferred: number;
  failed: { digest: string; target: string; reason: string }[];
  lagSeconds: number | null;
}

/** One copy activity's share of a replicateBlobs: the blobs `target` is missing. */
export interface CopyBatchInput {
  target: string;
  blobs: { digest: string; size: number }[];
}

export interface CopyBatchResult {
  target: string;
  copied: number;
  alreadyPresent: number;
  bytesTransferred: number;
  /** Blobs no retry can copy (NoGoodSource, BlobGone, …); a retryable failure fails the activity. */
  failed: { digest: string; reason: string }[];
}

export interface BackfillProgress {
  scanned: number;
  queued: number;
  copied: number;
  failed: number;
  bytes: number;
  /** Last blob id scanned. */
  cursor: number;
  done: boolean;
  failures: { digest: string; target: string; reason: string }[];
}

export interface BackfillInput {
  /** Only copy to this location; all locations when absent. */
  location?: string;
  /** Copies in flight at once. */
  window?: number;
  pageSize?: number;
  /** Carried across continue-as-new. */
  progress?: BackfillProgress;
}

export interface RemoveLocationProgress {
  phase: 'protecting' | 'deleting' | 'done' | 'refused' | 'cancelled';
  previousState?: 'active' | 'draining';
  scanned: number;
  copied: number;
  placementsDeleted: number;
  /** The first blobs at risk (at most a hundred: this travels in continue-as-new inputs). */
  atRisk: { digest: string; reason: string }[];
  /** Every blob at risk; absent in progress from earlier releases (then atRisk.length). */
  atRiskTotal?: number;
  cursor: number;
}

export interface RemoveLocationInput {
  name: string;
  /** Also delete the objects from the location's bucket. */
  purge?: boolean;
  progress?: RemoveLocationProgress;
}

export const backfillProgressQuery = defineQuery<BackfillProgress>('progress');
export const removeLocationProgressQuery = defineQuery<RemoveLocationProgress>('progress');

export const replicateBlobWorkflow = defineWorkflow<(input: ReplicateBlobInput) => Promise<ReplicateBlobResult>>()('replicateBlob', TASK_QUEUES.control);
export const replicateBlobsWorkflow = defineWorkflow<(input: ReplicateBlobsInput) => Promise<ReplicateBlobsResult>>()('replicateBlobs', TASK_QUEUES.control);
export const backfillWorkflow = defineWorkflow<(input: BackfillInput) => Promise<BackfillProgress>>()('backfill', TASK_QUEUES.control);
export const removeLocationWorkflow = defineWorkflow<(input: RemoveLocationInput) => Promise<RemoveLocationProgress>>()('removeLocation', TASK_QUEUES.control);
