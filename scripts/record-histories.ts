// Records the workflow histories the replay test (test/replay.test.ts) replays: every workflow
// type on its happy path and on its continue-as-new, cancellation and failure paths, run by the
// current workflow code against scripted activities on a throw-away Temporal dev server.
//
//   npm run record:histories                      # (re)writes every scenario's histories
//   npm run record:histories -- <scenario> ...    # only these (e.g. one added with a patch)
//
// Re-record only when a workflow change is meant to be incompatible with running workflows
// (and then deploy it as a new Worker Deployment version, README "Deploying a workflow change");
// a patched() change must replay the old histories unchanged — keep them and add new ones.
import { execFile } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { Context } from '@temporalio/activity';
import { Client, Connection, type WorkflowHandle, type WorkflowHandleWithFirstExecutionRunId } from '@temporalio/client';
import { ApplicationFailure } from '@temporalio/common';
import { NativeConnection, Runtime, Worker } from '@temporalio/worker';
import { REPLICATION_FAILURES, MIRROR_FAILURES, WORKFLOWS } from '../contract/index.ts';
import { freePort } from '../devstack/ports.ts';
import { temporalServer } from '../devstack/temporal.ts';
import { toolPath } from '../devstack/tools.ts';
import { copyTaskQueue, TASK_QUEUES } from '../temporal.config.ts';
import { bundleWorkflows } from '../workers/bundle.ts';

const execFileP = promisify(execFile);
const OUT_DIR = fileURLToPath(new URL('../test/histories/', import.meta.url));
const LOCATIONS = ['us-east', 'eu-west', 'ap-south'];
const DIGEST = (n: number) => `sha256:${String(n).repeat(64).slice(0, 64)}`;

type Fake = (...args: never[]) => unknown;
/** The activities of the scenario being recorded; unknown ones fail the recording loudly. */
let script: Record<string, Fake> = {};

function activityProxy(): Record<string, Fake> {
  const names = [
    'planReplication', 'copyBlobToLocation', 'finishReplication', 'planReplications', 'copyBlobsToLocation', 'finishReplications', 'scanForBackfill', 'markDraining', 'restoreLocationState',
    'unprotectedBlobs', 'deletePlacementsBatch', 'deleteLocationRow', 'expireUploadSessions', 'reconcileMirrorState',
    'beginMirrorRun', 'planMirrorRun', 'loadMirrorPlan', 'mirrorTag', 'mirrorTags', 'recordMirrorTagFailure', 'pruneMirrorTags',
    'rollbackMirrorRun', 'finishMirrorRun', 'mirrorWebhookTargets', 'deliverMirrorWebhook',
    'scrubPage', 'checkScrubRepairs', 'scrubFinished', 'orphanGraceSeconds', 'orphanSweepLocations', 'sweepLocationOrphans',
    'gcGraceSeconds', 'expireUntaggedManifests', 'markGarbage', 'gcPendingLocations', 'purgeLocation', 'deleteUnplacedBlobs',
    'deleteUnplacedBlobPage', 'recordGcRun',
  ];
  return Object.fromEntries(
    names.map((n) => [
      n,
      (...args: never[]) => {
        const f = script[n];
        if (!f) throw ApplicationFailure.nonRetryable(`activity ${n} is not scripted in this scenario`);
        return f(...args);
      },
    ]),
  );
}

/** Heartbeats until the activity is cancelled (a copy or tag copy a cancel interrupts). */
async function runUntilCancelled(): Promise<never> {
  const ctx = Context.current();
  for (;;) {
    ctx.heartbeat();
    await ctx.sleep(200);
  }
}

const copied = (input: { target: string }) => ({ target: input.target, source: 'us-east', bytesTransferred: 1024, resumedFrom: 0, alreadyPresent: false });

const summary = (status: string) => ({
  runRowId: 7,
  repository: 'acme/app',
  status,
  reason: null,
  trigger: 'schedule',
  startedAt: '2026-01-01T00:00:00.000Z',
  finishedAt: '2026-01-01T00:00:05.000Z',
  durationSeconds: 5,
  bytes: 4096,
  counts: { synced: 2 },
  tags: [{ tag: 'v1', status: 'synced' }],
});

