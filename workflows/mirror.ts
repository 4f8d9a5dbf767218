// Repository mirroring workflows.
//
// mirrorSync: started by the repository's Temporal Schedule (`mirror/<repo>`, overlap SKIP) on
// its interval, or at once by a trigger for sync-now. It claims the mirror, lists the upstream's
// tags, keeps those matching the globs, copies them a few at a time on the mirror task queue,
// deletes local tags that no longer match (or vanished upstream), and records the outcome: on
// the mirror_runs row, on the config (sync_status, retries), and on itself (search attributes
// MeridianRepository, MeridianUpstream, MeridianState; a readable summary in the UI). With
// rollback_on_failure a failed or cancelled run puts the tags back exactly as they were; without
// it the tags that synced stay. Long tag lists continue-as-new every few hundred tags.
//
// reconcileMirror: started through the outbox by every change to a mirror row; brings the
// schedule (and a queued or cancelled sync) in step with the row.
//
// deliverMirrorNotification: one webhook delivery with retries, as an abandoned child so a slow
// receiver never holds up (or is cancelled with) the sync.
import {
  ActivityCancellationType,
  ActivityFailure,
  ApplicationFailure,
  CancellationScope,
  CancelledFailure,
  continueAsNew,
  isCancellation,
  ParentClosePolicy,
  patched,
  proxyActivities,
  setCurrentDetails,
  startChild,
  upsertSearchAttributes,
  uuid4,
  workflowInfo,
} from '@temporalio/workflow';
import type * as activities from '../activities/mirror.ts';
import {
  MIRROR_FAILURES,
  MIRROR_TAG_NON_RETRYABLE,
  type MirrorEvent,
  type MirrorNotificationInput,
  type MirrorSyncInput,
  type MirrorSyncResult,
  type MirrorSyncResume,
  type ReconcileMirrorInput,
  WORKFLOWS,
} from '../contract/index.ts';
import { SEARCH_ATTRIBUTES, TASK_QUEUES } from '../temporal.config.ts';

type Activities = ReturnType<typeof activities.createMirrorActivities>;
type TagResult = Awaited<ReturnType<Activities['mirrorTag']>>;

/** Bookkeeping in the database: retried for as long as it takes (PostgreSQL may be restarting). */
const control = proxyActivities<Activities>({
  startToCloseTimeout: '1 minute',
  retry: { initialInterval: '1 second', backoffCoefficient: 2, maximumInterval: '30 seconds' },
});

function upstreamActivities(attempts: number) {
  return proxyActivities<Activities>({
    taskQueue: TASK_QUEUES.mirror,
    startToCloseTimeout: '2 hours',
    // The activities heartbeat while they work: a dead worker is noticed in a minute, and a
    // cancel reaches a running copy.
    heartbeatTimeout: '1 minute',
    // A cancelled sync waits for its copies to stop before it rolls back, so no copy can move a
    // tag after the rollback.
    cancellationType: ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
    retry: { initialInterval: '1 second', backoffCoefficient: 2, maximumInterval: '30 seconds', maximumAttempts: attempts, nonRetryableErrorTypes: MIRROR_TAG_NON_RETRYABLE },
  });
}

/** A batch of tags: retries of the batch itself are for a worker that died or a database that
 * failed (each tag's own retries happen inside); a retry resumes after the recorded tags. */
function batchActivities(tagAttempts: number) {
  return proxyActivities<Activities>({
    taskQueue: TASK_QUEUES.mirror,
    startToCloseTimeout: '6 hours',
    heartbeatTimeout: '1 minute',
    cancellationType: ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
    retry: { initialInterval: '1 second', backoffCoefficient: 2, maximumInterval: '30 seconds', maximumAttempts: Math.max(3, tagAttempts), nonRetryableErrorTypes: MIRROR_TAG_NON_RETRYABLE },
  });
}

/** Tags per batch activity: few enough that a batch's progress shows in the workflow often. */
const BATCH_TAGS = 100;

