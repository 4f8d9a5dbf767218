// collectGarbage: started daily by the `maintenance/collect-garbage` schedule and by
// `meridian gc run [--dry-run]`. Expires untagged manifests past the grace period, marks the
// blobs nothing references any more, then has every location delete its marked copies on its
// own task queue (in parallel; a location that is down is retried until it is back and delays
// only its own deletions), and finally deletes the blob rows left with no copy. gc/blobs.ts
// describes the protocol that keeps concurrent pushes safe.
import {
  CancellationScope,
  ContinueAsNew,
  continueAsNew,
  isCancellation,
  patched,
  proxyActivities,
  setCurrentDetails,
  setHandler,
  upsertSearchAttributes,
  workflowInfo,
} from '@temporalio/workflow';
import type * as activities from '../activities/gc.ts';
import { type CollectGarbageInput, type GcLocationTally, type GcProgress, gcProgressQuery } from '../contract/gc.ts';
import { copyTaskQueue, SEARCH_ATTRIBUTES } from '../temporal.config.ts';

type Activities = ReturnType<typeof activities.createGcActivities>;

const control = proxyActivities<Activities>({ startToCloseTimeout: '10 minutes', retry: { maximumAttempts: 5 } });

/** A location's purge: retried every ≤ 30 s while its storage is down, for up to 6 hours (the
 * run then reports it failed; its marked copies wait for the next run). */
const purgeAt = (location: string) =>
  proxyActivities<Activities>({
    taskQueue: copyTaskQueue(location),
    startToCloseTimeout: '10 minutes',
    // The activity beats every 5 s: a dead worker's purge is retried elsewhere after 30 s.
    heartbeatTimeout: '30 seconds',
    scheduleToCloseTimeout: '6 hours',
    retry: { initialInterval: '1 second', backoffCoefficient: 2, maximumInterval: '30 seconds' },
  }).purgeLocation;

const MARK_PAGE = 1000;
const MANIFEST_BATCH = 500;
const PURGE_BATCH = 500;
const FINISH_BATCH = 1000;
const FINISH_PAGE = 2000;
/** Since 'gc-bounded-history': a run continues as new once its history is this long, not only
 * when Temporal suggests it (at 4 Ki events by default — a run over 100,000 blobs never got
 * there and ended at ~1,000 events in one run). About 70 pages per run. */
const MAX_HISTORY_EVENTS = 500;

function add(list: GcLocationTally[], location: string, blobs: number, bytes: number): void {
  const t = list.find((x) => x.location === location);
  if (t) {
    t.blobs += blobs;
    t.bytes += bytes;
  } else list.push({ location, blobs, bytes });
}

export async function collectGarbage(input: CollectGarbageInput = {}): Promise<GcProgress> {
  const p: GcProgress = input.progress ?? {
    phase: 'manifests',
    dryRun: input.dryRun ?? false,
    graceSeconds: input.graceSeconds ?? -1,
    manifestsDeleted: 0,
    manifestSample: [],
    blobsScanned: 0,
    blobsMarked: 0,
    bytesMarked: 0,
    markedPerLocation: [],
    reclaimedPerLocation: [],
    pendingLocations: [],
    failedLocations: [],
    blobRowsDeleted: 0,
    cursor: 0,
  };
  p.startedAt ??= workflowInfo().startTime.toISOString();
  setHandler(gcProgressQuery, () => p);
  // Runs recorded in gc_runs (last run, reclaimed bytes: API and metrics); earlier releases'
  // runs did not record themselves.
  const recording = patched('gc-record-runs');
  const record = (outcome: 'completed' | 'partial' | 'failed', error?: string) =>
    control.recordGcRun({
      workflowId: workflowInfo().workflowId,
      runId: workflowInfo().firstExecutionRunId,
      dryRun: p.dryRun,
      startedAt: p.startedAt!,
      outcome,
      report: p,
      ...(error ? { error } : {}),
    });
  try {
    await collect(input, p);
  } catch (e) {
    if (recording && !(e instanceof ContinueAsNew)) {
      const reason = isCancellation(e) ? 'cancelled' : failureMessage(e);
      // The run's own failure is what its caller sees, even if recording it fails too.
      await CancellationScope.nonCancellable(() => record('failed', reason)).catch(() => undefined);
    }
    throw e;
  }
  if (recording) await record(p.failedLocations.length > 0 ? 'partial' : 'completed');
  return p;
}

function failureMessage(e: unknown): string {
  const cause = (e as { cause?: unknown }).cause;
  return cause instanceof Error ? cause.message : e instanceof Error ? e.message : String(e);
}