const begun = (tagsPerRun: number, rollbackOnFailure = false) => ({
  kind: 'begun',
  runRowId: 7,
  upstreamHost: 'registry.example',
  externalReference: 'registry.example/acme/app',
  rollbackOnFailure,
  settings: { tagParallelism: 2, tagAttempts: 2, tagsPerRun },
});

interface Scenario {
  name: string;
  activities: Record<string, Fake>;
  start: (client: Client) => Promise<WorkflowHandleWithFirstExecutionRunId>;
  /** What to do to the running workflow (cancel it), before waiting for it to close. */
  act?: (handle: WorkflowHandle) => Promise<void>;
}

const start = (client: Client, type: keyof typeof WORKFLOWS, workflowId: string, arg: unknown) =>
  client.workflow.start(type, { taskQueue: WORKFLOWS[type].taskQueue, workflowId, args: [arg] });

// Scenarios whose activities return what an earlier release's did (mirrorSync's planMirrorRun
// returning the tags) are kept: their histories are that release's runs, which must keep replaying.
const SCENARIOS: Scenario[] = [
  {
    name: 'replicateBlob-complete',
    activities: {
      planReplication: () => ({ digest: DIGEST(1), size: 1024, holders: ['us-east'], missing: ['eu-west', 'ap-south'] }),
      copyBlobToLocation: copied,
      finishReplication: () => ({ complete: true, lagSeconds: 2 }),
    },
    start: (c) => start(c, 'replicateBlob', `replicate/${DIGEST(1)}`, { digest: DIGEST(1), repository: 'acme/app' }),
  },
  {
    name: 'replicateBlob-copy-failed',
    activities: {
      planReplication: () => ({ digest: DIGEST(2), size: 1024, holders: ['us-east'], missing: ['eu-west', 'ap-south'] }),
      copyBlobToLocation: (input: { target: string }) => {
        if (input.target === 'ap-south') throw ApplicationFailure.nonRetryable('no holder has the bytes', REPLICATION_FAILURES.noGoodSource);
        return copied(input);
      },
      finishReplication: () => ({ complete: false, lagSeconds: null }),
    },
    start: (c) => start(c, 'replicateBlob', `replicate/${DIGEST(2)}`, { digest: DIGEST(2) }),
  },
  {
    name: 'replicateBlob-gone',
    activities: { planReplication: () => null },
    start: (c) => start(c, 'replicateBlob', `replicate/${DIGEST(3)}`, { digest: DIGEST(3) }),
  },
  // Since patched('replicate-local-planning'): planning and bookkeeping as local activities.
  {
    name: 'replicateBlob-local-planning-complete',
    activities: {
      planReplication: () => ({ digest: DIGEST(4), size: 1024, holders: ['us-east'], missing: ['eu-west', 'ap-south'] }),
      copyBlobToLocation: copied,
      finishReplication: () => ({ complete: true, lagSeconds: 2 }),
    },
    start: (c) => start(c, 'replicateBlob', `replicate/${DIGEST(4)}`, { digest: DIGEST(4), repository: 'acme/app' }),
  },
  {
    name: 'replicateBlob-local-planning-copy-failed',
    activities: {
      planReplication: () => ({ digest: DIGEST(5), size: 1024, holders: ['us-east'], missing: ['eu-west', 'ap-south'] }),
      copyBlobToLocation: (input: { target: string }) => {
        if (input.target === 'ap-south') throw ApplicationFailure.nonRetryable('no holder has the bytes', REPLICATION_FAILURES.noGoodSource);
        return copied(input);
      },
      finishReplication: () => ({ complete: false, lagSeconds: null }),
    },
    start: (c) => start(c, 'replicateBlob', `replicate/${DIGEST(5)}`, { digest: DIGEST(5) }),
  },
  {
    name: 'replicateBlobs-complete',
    activities: {
      planReplications: (digests: string[]) =>
        digests.map((digest, i) => (i === 2 ? null : { digest, size: 1024 * (i + 1), holders: ['us-east'], missing: i === 0 ? ['eu-west', 'ap-south'] : ['eu-west'] })),
      copyBlobsToLocation: (input: { target: string; blobs: { digest: string; size: number }[] }) => ({
        target: input.target,
        copied: input.blobs.length,
        alreadyPresent: 0,
        bytesTransferred: input.blobs.reduce((n, b) => n + b.size, 0),
        failed: [],
      }),
      finishReplications: (digests: string[]) => ({ complete: digests.length - 1, lagSeconds: 2 }),
    },
    start: (c) => start(c, 'replicateBlobs', 'replicate-set/complete', { digests: [DIGEST(6), DIGEST(7), DIGEST(8)], repository: 'acme/app' }),
  },
  {
    name: 'replicateBlobs-copy-failed',
    activities: {
      planReplications: (digests: string[]) => digests.map((digest) => ({ digest, size: 1024, holders: ['us-east'], missing: ['eu-west', 'ap-south'] })),
      copyBlobsToLocation: (input: { target: string; blobs: { digest: string }[] }) => {
        if (input.target === 'ap-south') throw ApplicationFailure.nonRetryable('location ap-south is draining', REPLICATION_FAILURES.locationGone);
        return { target: input.target, copied: 1, alreadyPresent: 0, bytesTransferred: 1024, failed: [{ digest: input.blobs[1]!.digest, reason: 'NoGoodSource: no holder has the bytes' }] };
      },
      finishReplications: () => ({ complete: 0, lagSeconds: null }),
    },
    start: (c) => start(c, 'replicateBlobs', 'replicate-set/copy-failed', { digests: [DIGEST(6), DIGEST(7)] }),
  },
  {
    name: 'backfill-continue-as-new',
    activities: (() => {
      let page = 0;
      return {
        scanForBackfill: (input: { afterBlobId: number }) => {
          page++;
          const items = [1, 2, 3].map((i) => ({ digest: DIGEST(i), size: 100 * i, missing: i === 3 ? ['eu-west', 'ap-south'] : ['eu-west'] }));
          return { items, scanned: 3, nextCursor: input.afterBlobId + 3, done: page >= 4 };
        },
        copyBlobToLocation: (input: { digest: string; target: string }) => {
          if (input.digest === DIGEST(2) && input.target === 'eu-west') throw ApplicationFailure.nonRetryable('gone', REPLICATION_FAILURES.blobGone);
          return copied(input);
        },
      };
    })(),
    start: (c) => start(c, 'backfill', 'backfill/all', { window: 2, pageSize: 3 }),
  },
  {
    name: 'removeLocation-complete',
    activities: (() => {
      let batches = 0;
      return {
        markDraining: () => 'active',
        unprotectedBlobs: (input: { afterBlobId: number }) => ({
          items: input.afterBlobId === 0 ? [{ digest: DIGEST(4), size: 10, targets: ['eu-west'] }, { digest: DIGEST(5), size: 20, targets: ['us-east'] }] : [],
          scanned: input.afterBlobId === 0 ? 5 : 0,
          nextCursor: 5,
          done: input.afterBlobId !== 0,
        }),
        copyBlobToLocation: copied,
        deletePlacementsBatch: () => {
          batches++;
          // The first batch finds a blob that landed after the scan: back to protecting (continue-as-new).
          return { deleted: 3, blocked: batches === 1 ? [DIGEST(6)] : [], remaining: batches === 2 };
        },
        deleteLocationRow: () => undefined,
      };
    })(),
    start: (c) => start(c, 'removeLocation', 'remove-location/ap-south', { name: 'ap-south', purge: true }),
  },
  {
    name: 'removeLocation-refused',
    activities: {
      markDraining: () => 'active',
      unprotectedBlobs: () => ({ items: [{ digest: DIGEST(7), size: 10, targets: [] }], scanned: 1, nextCursor: 1, done: true }),
      restoreLocationState: () => undefined,
    },
    start: (c) => start(c, 'removeLocation', 'remove-location/us-east', { name: 'us-east' }),
  },
  {
    name: 'removeLocation-cancelled',
    activities: {
      markDraining: () => 'active',
      unprotectedBlobs: () => ({ items: [{ digest: DIGEST(8), size: 10, targets: ['us-east'] }], scanned: 1, nextCursor: 1, done: true }),
      copyBlobToLocation: runUntilCancelled,
      restoreLocationState: () => undefined,
    },
    start: (c) => start(c, 'removeLocation', 'remove-location/eu-west', { name: 'eu-west' }),
    act: cancelWhenActivityRuns,
  },
  {
    // Since the 'removal-cancel-restores-location' patch: the location gets its state back.
    name: 'removeLocation-cancelled-restores',
    activities: {
      markDraining: () => 'draining',
      unprotectedBlobs: () => ({ items: [{ digest: DIGEST(9), size: 10, targets: ['us-east'] }], scanned: 1, nextCursor: 1, done: true }),
      copyBlobToLocation: runUntilCancelled,
      restoreLocationState: () => undefined,
    },
    start: (c) => start(c, 'removeLocation', 'remove-location/eu-central', { name: 'eu-central' }),
    act: cancelWhenActivityRuns,
  },
  {
    // Since deleteLocationRow reports placements that reappeared instead of throwing.
    name: 'removeLocation-placements-reappeared',
    activities: (() => {
      let rows = 0;
      return {
        markDraining: () => 'active',
        unprotectedBlobs: () => ({ items: [], scanned: 0, nextCursor: 0, done: true }),
        deletePlacementsBatch: () => ({ deleted: 2, blocked: [], remaining: false }),
        deleteLocationRow: () => (++rows === 1 ? { deleted: false, placementsRemaining: 1 } : { deleted: true }),
      };
    })(),
    start: (c) => start(c, 'removeLocation', 'remove-location/sa-east', { name: 'sa-east' }),
  },
  {
    name: 'expireUploads',
    activities: (() => {
      let call = 0;
      return { expireUploadSessions: () => (++call === 1 ? 500 : 3) };
    })(),
    start: (c) => start(c, 'expireUploads', 'maintenance/expire-uploads-run', {}),
  },
  {
    name: 'mirrorSync-continue-as-new',
    activities: {
      beginMirrorRun: () => begun(2),
      mirrorWebhookTargets: (input: { event: string }) => (input.event === 'repo_mirror_sync_success' ? ['sub-1'] : []),
      planMirrorRun: () => ({ tags: ['v1', 'v2', 'v3'], upstreamTags: 5 }),
      loadMirrorPlan: () => ['v1', 'v2', 'v3'],
      mirrorTag: (input: { tag: string }) => ({ tag: input.tag, status: 'synced', bytes: 100 }),
      pruneMirrorTags: () => ['old'],
      finishMirrorRun: () => summary('SUCCESS'),
      deliverMirrorWebhook: () => 'delivered (200)',
    },
    start: (c) => start(c, 'mirrorSync', 'mirror-sync/acme/app', { repository: 'acme/app' }),
  },
  {
    // Since the plan stays in the database (read a window per run) and runs continue as new when
    // Temporal suggests it: with the recording server's low suggestion, after a few tags.
    name: 'mirrorSync-windowed-continue-as-new',
    activities: (() => {
      const planned = Array.from({ length: 12 }, (_, i) => `v${i + 1}`);
      return {
        beginMirrorRun: () => begun(300),
        mirrorWebhookTargets: () => [],
        planMirrorRun: () => ({ planned: planned.length, upstreamTags: 20 }),
        loadMirrorPlan: (input: { offset: number; limit: number }) => ({ offset: input.offset, tags: planned.slice(input.offset, input.offset + input.limit) }),
        mirrorTag: (input: { tag: string }) => ({ tag: input.tag, status: 'synced', bytes: 100 }),
        pruneMirrorTags: () => [],
        finishMirrorRun: () => summary('SUCCESS'),
      };
    })(),
    start: (c) => start(c, 'mirrorSync', 'mirror-sync/acme/windowed', { repository: 'acme/windowed' }),
  },
  {
    name: 'mirrorSync-failed-rollback',
    activities: {
      beginMirrorRun: () => begun(300, true),
      mirrorWebhookTargets: () => [],
      planMirrorRun: () => ({ tags: ['v1', 'v2'], upstreamTags: 2 }),
      mirrorTag: (input: { tag: string }) => {
        if (input.tag === 'v2') throw ApplicationFailure.nonRetryable('manifest unknown', MIRROR_FAILURES.notFound);
        return { tag: input.tag, status: 'synced', bytes: 100 };
      },
      recordMirrorTagFailure: () => undefined,
      rollbackMirrorRun: () => ({ restored: 1, removed: 1, missing: [] }),
      finishMirrorRun: () => summary('FAIL'),
    },
    start: (c) => start(c, 'mirrorSync', 'mirror-sync/acme/rollback', { repository: 'acme/rollback' }),
  },
  {
    name: 'mirrorSync-plan-failed',
    activities: {
      beginMirrorRun: () => begun(300),
      mirrorWebhookTargets: () => [],
      planMirrorRun: () => {
        throw ApplicationFailure.nonRetryable('unauthorized', MIRROR_FAILURES.auth);
      },
      finishMirrorRun: () => summary('FAIL'),
    },
    start: (c) => start(c, 'mirrorSync', 'mirror-sync/acme/denied', { repository: 'acme/denied' }),
  },
  {
    name: 'mirrorSync-cancelled',
    activities: {
      beginMirrorRun: () => begun(300, true),
      mirrorWebhookTargets: () => [],
      planMirrorRun: () => ({ tags: ['v1'], upstreamTags: 1 }),
      mirrorTag: runUntilCancelled,
      rollbackMirrorRun: () => ({ restored: 0, removed: 0, missing: [] }),
      finishMirrorRun: () => summary('CANCEL'),
    },
    start: (c) => start(c, 'mirrorSync', 'mirror-sync/acme/cancelled', { repository: 'acme/cancelled' }),
    act: cancelWhenActivityRuns,
  },
  {
    // Since 'mirror-tag-batches': one activity per batch of tags; 250 tags are three batches,
    // with the recording server's low suggestion continuing as new between them.
    name: 'mirrorSync-batched',
    activities: (() => {
      const planned = Array.from({ length: 250 }, (_, i) => `v${i + 1}`);
      return {
        beginMirrorRun: () => begun(300),
        mirrorWebhookTargets: () => [],
        planMirrorRun: () => ({ planned: planned.length, upstreamTags: 260 }),
        loadMirrorPlan: (input: { offset: number; limit: number }) => ({ offset: input.offset, tags: planned.slice(input.offset, input.offset + input.limit) }),
        mirrorTags: (input: { tags: string[] }) => ({ taken: input.tags.length, done: input.tags.length, failed: 0, bytes: 100 * input.tags.length, firstError: null }),
        pruneMirrorTags: () => ['old'],
        finishMirrorRun: () => summary('SUCCESS'),
      };
    })(),
    start: (c) => start(c, 'mirrorSync', 'mirror-sync/acme/batched', { repository: 'acme/batched' }),
  },
  {
    // A batch with a failed tag under rollback_on_failure stops the run and rolls it back.
    name: 'mirrorSync-batched-failed-rollback',
    activities: {
      beginMirrorRun: () => begun(300, true),
      mirrorWebhookTargets: () => [],
      planMirrorRun: () => ({ planned: 3, upstreamTags: 3 }),
      loadMirrorPlan: () => ({ offset: 0, tags: ['v1', 'v2', 'v3'] }),
      mirrorTags: () => ({ taken: 2, done: 1, failed: 1, bytes: 100, firstError: 'v2: manifest unknown' }),
      rollbackMirrorRun: () => ({ restored: 1, removed: 1, missing: [] }),
      finishMirrorRun: () => summary('FAIL'),
    },
    start: (c) => start(c, 'mirrorSync', 'mirror-sync/acme/batched-rollback', { repository: 'acme/batched-rollback' }),
  },
  {
    name: 'mirrorSync-batched-cancelled',
    activities: {
      beginMirrorRun: () => begun(300, true),
      mirrorWebhookTargets: () => [],
      planMirrorRun: () => ({ planned: 1, upstreamTags: 1 }),
      loadMirrorPlan: () => ({ offset: 0, tags: ['v1'] }),
      mirrorTags: runUntilCancelled,
      rollbackMirrorRun: () => ({ restored: 0, removed: 0, missing: [] }),
      finishMirrorRun: () => summary('CANCEL'),
    },
    start: (c) => start(c, 'mirrorSync', 'mirror-sync/acme/batched-cancelled', { repository: 'acme/batched-cancelled' }),
    act: (h) => cancelWhenActivityRuns(h, 'mirrorTags'),
  },
  {
    name: 'mirrorSync-skipped',
    activities: {
      beginMirrorRun: () => ({ kind: 'skipped', reason: 'mirror config deleted', configMissing: true }),
      reconcileMirrorState: () => ({ action: 'deleted' }),
    },
    start: (c) => start(c, 'mirrorSync', 'mirror-sync/acme/skipped', { repository: 'acme/skipped' }),
  },
  {
    // Pages of re-reads on eu-west's queue (continuing as new when Temporal suggests it), one
    // damaged copy found, its repair waited for until replication made it available again.
    name: 'scrubLocation-repaired-continue-as-new',
    activities: (() => {
      let page = 0;
      let checks = 0;
      return {
        scrubPage: (input: { afterBlobId: number }) => {
          page++;
          const findings = page === 2 ? [{ digest: DIGEST(5), problem: 'corrupt', detail: `bytes at sha256/55/${'5'.repeat(64)} hash to ${DIGEST(6)}` }] : [];
          return {
            examined: 500,
            scrubbed: 250,
            bytes: 250 * 4096,
            missing: 0,
            corrupt: findings.length,
            findings,
            awaitingRepair: findings.map((f) => f.digest),
            nextCursor: input.afterBlobId + 500,
            done: page >= 5,
          };
        },
        checkScrubRepairs: (input: { digests: string[] }) => (++checks === 1 ? { repaired: [], waiting: input.digests, unrepairable: [] } : { repaired: input.digests, waiting: [], unrepairable: [] }),
        scrubFinished: () => undefined,
      };
    })(),
    start: (c) => start(c, 'scrubLocation', 'scrub/eu-west', { location: 'eu-west', sample: 0.5, rateBytesPerSecond: 1048576 }),
  },
  {
    name: 'sweepOrphans',
    activities: {
      orphanGraceSeconds: () => 86400,
      orphanSweepLocations: () => LOCATIONS,
      sweepLocationOrphans: (input: { location: string }) => ({
        location: input.location,
        phase: 'done',
        objectsListed: 10,
        orphanObjects: input.location === 'us-east' ? 2 : 0,
        orphanBytes: input.location === 'us-east' ? 4096 : 0,
        multipartListed: 1,
        orphanMultipart: 1,
        sample: [],
        lifecycleRule: 'unsupported',
      }),
    },
    start: (c) => start(c, 'sweepOrphans', 'orphans/run', {}),
  },
  {
    name: 'reconcileMirror',
    activities: { reconcileMirrorState: () => ({ action: 'updated' }) },
    start: (c) => start(c, 'reconcileMirror', 'mirror-reconcile/acme/app', { repository: 'acme/app' }),
  },
  {
    name: 'deliverMirrorNotification-refused',
    activities: {
      deliverMirrorWebhook: () => {
        throw ApplicationFailure.nonRetryable('receiver answered 410', MIRROR_FAILURES.webhookRefused);
      },
    },
    start: (c) => start(c, 'deliverMirrorNotification', 'mirror-notify/refused', { subscriptionId: 's', event: 'repo_mirror_sync_failed', deliveryId: 'd', payload: {} }),
  },
];