const notify = proxyActivities<Activities>({
  startToCloseTimeout: '30 seconds',
  retry: { initialInterval: '2 seconds', backoffCoefficient: 2, maximumInterval: '5 minutes', maximumAttempts: 10, nonRetryableErrorTypes: [MIRROR_FAILURES.webhookRefused] },
});

function reasonOf(e: unknown): string {
  if (e instanceof ActivityFailure && e.cause instanceof ApplicationFailure) return e.cause.message ?? String(e.cause);
  if (e instanceof ActivityFailure && e.cause) return e.cause.message;
  return e instanceof Error ? e.message : String(e);
}

export async function deliverMirrorNotification(input: MirrorNotificationInput): Promise<string> {
  return notify.deliverMirrorWebhook(input);
}

/** Starts one delivery per subscription of the repository to `event` (fire and forget). */
async function announce(repository: string, event: MirrorEvent, payload: Record<string, unknown>): Promise<void> {
  try {
    const targets = await control.mirrorWebhookTargets({ repository, event });
    for (const subscriptionId of targets) {
      const deliveryId = uuid4();
      await startChild(deliverMirrorNotification, {
        workflowId: `mirror-notify/${deliveryId}`,
        taskQueue: WORKFLOWS.deliverMirrorNotification.taskQueue,
        args: [{ subscriptionId, event, deliveryId, payload: { event, delivery_id: deliveryId, ...payload } }],
        parentClosePolicy: ParentClosePolicy.ABANDON,
      });
    }
  } catch (e) {
    if (isCancellation(e)) throw e;
    // A notification problem never fails the sync.
  }
}

function eventPayload(repository: string, externalReference: string, extra: Record<string, unknown>): Record<string, unknown> {
  const slash = repository.indexOf('/');
  return {
    repository,
    namespace: repository.slice(0, slash),
    name: repository.slice(slash + 1),
    external_reference: externalReference,
    ...extra,
  };
}

export async function reconcileMirror(input: ReconcileMirrorInput): Promise<unknown> {
  return control.reconcileMirrorState(input);
}

