// The removeLocation workflow's own decisions, on the test Temporal with scripted activities (the
// copy and database sides are covered by backfill-removal.test.ts): a cancelled removal gives the
// location its state back, placements that reappear send it back to deleting instead of failing,
// the list of blobs at risk stays bounded, and a second start joins the running removal.
import { Context } from '@temporalio/activity';
import { type Client, type Connection, WorkflowFailedError } from '@temporalio/client';
import { ApplicationFailure } from '@temporalio/common';
import { NativeConnection, Worker } from '@temporalio/worker';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { removeLocationWorkflow } from '../contract/replication.ts';
import { startWorkflow } from '../platform/workflows.ts';
import { startLocationRemoval } from '../replication/operations.ts';
import { copyTaskQueue, TASK_QUEUES } from '../temporal.config.ts';
import { MAX_LISTED_AT_RISK } from '../workflows/remove-location.ts';
import { stackInfo, startTestApi, testTemporal, testTemporalOptions } from './support/harness.ts';

type Fake = (...args: never[]) => unknown;
let script: Record<string, Fake> = {};
const calls: { name: string; input: unknown }[] = [];

function scripted(names: string[]): Record<string, Fake> {
  return Object.fromEntries(
    names.map((n) => [
      n,
      (input: unknown) => {
        calls.push({ name: n, input });
        const f = script[n];
        if (!f) throw ApplicationFailure.nonRetryable(`${n} not scripted`);
        return (f as (i: unknown) => unknown)(input);
      },
    ]),
  );
}

async function untilCancelled(): Promise<never> {
  const ctx = Context.current();
  for (;;) {
    ctx.heartbeat();
    await ctx.sleep(200);
  }
}

const digest = (i: number) => `sha256:${i.toString(16).padStart(64, '0')}`;

describe('removeLocation workflow', () => {
  let connection: Connection;
  let client: Client;
  let native: NativeConnection;
  let workers: Worker[];
  let running: Promise<void>[];
  let api: Awaited<ReturnType<typeof startTestApi>>;

  beforeAll(async () => {
    api = await startTestApi();
    ({ client, connection } = await testTemporal());
    native = await NativeConnection.connect(testTemporalOptions());
    const activities = scripted(['markDraining', 'restoreLocationState', 'unprotectedBlobs', 'deletePlacementsBatch', 'deleteLocationRow', 'copyBlobToLocation']);
    const namespace = stackInfo().temporalNamespace;
    workers = await Promise.all([
      Worker.create({ connection: native, namespace, taskQueue: TASK_QUEUES.control, workflowBundle: { codePath: stackInfo().workflowBundlePath }, activities }),
      Worker.create({ connection: native, namespace, taskQueue: copyTaskQueue('us-east'), activities }),
    ]);
    running = workers.map((w) => w.run());
  });

  afterAll(async () => {
    for (const w of workers ?? []) w.shutdown();
    await Promise.allSettled(running ?? []);
    await native?.close();
    await connection?.close();
    await api?.close();
  });

  it('joins a running removal on a second start, and a cancel puts the location back in service', async () => {
    calls.length = 0;
    script = { markDraining: () => 'active', unprotectedBlobs: untilCancelled, restoreLocationState: () => undefined };
    const first = await startLocationRemoval(api.services, { name: 'us-east' });
    const second = await startLocationRemoval(api.services, { name: 'us-east' });
    expect(first.started).toBe(true);
    expect(second).toEqual({ workflowId: first.workflowId, runId: first.runId, started: false });

    const handle = client.workflow.getHandle(first.workflowId);
    await expect.poll(() => calls.some((c) => c.name === 'unprotectedBlobs'), { timeout: 30_000 }).toBe(true);
    await handle.cancel();
    await expect(handle.result()).rejects.toBeInstanceOf(WorkflowFailedError);
    expect(calls.filter((c) => c.name === 'restoreLocationState').map((c) => c.input)).toEqual([{ name: 'us-east', state: 'active' }]);
  });

  it('goes back to deleting placements that reappeared instead of failing on the location row', async () => {
    calls.length = 0;
    let rowCalls = 0;
    script = {
      markDraining: () => 'active',
      unprotectedBlobs: () => ({ items: [], scanned: 0, nextCursor: 0, done: true }),
      deletePlacementsBatch: () => ({ deleted: 1, blocked: [], remaining: false }),
      deleteLocationRow: () => (++rowCalls === 1 ? { deleted: false, placementsRemaining: 1 } : { deleted: true }),
    };
    const handle = await startWorkflow(client, removeLocationWorkflow, { workflowId: 'remove-location/reappearing', args: [{ name: 'reappearing' }] });
    const result = await handle.result();
    expect(result.phase).toBe('done');
    expect(result.placementsDeleted).toBe(2);
    expect(calls.map((c) => c.name)).toEqual(['markDraining', 'unprotectedBlobs', 'deletePlacementsBatch', 'deleteLocationRow', 'deletePlacementsBatch', 'deleteLocationRow']);
  });

  it('lists a bounded number of blobs at risk, and counts them all', async () => {
    const total = MAX_LISTED_AT_RISK * 3;
    script = {
      markDraining: () => 'active',
      // Every blob exists only here and no other location can take it.
      unprotectedBlobs: () => ({ items: Array.from({ length: total }, (_, i) => ({ digest: digest(i), size: 1, targets: [] })), scanned: total, nextCursor: total, done: true }),
      restoreLocationState: () => undefined,
    };
    const handle = await startWorkflow(client, removeLocationWorkflow, { workflowId: 'remove-location/only-copy', args: [{ name: 'only-copy' }] });
    const err = await handle.result().catch((e: unknown) => e);
    expect(err).toBeInstanceOf(WorkflowFailedError);
    const cause = (err as WorkflowFailedError).cause as ApplicationFailure;
    expect(cause.type).toBe('BlobsAtRisk');
    expect(cause.message).toContain(`${total} blobs`);
    expect(cause.details?.[0]).toHaveLength(MAX_LISTED_AT_RISK);
  });
});