/** collectGarbage's activities: `pages` pages of blobs to mark; `failing` locations whose purge
 * gives up; `purges` purge calls per location until it has nothing left; `finishPages` pages of
 * blob rows (since 'gc-finish-cursor'). */
function gcActivities(opts: { pages: number; failing?: string[]; manifestPages?: number; purges?: number; finishPages?: number }): Record<string, Fake> {
  let manifestCalls = 0;
  const purgeCalls = new Map<string, number>();
  return {
    gcGraceSeconds: () => 86400,
    expireUntaggedManifests: (input: { afterId?: number; limit: number }) => {
      manifestCalls++;
      const last = manifestCalls >= (opts.manifestPages ?? 1);
      return { count: last ? 3 : input.limit, sample: [DIGEST(manifestCalls)], nextCursor: (input.afterId ?? 0) + input.limit, done: last };
    },
    markGarbage: (input: { afterBlobId: number; limit: number }) => {
      const page = input.afterBlobId / input.limit + 1;
      return {
        scanned: input.limit,
        marked: 2,
        bytes: 2048,
        perLocation: LOCATIONS.map((location) => ({ location, blobs: 2, bytes: 2048 })),
        nextCursor: input.afterBlobId + input.limit,
        done: page >= opts.pages,
      };
    },
    gcPendingLocations: () => LOCATIONS,
    purgeLocation: (input: { location: string }) => {
      if (opts.failing?.includes(input.location)) throw ApplicationFailure.nonRetryable(`${input.location} refused the deletes`);
      const calls = (purgeCalls.get(input.location) ?? 0) + 1;
      purgeCalls.set(input.location, calls);
      return { deleted: 2 * opts.pages, bytes: 2048 * opts.pages, remaining: calls < (opts.purges ?? 1) };
    },
    deleteUnplacedBlobs: () => 2 * opts.pages,
    deleteUnplacedBlobPage: (input: { afterBlobId: number; limit: number }) => {
      const page = input.afterBlobId / input.limit + 1;
      return { deleted: 2, scanned: input.limit, nextCursor: input.afterBlobId + input.limit, done: page >= (opts.finishPages ?? 1) };
    },
    recordGcRun: () => undefined,
  };
}