export async function mirrorSync(input: MirrorSyncInput): Promise<MirrorSyncResult> {
  const info = workflowInfo();
  let state: MirrorSyncResume;
  if (input.resume) {
    state = input.resume;
  } else {
    const begun = await control.beginMirrorRun({ repository: input.repository, workflowId: info.workflowId, runId: info.firstExecutionRunId });
    if (begun.kind === 'skipped') {
      upsertSearchAttributes([
        { key: SEARCH_ATTRIBUTES.repository, value: input.repository },
        { key: SEARCH_ATTRIBUTES.state, value: 'SKIPPED' },
      ]);
      setCurrentDetails(`**${input.repository}**: skipped — ${begun.reason}`);
      // The config is gone (e.g. its repository was deleted): remove the schedule that started us.
      if (begun.configMissing) await control.reconcileMirrorState({ repository: input.repository });
      return { status: 'SKIPPED', reason: begun.reason };
    }
    state = {
      runRowId: begun.runRowId,
      upstream: begun.upstreamHost,
      externalReference: begun.externalReference,
      rollbackOnFailure: begun.rollbackOnFailure,
      settings: begun.settings,
      next: 0,
      total: 0,
      done: 0,
      failed: 0,
      firstError: null,
    };
  }
  const upstream = upstreamActivities(state.settings.tagAttempts);
  const batch = batchActivities(state.settings.tagAttempts);
  let bytes = 0;
  const show = (phase: string) => {
    upsertSearchAttributes([
      { key: SEARCH_ATTRIBUTES.repository, value: input.repository },
      { key: SEARCH_ATTRIBUTES.upstream, value: state.upstream },
      { key: SEARCH_ATTRIBUTES.state, value: phase },
      { key: SEARCH_ATTRIBUTES.progressDone, value: state.done },
      { key: SEARCH_ATTRIBUTES.progressFailed, value: state.failed },
    ]);
    setCurrentDetails(
      [
        `**${input.repository}** ← ${state.externalReference}`,
        `- state: ${phase}`,
        `- tags: ${state.done} done, ${state.failed} failed, of ${state.total}`,
        `- on failure: ${state.rollbackOnFailure ? 'roll back to the tags before the run' : 'keep what synced (best effort)'}`,
        ...(state.firstError ? [`- first error: ${state.firstError}`] : []),
      ].join('\n'),
    );
  };

  let status: 'SUCCESS' | 'FAIL' | 'CANCEL' = 'SUCCESS';
  let reason: string | null = null;
  // The part of the plan this run works through: tags offset.. of the run's saved plan. The plan
  // itself stays in the database (a 50k-tag list would pass the 2 MB payload limit).
  let window: { offset: number; tags: string[] } = { offset: 0, tags: [] };
  const perRun = Math.max(1, state.settings.tagsPerRun ?? 300);
  const loadWindow = async () => {
    const loaded = await control.loadMirrorPlan({ runRowId: state.runRowId, offset: state.next, limit: perRun });
    // Histories of earlier releases recorded the whole plan here.
    return Array.isArray(loaded) ? { offset: 0, tags: loaded } : loaded;
  };
  let continueNow = false;
  try {
    if (!input.resume) {
      show('SYNCING');
      await announce(input.repository, 'repo_mirror_sync_started', eventPayload(input.repository, state.externalReference, { message: `Mirror sync of ${input.repository} started` }));
      let plan: Awaited<ReturnType<Activities['planMirrorRun']>>;
      try {
        plan = await upstream.planMirrorRun({ runRowId: state.runRowId });
      } catch (e) {
        if (isCancellation(e)) throw e;
        throw ApplicationFailure.nonRetryable(`could not list the upstream's tags: ${reasonOf(e)}`, MIRROR_FAILURES.planFailed);
      }
      // Earlier releases returned the tags themselves (their histories replay that way).
      if (plan.tags) window = { offset: 0, tags: plan.tags };
      state.total = plan.tags?.length ?? plan.planned;
      if (!plan.tags && state.total > 0) window = await loadWindow();
    } else {
      window = await loadWindow();
    }
    show('SYNCING');

    // Bounded parallelism; with rollback the first failed tag stops new ones (the run will be undone).
    // A run also stops taking tags when Temporal suggests continuing as new (its history is long).
    const yieldWhenSuggested = patched('mirror-continue-as-new-suggested');
    const stopAt = Math.min(state.total, state.next + perRun, window.offset + window.tags.length);
    let stop = false;
    const suggested = () => yieldWhenSuggested && workflowInfo().continueAsNewSuggested;
    // Batches: one activity copies up to BATCH_TAGS tags (each with its own retries), instead
    // of one activity (and Temporal round trip) per tag.
    const batched = patched('mirror-tag-batches');
    const batches = async () => {
      while (!stop && state.next < stopAt && !suggested()) {
        const from = state.next - window.offset;
        const tags = window.tags.slice(from, from + Math.min(BATCH_TAGS, stopAt - state.next));
        const r = await batch
          .mirrorTags({
            runRowId: state.runRowId,
            tags,
            concurrency: Math.max(1, state.settings.tagParallelism),
            attempts: state.settings.tagAttempts,
            stopOnFailure: state.rollbackOnFailure,
          })
          .catch((e: unknown) => {
            // A batch that failed while the sync was being cancelled is the cancel.
            if (!isCancellation(e) && CancellationScope.current().consideredCancelled) throw new CancelledFailure('cancelled');
            throw e;
          });
        state.next += r.taken;
        state.done += r.done;
        state.failed += r.failed;
        bytes += r.bytes;
        state.firstError ??= r.firstError;
        if (r.failed > 0 && state.rollbackOnFailure) stop = true;
        show('SYNCING');
      }
    };
    const worker = async () => {
      while (!stop && state.next < stopAt && !(yieldWhenSuggested && workflowInfo().continueAsNewSuggested)) {
        const tag = window.tags[state.next++ - window.offset]!;
        try {
          const r: TagResult = await upstream.mirrorTag({ runRowId: state.runRowId, tag });
          bytes += r.bytes ?? 0;
          state.done++;
        } catch (e) {
          if (isCancellation(e)) throw e;
          state.failed++;
          const why = reasonOf(e);
          state.firstError ??= `${tag}: ${why}`;
          await control.recordMirrorTagFailure({ runRowId: state.runRowId, tag, error: why });
          if (state.rollbackOnFailure) stop = true;
        }
        show('SYNCING');
      }
    };
    // allSettled: on a cancel every copy has stopped before the bookkeeping below runs.
    const settled = batched
      ? await Promise.allSettled([batches()])
      : await Promise.allSettled(Array.from({ length: Math.max(1, state.settings.tagParallelism) }, worker));
    const rejected = settled.find((r): r is PromiseRejectedResult => r.status === 'rejected');
    if (rejected) throw rejected.reason;

    if (!stop && state.next < state.total) {
      continueNow = true;
    } else if (state.failed > 0) {
      status = 'FAIL';
      reason = `${state.failed} of ${state.total} tags failed; first: ${state.firstError}`;
    }
    if (!continueNow && (status === 'SUCCESS' || !state.rollbackOnFailure)) {
      try {
        await control.pruneMirrorTags({ runRowId: state.runRowId });
      } catch (e) {
        if (isCancellation(e)) throw e;
        status = 'FAIL';
        reason ??= `could not delete tags that no longer match: ${reasonOf(e)}`;
      }
    }
  } catch (e) {
    if (isCancellation(e)) {
      status = 'CANCEL';
      reason = 'cancelled';
    } else {
      status = 'FAIL';
      reason = reasonOf(e);
      state.firstError ??= reason;
    }
  }

  if (continueNow && status === 'SUCCESS') {
    // More tags than one run should hold in its history: carry on in a fresh run.
    await continueAsNew<typeof mirrorSync>({ repository: input.repository, resume: state });
  }

  // Whatever happened above, the bookkeeping runs to the end (also after a cancel).
  return CancellationScope.nonCancellable(async () => {
    if (status !== 'SUCCESS' && state.rollbackOnFailure) {
      show('ROLLING_BACK');
      const r = await control.rollbackMirrorRun({ runRowId: state.runRowId });
      reason = `${reason ?? status}; rolled back (${r.restored} tags restored, ${r.removed} removed${r.missing.length ? `, ${r.missing.length} could not be restored` : ''})`;
    }
    const summary = await control.finishMirrorRun({ runRowId: state.runRowId, status, reason });
    show(status);
    upsertSearchAttributes([{ key: SEARCH_ATTRIBUTES.bytes, value: summary?.bytes ?? bytes }]);
    setCurrentDetails(
      [
        `**${input.repository}** ← ${state.externalReference}: **${status}**`,
        ...(reason ? [`- ${reason}`] : []),
        `- tags: ${Object.entries(summary?.counts ?? {})
          .map(([k, v]) => `${v} ${k}`)
          .join(', ') || 'none'}`,
        `- ${summary?.bytes ?? bytes} bytes in ${summary?.durationSeconds ?? '?'} s`,
      ].join('\n'),
    );
    if (status !== 'CANCEL' && summary) {
      const event: MirrorEvent = status === 'SUCCESS' ? 'repo_mirror_sync_success' : 'repo_mirror_sync_failed';
      await announce(
        input.repository,
        event,
        eventPayload(input.repository, state.externalReference, {
          message: status === 'SUCCESS' ? `Mirror sync of ${input.repository} succeeded` : `Mirror sync of ${input.repository} failed: ${reason}`,
          status,
          reason,
          run: {
            id: summary.runRowId,
            workflow_id: info.workflowId,
            trigger: summary.trigger,
            started: summary.startedAt,
            finished: summary.finishedAt,
            duration_seconds: summary.durationSeconds,
            bytes: summary.bytes,
            counts: summary.counts,
          },
          tags: summary.tags.filter((t) => t.status === 'synced' || t.status === 'unchanged').map((t) => t.tag),
        }),
      );
    }
    return { status, reason, summary };
  });
}