async function collect(input: CollectGarbageInput, p: GcProgress): Promise<void> {
  const bounded = patched('gc-bounded-history');
  const tooLong = () => workflowInfo().continueAsNewSuggested || (bounded && workflowInfo().historyLength >= MAX_HISTORY_EVENTS);
  if (p.graceSeconds < 0) p.graceSeconds = await control.gcGraceSeconds();
  const show = () => {
    const reclaimed = p.reclaimedPerLocation.reduce((a, t) => a + t.bytes, 0);
    upsertSearchAttributes([
      { key: SEARCH_ATTRIBUTES.state, value: p.phase },
      { key: SEARCH_ATTRIBUTES.progressDone, value: p.blobsMarked },
      { key: SEARCH_ATTRIBUTES.bytes, value: p.dryRun ? p.bytesMarked : reclaimed },
      { key: SEARCH_ATTRIBUTES.pendingLocations, value: p.pendingLocations },
    ]);
    setCurrentDetails(
      `${p.dryRun ? 'Dry run: ' : ''}${p.phase}; grace ${p.graceSeconds} s; ${p.manifestsDeleted} untagged manifests expired; ` +
        `scanned ${p.blobsScanned} blobs, ${p.blobsMarked} unreferenced (${p.bytesMarked} bytes); reclaimed ${reclaimed} bytes` +
        (p.pendingLocations.length ? `; waiting for ${p.pendingLocations.join(', ')}` : '') +
        (p.failedLocations.length ? `; failed: ${p.failedLocations.map((f) => f.location).join(', ')}` : ''),
    );
  };
  const maybeContinue = async () => {
    if (tooLong()) await continueAsNew<typeof collectGarbage>({ ...input, progress: p });
  };
  show();

  // A dry run deletes nothing, so it pages through the manifests by id (earlier releases stopped
  // after the first page); a run deletes a batch at a time until a batch comes back short.
  const dryRunPages = p.dryRun && patched('gc-dry-run-pages');
  while (p.phase === 'manifests') {
    const r = await control.expireUntaggedManifests({
      graceSeconds: p.graceSeconds,
      limit: MANIFEST_BATCH,
      dryRun: p.dryRun,
      ...(dryRunPages ? { afterId: p.manifestCursor ?? 0 } : {}),
    });
    p.manifestsDeleted += r.count;
    p.manifestSample = [...p.manifestSample, ...r.sample].slice(0, 10);
    if (dryRunPages) {
      p.manifestCursor = r.nextCursor;
      if (r.done) p.phase = 'mark';
    } else if (p.dryRun || r.count < MANIFEST_BATCH) p.phase = 'mark';
    show();
    await maybeContinue();
  }

  while (p.phase === 'mark') {
    const page = await control.markGarbage({ graceSeconds: p.graceSeconds, afterBlobId: p.cursor, limit: MARK_PAGE, dryRun: p.dryRun });
    p.blobsScanned += page.scanned;
    p.blobsMarked += page.marked;
    p.bytesMarked += page.bytes;
    for (const t of page.perLocation) add(p.markedPerLocation, t.location, t.blobs, t.bytes);
    p.cursor = page.nextCursor;
    if (page.done) p.phase = p.dryRun ? 'done' : 'sweep';
    show();
    await maybeContinue();
  }

  if (p.phase === 'sweep') {
    // Also the copies earlier runs marked but could not delete (a location that was down).
    // A location that gave up earlier in this run (before a continue-as-new) is not retried.
    p.pendingLocations = (await control.gcPendingLocations()).filter((l) => !p.failedLocations.some((f) => f.location === l));
    show();
    // Bounded: each location stops after its current purge when the history is long, and the
    // next run picks the sweep up again (the marked copies are in the database).
    let unfinished = false;
    await Promise.all(
      p.pendingLocations.map(async (location) => {
        try {
          for (;;) {
            const r = await purgeAt(location)({ location, batch: PURGE_BATCH, maxBatches: 20 });
            add(p.reclaimedPerLocation, location, r.deleted, r.bytes);
            show();
            if (!r.remaining) break;
            if (bounded && tooLong()) {
              unfinished = true;
              break;
            }
          }
        } catch (e) {
          p.failedLocations.push({ location, reason: (e as Error).cause instanceof Error ? ((e as Error).cause as Error).message : String(e) });
        } finally {
          p.pendingLocations = p.pendingLocations.filter((l) => l !== location);
          show();
        }
      }),
    );
    if (unfinished) await continueAsNew<typeof collectGarbage>({ ...input, progress: p });
    p.phase = 'finish';
    show();
    await maybeContinue();
  }

  // Since 'gc-finish-cursor': the blob rows are paged by id (gc/blobs.ts deleteUnplacedBlobPage);
  // before, every batch scanned the whole table again.
  const byCursor = p.phase === 'finish' && patched('gc-finish-cursor');
  while (p.phase === 'finish') {
    if (byCursor) {
      const r = await control.deleteUnplacedBlobPage({ afterBlobId: p.finishCursor ?? 0, limit: FINISH_PAGE });
      p.blobRowsDeleted += r.deleted;
      p.finishCursor = r.nextCursor;
      if (r.done) p.phase = 'done';
    } else {
      const n = await control.deleteUnplacedBlobs({ limit: FINISH_BATCH });
      p.blobRowsDeleted += n;
      if (n < FINISH_BATCH) p.phase = 'done';
    }
    show();
    await maybeContinue();
  }
}