// collectGarbage-release1-complete and -release1-dry-run are the first release's runs (workflow
// code of 667a816, recorded with the scenarios below under their old names): kept so that its
// patched() changes keep replaying them.
SCENARIOS.push(
  {
    // Since the 'gc-record-runs' patch: the run records itself (last run, reclaimed bytes).
    name: 'collectGarbage-complete',
    activities: gcActivities({ pages: 2 }),
    start: (c) => start(c, 'collectGarbage', 'gc/run', { graceSeconds: 0 }),
  },
  {
    // A run long enough for Temporal to suggest continuing as new (mark pages).
    name: 'collectGarbage-continue-as-new',
    activities: gcActivities({ pages: 12 }),
    start: (c) => start(c, 'collectGarbage', 'gc/scheduled', {}),
  },
  {
    // Since 'gc-dry-run-pages': a dry run pages through every expired manifest.
    name: 'collectGarbage-dry-run',
    activities: gcActivities({ pages: 1, manifestPages: 3 }),
    start: (c) => start(c, 'collectGarbage', 'gc/dry-run', { dryRun: true }),
  },
  {
    // One location gives up: the others finish, the run completes as partial.
    name: 'collectGarbage-location-failed',
    activities: gcActivities({ pages: 1, failing: ['ap-south'] }),
    start: (c) => start(c, 'collectGarbage', 'gc/partial', { graceSeconds: 0 }),
  },
  {
    // The database refuses: the run fails, and records that it did.
    name: 'collectGarbage-failed',
    activities: {
      ...gcActivities({ pages: 1 }),
      markGarbage: () => {
        throw ApplicationFailure.nonRetryable('permission denied for table blobs');
      },
    },
    start: (c) => start(c, 'collectGarbage', 'gc/failed', { graceSeconds: 0 }),
  },
  {
    // Since 'gc-bounded-history' and 'gc-finish-cursor': a long sweep stops after each
    // location's current purge and continues as new; the blob rows are paged by id.
    name: 'collectGarbage-bounded',
    activities: gcActivities({ pages: 3, purges: 6, finishPages: 8 }),
    start: (c) => start(c, 'collectGarbage', 'gc/bounded', { graceSeconds: 0 }),
  },
);

