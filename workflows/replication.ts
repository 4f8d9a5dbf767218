// replicateBlob: one workflow per blob (id `replicate/<digest>`), started through the outbox when
// a blob first lands in a location. Copies it to every location that should hold it, each copy
// running on the target location's task queue, and keeps its search attributes current so the
// Temporal UI shows what is pending and what is done.
//
// replicateBlobs: the same for the blobs one mirrored image brought in (id
// `replicate-set/<hash of the digests>`, started when its tag moves): one copy activity per target
// location carries all the blobs that location is missing.
import {
  ActivityFailure,
  ApplicationFailure,
  patched,
  proxyActivities,
  proxyLocalActivities,
  setCurrentDetails,
  upsertSearchAttributes,
} from '@temporalio/workflow';
import type * as activities from '../activities/replication.ts';
import {
  type CopyResult,
  REPLICATION_NON_RETRYABLE,
  type ReplicateBlobInput,
  type ReplicateBlobResult,
  type ReplicateBlobsInput,
  type ReplicateBlobsResult,
} from '../contract/replication.ts';
import { copyTaskQueue, SEARCH_ATTRIBUTES } from '../temporal.config.ts';

type Activities = ReturnType<typeof activities.createReplicationActivities>;

/** The replication activities that only touch the database (planning, bookkeeping): quick
 * queries, so a short start-to-close. A control worker killed mid-activity costs a retry after
 * seconds, not minutes. Retried for as long as it takes (PostgreSQL may be restarting). */
export const control = proxyActivities<Activities>({
  startToCloseTimeout: '30 seconds',
  retry: { initialInterval: '1 second', maximumInterval: '30 seconds' },
});

/** The same database activities run as local activities, inside the workflow task on the worker
 * that runs the workflow: no activity task through Temporal and no extra workflow task for the
 * result. replicateBlob runs once per blob (a mirror sync of 50 tags starts ~120 of them), and
 * its two planning queries each cost a schedule/poll/complete round trip and a workflow task. */
const localControl = proxyLocalActivities<Activities>({
  startToCloseTimeout: '30 seconds',
  // Past this the retries wait on a timer (PostgreSQL restarting) rather than in the task.
  localRetryThreshold: '10 seconds',
  retry: { initialInterval: '1 second', maximumInterval: '30 seconds' },
});

/** Database scans and batched deletes (which may also delete objects): longer, so they
 * heartbeat and a dead worker is noticed by the heartbeat timeout. */
export const scans = proxyActivities<Activities>({
  startToCloseTimeout: '10 minutes',
  heartbeatTimeout: '30 seconds',
  retry: { initialInterval: '1 second', maximumInterval: '30 seconds' },
});

/** How long one copy may keep retrying (a source or target outage) before its replication is
 * reported incomplete; `meridian replication backfill` finishes it later. */
export const COPY_GIVE_UP_AFTER = '24 hours';

/** Copies of big blobs take long; the heartbeat, not this timeout, is what notices a dead worker. */
function copyActivities(target: string, size: number) {
  const minutes = 10 + Math.ceil(size / (5 * 1024 * 1024) / 60);
  return proxyActivities<Activities>({
    taskQueue: copyTaskQueue(target),
    startToCloseTimeout: `${minutes} minutes`,
    heartbeatTimeout: '20 seconds',
    // Also bounds the wait of a copy nobody polls for (its region's workers are gone); the
    // schedule-to-start latency alert (README, "Watching Temporal") fires long before.
    scheduleToCloseTimeout: COPY_GIVE_UP_AFTER,
    // Storage outages are retried until the bound above; a source with bad bytes, a storage 4xx
    // and a removed location are not.
    retry: {
      initialInterval: '1 second',
      backoffCoefficient: 2,
      maximumInterval: '1 minute',
      nonRetryableErrorTypes: REPLICATION_NON_RETRYABLE,
    },
  });
}

export function copyActivity(target: string, size: number) {
  return copyActivities(target, size).copyBlobToLocation;
}

export function failureReason(e: unknown): string {
  if (e instanceof ActivityFailure && e.cause instanceof ApplicationFailure) return `${e.cause.type}: ${e.cause.message}`;
  return e instanceof Error ? e.message : String(e);
}

