// The orphan sweep's contract: the sweepOrphans workflow (scheduled daily, and on demand with
// `meridian orphans`), which lists every location's bucket for objects and multipart uploads no
// row accounts for and removes those older than the grace period (gc/orphans.ts).
import { defineQuery } from '@temporalio/workflow';
import { TASK_QUEUES } from '../temporal.config.ts';
import { defineWorkflow } from './define.ts';

/** Days after which a location's lifecycle rule (where the server has one) aborts incomplete
 * multipart uploads: longer than any upload session (24 h idle) or copy (24 h) may live. */
export const ABORT_INCOMPLETE_UPLOADS_DAYS = 7;

/** One location's sweep: also the checkpoint its activity heartbeats. */
export interface OrphanSweep {
  location: string;
  phase: 'sha256' | 'sha512' | 'uploaded' | 'scratch' | 'multipart' | 'done';
  /** Where the listing of the current phase continues. */
  startAfter?: string;
  after?: { key: string; uploadId: string };
  objectsListed: number;
  orphanObjects: number;
  orphanBytes: number;
  multipartListed: number;
  orphanMultipart: number;
  /** The first few orphans, for the report. */
  sample: string[];
  /** The lifecycle rule aborting incomplete multipart uploads: added now, already there, or
   * the server has none (not checked in a dry run). */
  lifecycleRule?: 'added' | 'present' | 'unsupported';
}

export interface SweepOrphansInput {
  /** Report what would be removed; change nothing. */
  dryRun?: boolean;
  /** Overrides MERIDIAN_GC_GRACE for this run (seconds). */
  graceSeconds?: number;
}

export interface SweepOrphansProgress {
  dryRun: boolean;
  graceSeconds: number;
  done: boolean;
  locations: OrphanSweep[];
  pendingLocations: string[];
  failedLocations: { location: string; reason: string }[];
}

export const orphansProgressQuery = defineQuery<SweepOrphansProgress>('progress');

export const sweepOrphansWorkflow = defineWorkflow<(input?: SweepOrphansInput) => Promise<SweepOrphansProgress>>()('sweepOrphans', TASK_QUEUES.control);