async function cancelWhenActivityRuns(handle: WorkflowHandle, type?: string): Promise<void> {
  for (;;) {
    const d = await handle.describe();
    if ((d.raw.pendingActivities ?? []).some((a) => a.state === 2 /* STARTED */ && (!type || a.activityType?.name === type))) break;
    await new Promise((r) => setTimeout(r, 100));
  }
  await handle.cancel();
}

async function main(): Promise<void> {
  Runtime.install({ logger: { log: () => {}, trace: () => {}, debug: () => {}, info: () => {}, warn: () => {}, error: (m) => console.error(m) } });
  const dataDir = mkdtempSync(path.join(tmpdir(), 'meridian-histories-'));
  const port = await freePort();
  // A low continue-as-new suggestion, so the paged workflows record their continue-as-new path.
  const server = temporalServer({ port, dataDir, logFile: path.join(dataDir, 'temporal.log'), dynamicConfig: { 'limit.historyCount.suggestContinueAsNew': 30 } });
  await server.start();
  const address = `127.0.0.1:${port}`;
  const nativeConnection = await NativeConnection.connect({ address });
  const connection = await Connection.connect({ address });
  const client = new Client({ connection });
  const { code } = await bundleWorkflows();
  const activities = activityProxy();
  const workers = await Promise.all([
    Worker.create({ connection: nativeConnection, taskQueue: TASK_QUEUES.control, workflowBundle: { code }, activities }),
    ...[TASK_QUEUES.mirror, ...LOCATIONS.map(copyTaskQueue)].map((taskQueue) => Worker.create({ connection: nativeConnection, taskQueue, activities })),
  ]);
  const running = workers.map((w) => w.run());
  try {
    mkdirSync(OUT_DIR, { recursive: true });
    const only = process.argv.slice(2);
    const unknown = only.filter((n) => !SCENARIOS.some((s) => s.name === n));
    if (unknown.length) throw new Error(`no such scenario: ${unknown.join(', ')}`);
    for (const s of SCENARIOS.filter((x) => only.length === 0 || only.includes(x.name))) {
      script = s.activities;
      const handle = await s.start(client);
      await s.act?.(handle);
      await handle.result().catch(() => undefined);
      const n = await recordChain(client, address, s.name, handle.workflowId, handle.firstExecutionRunId);
      console.log(`${s.name}: ${n} histories`);
    }
  } finally {
    for (const w of workers) w.shutdown();
    await Promise.allSettled(running);
    await nativeConnection.close();
    await connection.close();
    await server.stop();
    rmSync(dataDir, { recursive: true, force: true });
  }
}

