// Garbage collection's contract: the collectGarbage workflow (scheduled daily, and on demand with
// `meridian gc run`), its input, progress query and result.
import { defineQuery } from '@temporalio/workflow';
import { TASK_QUEUES } from '../temporal.config.ts';
import { defineWorkflow } from './define.ts';

export interface GcLocationTally {
  location: string;
  blobs: number;
  bytes: number;
}

export interface GcProgress {
  phase: 'manifests' | 'mark' | 'sweep' | 'finish' | 'done';
  dryRun: boolean;
  graceSeconds: number;
  /** Untagged manifests past the grace period deleted (dry run: that would be). */
  manifestsDeleted: number;
  manifestSample: string[];
  blobsScanned: number;
  /** Blobs marked for deletion (dry run: that would be), and their bytes. */
  blobsMarked: number;
  bytesMarked: number;
  /** Copies marked per location (dry run: reclaimable per location). */
  markedPerLocation: GcLocationTally[];
  /** Copies deleted per location, and their bytes (reclaimed). */
  reclaimedPerLocation: GcLocationTally[];
  /** Locations whose deletions have not finished (down: retried until they are back). */
  pendingLocations: string[];
  /** Locations that gave up for this run; their marked copies wait for the next one. */
  failedLocations: { location: string; reason: string }[];
  blobRowsDeleted: number;
  /** Last blob id marked from (carried across continue-as-new). */
  cursor: number;
  /** Last blob id the finish phase examined (runs since the 'gc-finish-cursor' patch). */
  finishCursor?: number;
  /** Last manifest id a dry run examined (a dry run deletes nothing, so it pages by id). */
  manifestCursor?: number;
  /** When the run's first execution started (ISO; carried across continue-as-new). */
  startedAt?: string;
}

export interface CollectGarbageInput {
  /** Report what would be deleted; change nothing. */
  dryRun?: boolean;
  /** Overrides MERIDIAN_GC_GRACE for this run (seconds); a namespace's own grace period still
   * applies to its manifests and blobs. */
  graceSeconds?: number;
  /** Carried across continue-as-new. */
  progress?: GcProgress;
}

export const gcProgressQuery = defineQuery<GcProgress>('progress');

export const collectGarbageWorkflow = defineWorkflow<(input?: CollectGarbageInput) => Promise<GcProgress>>()('collectGarbage', TASK_QUEUES.control);