export async function replicateBlob(input: ReplicateBlobInput): Promise<ReplicateBlobResult> {
  // Histories of earlier releases ran planning and bookkeeping as (remote) activities.
  const db = patched('replicate-local-planning') ? localControl : control;
  const plan = await db.planReplication(input.digest);
  if (!plan) return { digest: input.digest, state: 'gone', copies: [], failed: [], lagSeconds: null };
  const pending = new Set(plan.missing);
  const completed = new Set(plan.holders);
  const failed: { target: string; reason: string }[] = [];
  const show = (state: string) => {
    upsertSearchAttributes([
      { key: SEARCH_ATTRIBUTES.blobDigest, value: input.digest },
      ...(input.repository ? [{ key: SEARCH_ATTRIBUTES.repository, value: input.repository }] : []),
      { key: SEARCH_ATTRIBUTES.pendingLocations, value: [...pending] },
      { key: SEARCH_ATTRIBUTES.completedLocations, value: [...completed] },
      { key: SEARCH_ATTRIBUTES.state, value: state },
    ]);
    setCurrentDetails(
      [
        `**${input.digest}** (${plan.size} bytes)${input.repository ? ` from ${input.repository}` : ''}`,
        `- held by: ${[...completed].join(', ') || 'none'}`,
        `- copying to: ${[...pending].join(', ') || 'nothing'}`,
        ...(failed.length ? [`- failed: ${failed.map((f) => `${f.target} (${f.reason})`).join('; ')}`] : []),
        `- state: ${state}`,
      ].join('\n'),
    );
  };
  show(pending.size ? 'replicating' : 'complete');

  const copies = await Promise.all(
    plan.missing.map(async (target) => {
      try {
        const r = await copyActivity(target, plan.size)({ digest: input.digest, size: plan.size, target });
        completed.add(target);
        return r;
      } catch (e) {
        failed.push({ target, reason: failureReason(e) });
        return undefined;
      } finally {
        pending.delete(target);
        show(pending.size ? 'replicating' : failed.length ? 'incomplete' : 'complete');
      }
    }),
  );
  const finish = await db.finishReplication(input.digest);
  const state = failed.length || !finish.complete ? 'incomplete' : 'complete';
  show(state);
  return {
    digest: input.digest,
    state,
    copies: copies.filter((c): c is CopyResult => c !== undefined),
    failed,
    lagSeconds: finish.lagSeconds,
  };
}

export async function replicateBlobs(input: ReplicateBlobsInput): Promise<ReplicateBlobsResult> {
  const plans = await localControl.planReplications(input.digests);
  const missing = new Map<string, { digest: string; size: number }[]>();
  for (const plan of plans) {
    for (const target of plan?.missing ?? []) {
      const list = missing.get(target) ?? [];
      list.push({ digest: plan!.digest, size: plan!.size });
      missing.set(target, list);
    }
  }
  const pending = new Set(missing.keys());
  const completed = new Set<string>();
  const failed: ReplicateBlobsResult['failed'] = [];
  const result: ReplicateBlobsResult = { blobs: input.digests.length, complete: 0, gone: plans.filter((p) => !p).length, copies: 0, bytesTransferred: 0, failed, lagSeconds: null };
  const show = (state: string, upsert: boolean) => {
    // Upserted when the copies start and when they end: each upsert is a history event and a
    // visibility write, and a batch is many blobs' worth of work already.
    if (upsert) {
      upsertSearchAttributes([
        ...(input.repository ? [{ key: SEARCH_ATTRIBUTES.repository, value: input.repository }] : []),
        { key: SEARCH_ATTRIBUTES.pendingLocations, value: [...pending] },
        { key: SEARCH_ATTRIBUTES.completedLocations, value: [...completed] },
        { key: SEARCH_ATTRIBUTES.state, value: state },
      ]);
    }
    setCurrentDetails(
      [
        `**${input.digests.length} blobs**${input.repository ? ` from ${input.repository}` : ''}`,
        ...[...missing].map(([target, blobs]) => `- ${target}: ${blobs.length} missing${completed.has(target) ? ', done' : pending.has(target) ? ', copying' : ''}`),
        ...(failed.length ? [`- failed: ${failed.length} (first: ${failed[0]!.digest} to ${failed[0]!.target}: ${failed[0]!.reason})`] : []),
        `- state: ${state}`,
      ].join('\n'),
    );
  };
  show(pending.size ? 'replicating' : 'complete', true);

  await Promise.all(
    [...missing].map(async ([target, blobs]) => {
      try {
        const r = await copyActivities(target, blobs.reduce((n, b) => n + b.size, 0)).copyBlobsToLocation({ target, blobs });
        result.copies += r.copied;
        result.bytesTransferred += r.bytesTransferred;
        for (const f of r.failed) failed.push({ digest: f.digest, target, reason: f.reason });
        if (r.failed.length === 0) completed.add(target);
      } catch (e) {
        const reason = failureReason(e);
        for (const b of blobs) failed.push({ digest: b.digest, target, reason });
      } finally {
        pending.delete(target);
        show(pending.size ? 'replicating' : failed.length ? 'incomplete' : 'complete', false);
      }
    }),
  );
  const finish = await localControl.finishReplications(input.digests);
  result.complete = finish.complete;
  result.lagSeconds = finish.lagSeconds;
  show(failed.length || finish.complete + result.gone < input.digests.length ? 'incomplete' : 'complete', true);
  return result;
}