/** Writes the history of every run of the chain (continue-as-new) and of every child it started. */
async function recordChain(client: Client, address: string, scenario: string, workflowId: string, firstRunId: string): Promise<number> {
  let n = 0;
  for (let runId: string | undefined = firstRunId; runId; ) {
    const h: WorkflowHandle = client.workflow.getHandle(workflowId, runId);
    await client.workflow.result(workflowId, runId, { followRuns: false }).catch(() => undefined);
    const history: Awaited<ReturnType<WorkflowHandle['fetchHistory']>> = await h.fetchHistory();
    const events = history.events ?? [];
    const type = events[0]?.workflowExecutionStartedEventAttributes?.workflowType?.name ?? 'unknown';
    n++;
    const file = `${scenario}.${String(n).padStart(2, '0')}-${type}.json`;
    // The Temporal CLI's JSON: the canonical proto3 JSON form historyFromJSON (and the UI's
    // "download history") reads and writes.
    const { stdout } = await execFileP(toolPath('temporal'), ['workflow', 'show', '--address', address, '-w', workflowId, '-r', runId, '--output', 'json'], { maxBuffer: 64 << 20 });
    writeFileSync(path.join(OUT_DIR, file), stdout.endsWith('\n') ? stdout : `${stdout}\n`);
    for (const e of events) {
      const child = e.childWorkflowExecutionStartedEventAttributes?.workflowExecution;
      if (child?.workflowId && child.runId) n += await recordChain(client, address, `${scenario}.${String(n).padStart(2, '0')}-child`, child.workflowId, child.runId);
    }
    runId = events.at(-1)?.workflowExecutionContinuedAsNewEventAttributes?.newExecutionRunId ?? undefined;
  }
  return n;
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
