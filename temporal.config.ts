// Temporal: connection, namespace, task queues and the custom search attributes every Meridian
// workflow is findable by. Workflow code imports this file, so it must stay free of Node
// modules and must not read the environment at import time.
import { defineSearchAttributeKey, SearchAttributeType } from '@temporalio/common';

export interface TemporalConnectionConfig {
  address: string;
  namespace: string;
}

export function temporalConnection(cfg: { temporal: TemporalConnectionConfig }): TemporalConnectionConfig {
  return { address: cfg.temporal.address, namespace: cfg.temporal.namespace };
}

/** Task queues. Copies run on the queue of the location they write to, so that each region's
 * worker does the writes into its own region. */
export const TASK_QUEUES = {
  /** Workflows of every kind and the activities that only touch the database. */
  control: 'meridian-control',
  /** Mirror syncs: network-heavy reads from upstream registries. */
  mirror: 'meridian-mirror',
} as const;

export function copyTaskQueue(locationName: string): string {
  return `meridian-copy-${locationName}`;
}

/** Custom search attributes, registered with the dev server by `npm start` and by the tests. */
export const SEARCH_ATTRIBUTES = {
  blobDigest: defineSearchAttributeKey('MeridianBlobDigest', SearchAttributeType.KEYWORD),
  repository: defineSearchAttributeKey('MeridianRepository', SearchAttributeType.KEYWORD),
  pendingLocations: defineSearchAttributeKey('MeridianPendingLocations', SearchAttributeType.KEYWORD_LIST),
  completedLocations: defineSearchAttributeKey('MeridianCompletedLocations', SearchAttributeType.KEYWORD_LIST),
  state: defineSearchAttributeKey('MeridianState', SearchAttributeType.KEYWORD),
  location: defineSearchAttributeKey('MeridianLocation', SearchAttributeType.KEYWORD),
  upstream: defineSearchAttributeKey('MeridianUpstream', SearchAttributeType.KEYWORD),
  progressDone: defineSearchAttributeKey('MeridianProgressDone', SearchAttributeType.INT),
  progressFailed: defineSearchAttributeKey('MeridianProgressFailed', SearchAttributeType.INT),
  bytes: defineSearchAttributeKey('MeridianBytes', SearchAttributeType.INT),
} as const;

const CLI_TYPE_NAMES: Record<string, string> = {
  [SearchAttributeType.KEYWORD]: 'Keyword',
  [SearchAttributeType.KEYWORD_LIST]: 'KeywordList',
  [SearchAttributeType.INT]: 'Int',
  [SearchAttributeType.TEXT]: 'Text',
  [SearchAttributeType.BOOL]: 'Bool',
  [SearchAttributeType.DOUBLE]: 'Double',
  [SearchAttributeType.DATETIME]: 'Datetime',
};

/** `Name=Type` pairs for `temporal server start-dev --search-attribute`. */
export function searchAttributeFlags(): string[] {
  return Object.values(SEARCH_ATTRIBUTES).map((k) => `${k.name}=${CLI_TYPE_NAMES[k.type]}`);
}

/** Workflow ids are derived from what the workflow is about, so repeated triggers dedupe. */
export const WORKFLOW_IDS = {
  replicateBlob: (digest: string) => `replicate/${digest}`,
  /** A set of blobs replicated together, named by a hash of its sorted digests. */
  replicateBlobs: (setDigest: string) => `replicate-set/${setDigest}`,
  backfill: (location: string | undefined) => `backfill/${location ?? 'all'}`,
  removeLocation: (location: string) => `remove-location/${location}`,
  mirrorSchedule: (repository: string) => `mirror/${repository}`,
  mirrorSync: (repository: string) => `mirror-sync/${repository}`,
  expireUploadsSchedule: 'maintenance/expire-uploads',
  collectGarbageSchedule: 'maintenance/collect-garbage',
  /** Runs started by `meridian gc run` (one at a time; a dry run has its own id). */
  collectGarbage: (dryRun: boolean) => (dryRun ? 'gc/dry-run' : 'gc/run'),
  sweepOrphansSchedule: 'maintenance/sweep-orphans',
  /** Runs started by `meridian orphans` (one at a time; a dry run has its own id). */
  sweepOrphans: (dryRun: boolean) => (dryRun ? 'orphans/dry-run' : 'orphans/run'),
  /** One location's weekly scrub schedule (`maintenance/`: setup owns it). */
  scrubSchedule: (location: string) => `maintenance/scrub/${location}`,
  /** Runs started by `meridian scrub <location>` (one at a time per location). */
  scrubLocation: (location: string) => `scrub/${location}`,
} as const;
