// The mirror workflows' contract: mirrorSync (started by each mirror's Schedule), reconcileMirror
// (started through the outbox on every change to a mirror row), deliverMirrorNotification (one
// webhook delivery), the notification events and the failure types of mirror activities.
import { TASK_QUEUES } from '../temporal.config.ts';
import type { RunSummary } from '../mirror/runs.ts';
import { defineWorkflow } from './define.ts';

export const MIRROR_EVENTS = ['repo_mirror_sync_started', 'repo_mirror_sync_success', 'repo_mirror_sync_failed'] as const;
export type MirrorEvent = (typeof MIRROR_EVENTS)[number];

/** Failure types of mirror activities. */
export const MIRROR_FAILURES = {
  auth: 'UpstreamAuthFailed',
  refused: 'UpstreamRefused',
  protocol: 'UpstreamProtocolError',
  notFound: 'UpstreamNotFound',
  throttled: 'UpstreamThrottled',
  unavailable: 'UpstreamUnavailable',
  runGone: 'MirrorRunGone',
  webhookRefused: 'WebhookRefused',
  webhookUnavailable: 'WebhookUnavailable',
  /** The sync could not list the upstream's tags (the workflow's own failure). */
  planFailed: 'PlanFailed',
} as const;

/** What a tag copy does not retry. */
export const MIRROR_TAG_NON_RETRYABLE: string[] = [MIRROR_FAILURES.auth, MIRROR_FAILURES.refused, MIRROR_FAILURES.protocol, MIRROR_FAILURES.notFound, MIRROR_FAILURES.runGone];

export interface MirrorSettings {
  tagParallelism: number;
  tagAttempts: number;
  /** Tags handled by one workflow run before it continues as new (keeps the history small). */
  tagsPerRun: number;
}

export interface MirrorSyncInput {
  repository: string;
  /** Set when a long run continues as new. */
  resume?: MirrorSyncResume;
}

export interface MirrorSyncResume {
  runRowId: number;
  upstream: string;
  externalReference: string;
  rollbackOnFailure: boolean;
  settings: MirrorSettings;
  next: number;
  total: number;
  done: number;
  failed: number;
  firstError: string | null;
}

export type MirrorSyncResult =
  | { status: 'SKIPPED'; reason: string }
  | { status: 'SUCCESS' | 'FAIL' | 'CANCEL'; reason: string | null; summary: RunSummary | undefined };

export interface ReconcileMirrorInput {
  repository: string;
}

export interface MirrorNotificationInput {
  subscriptionId: string;
  event: MirrorEvent;
  /** The same on every retry of one delivery (receivers dedupe on it). */
  deliveryId: string;
  payload: unknown;
}

export const mirrorSyncWorkflow = defineWorkflow<(input: MirrorSyncInput) => Promise<MirrorSyncResult>>()('mirrorSync', TASK_QUEUES.control);
export const reconcileMirrorWorkflow = defineWorkflow<(input: ReconcileMirrorInput) => Promise<unknown>>()('reconcileMirror', TASK_QUEUES.control);
export const deliverMirrorNotificationWorkflow = defineWorkflow<(input: MirrorNotificationInput) => Promise<string>>()(
  'deliverMirrorNotification',
  TASK_QUEUES.control,
);
