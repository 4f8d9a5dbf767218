// The integrity scrub's contract: the scrubLocation workflow (one location at a time, scheduled
// weekly per location and run on demand with `meridian scrub <location>`), its input, progress
// query and result.
import { defineQuery } from '@temporalio/workflow';
import { TASK_QUEUES } from '../temporal.config.ts';
import { defineWorkflow } from './define.ts';

/** Re-read bytes per second a scrub allows itself when no rate is given (per location). */
export const DEFAULT_SCRUB_RATE = 25 * 1024 * 1024;

/** A placement the scrub found bad: its object is gone, or its bytes hash to another digest. */
export interface ScrubFinding {
  digest: string;
  problem: 'missing' | 'corrupt';
  detail: string;
}

export interface ScrubProgress {
  location: string;
  /** Fraction of the location's copies re-read (1 = all). */
  sample: number;
  /** Bytes per second the re-reads are held to (0 = unlimited). */
  rateBytesPerSecond: number;
  /** Chooses the sample (a run's sample is fixed across retries and continue-as-new). */
  seed: number;
  phase: 'scan' | 'repair' | 'done';
  /** Copies looked at (sampled or not) and copies re-read with their digest recomputed. */
  examined: number;
  scrubbed: number;
  bytes: number;
  missing: number;
  corrupt: number;
  /** Damaged copies that are available again (re-copied from a healthy replica). */
  repaired: number;
  /** Damaged copies no healthy replica can repair (every copy is bad or gone). */
  unrepairable: string[];
  /** What this run found (the first hundred). */
  findings: ScrubFinding[];
  /** Damaged copies whose repair the run is waiting for (the first few hundred). */
  awaitingRepair: string[];
  repairChecks: number;
  /** Last blob id scanned (carried across continue-as-new). */
  cursor: number;
}

export interface ScrubLocationInput {
  location: string;
  /** 0 < sample ≤ 1; default 1 (every copy). */
  sample?: number;
  /** Bytes per second; default DEFAULT_SCRUB_RATE; 0 = unlimited. */
  rateBytesPerSecond?: number;
  /** Carried across continue-as-new. */
  progress?: ScrubProgress;
}

export const scrubProgressQuery = defineQuery<ScrubProgress>('progress');

export const scrubLocationWorkflow = defineWorkflow<(input: ScrubLocationInput) => Promise<ScrubProgress>>()('scrubLocation', TASK_QUEUES.control);
