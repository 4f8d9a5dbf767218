// A copy worker process (workers/main.ts --copy eu-west): it serves the Temporal SDK's metrics
// for Prometheus (schedule-to-start latency and pollers of its copy queue), and, stopped with
// SIGTERM (a deploy, a scale-down), it lets the copy it is running finish within
// MERIDIAN_WORKER_SHUTDOWN_GRACE instead of cancelling it: the copy completes in one attempt,
// from byte 0, while no other worker serves its location.
import { type ChildProcess, spawn } from 'node:child_process';
import { createCipheriv, createHash, randomBytes } from 'node:crypto';
import type { Client, Connection } from '@temporalio/client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { replicateBlobWorkflow } from '../contract/replication.ts';
import { freePort } from '../devstack/ports.ts';
import { PROJECT_ROOT } from '../devstack/tools.ts';
import { workflowHandle } from '../platform/workflows.ts';
import { WORKFLOW_IDS } from '../temporal.config.ts';
import type { RunningWorkers } from '../workers/main.ts';
import { createTestUser, startTestApi, startTestWorkers, testEnv, testTemporal } from './support/harness.ts';
import { OciClient } from './support/oci-client.ts';

const MiB = 1024 * 1024;
// Big enough that the copy takes a few seconds: SIGTERM lands while it runs.
const SIZE = 128 * MiB;

function* generated(size: number, hash: ReturnType<typeof createHash>): Generator<Buffer> {
  const cipher = createCipheriv('aes-128-ctr', randomBytes(16), randomBytes(16));
  const zeros = Buffer.alloc(4 * MiB);
  for (let sent = 0; sent < size; sent += zeros.length) {
    const chunk = cipher.update(zeros.subarray(0, Math.min(zeros.length, size - sent)));
    hash.update(chunk);
    yield chunk;
  }
}

describe('copy worker process', () => {
  let api: Awaited<ReturnType<typeof startTestApi>>;
  let workers: RunningWorkers;
  let connection: Connection;
  let temporal: Client;
  let child: ChildProcess | undefined;

  beforeAll(async () => {
    api = await startTestApi({ MERIDIAN_STORAGE_PREFERENCE: 'us-east,eu-west,ap-south' });
    // eu-west's copy worker is a separate process, to be sent SIGTERM.
    workers = await startTestWorkers({ control: true, mirror: false, copyLocations: ['us-east', 'ap-south'] });
    ({ client: temporal, connection } = await testTemporal());
  });

  afterAll(async () => {
    child?.kill('SIGKILL');
    await workers?.stop();
    await api?.close();
    await connection?.close();
  });

  it('exports schedule-to-start latency per task queue, and lets an in-flight copy finish after SIGTERM', async () => {
    const user = await createTestUser('grace');
    const client = new OciClient({ baseUrl: api.url, authorization: user.authorization });
    const hash = createHash('sha256');
    const start = await client.fetch(`/v2/${user.username}/big/blobs/uploads/`, { method: 'POST' });
    const patch = await client.fetch(start.headers.get('location')!, { method: 'PATCH', body: ReadableStream.from(generated(SIZE, hash)) as unknown as Blob });
    expect(patch.status).toBe(202);
    const digest = `sha256:${hash.digest('hex')}`;
    expect((await client.fetch(`${patch.headers.get('location')!}?digest=${digest}`, { method: 'PUT' })).status).toBe(201);

    const metricsPort = await freePort();
    child = spawn(process.execPath, ['--import', 'tsx', 'workers/main.ts', '--copy', 'eu-west'], {
      cwd: PROJECT_ROOT,
      env: { ...process.env, ...testEnv({ MERIDIAN_WORKER_SHUTDOWN_GRACE: '120', MERIDIAN_WORKER_METRICS_ADDRESS: `127.0.0.1:${metricsPort}` }) },
      stdio: ['ignore', 'ignore', 'inherit'],
    });
    const exited = new Promise<number | null>((resolve) => child!.once('exit', (code) => resolve(code)));
    const handle = workflowHandle(temporal, replicateBlobWorkflow, WORKFLOW_IDS.replicateBlob(digest));
    // The child's identity is <pid>@<host>: its copy is the pending activity it has started.
    const running = async () => {
      const d = await handle.describe().catch(() => undefined);
      return (d?.raw.pendingActivities ?? []).some((a) => a.activityType?.name === 'copyBlobToLocation' && a.lastWorkerIdentity?.startsWith(`${child!.pid}@`));
    };
    await expect.poll(running, { timeout: 120_000, interval: 100 }).toBe(true);

    // The copy task it picked up has been measured: how long it waited in meridian-copy-eu-west.
    const metrics = await (await fetch(`http://127.0.0.1:${metricsPort}/metrics`)).text();
    const copyQueue = (line: string) => line.includes('task_queue="meridian-copy-eu-west"');
    const latency = metrics.split('\n').filter((l) => l.startsWith('temporal_activity_schedule_to_start_latency_count{') && copyQueue(l));
    expect(latency.length).toBeGreaterThan(0);
    expect(Number(latency[0]!.split(' ').pop())).toBeGreaterThanOrEqual(1);
    expect(metrics.split('\n').some((l) => l.startsWith('temporal_num_pollers{') && copyQueue(l) && l.includes('activity_task'))).toBe(true);

    child.kill('SIGTERM');

    // No eu-west worker runs after this one exits, so the copy must have finished in it.
    expect(await exited).toBe(0);
    child = undefined;
    const result = await Promise.race([
      handle.result(),
      new Promise<never>((_, reject) => setTimeout(() => reject(new Error('the copy into eu-west did not finish before its worker exited')), 60_000)),
    ]);
    expect(result.state).toBe('complete');
    const euCopy = result.copies.find((c) => c.target === 'eu-west');
    expect(euCopy).toMatchObject({ resumedFrom: 0, bytesTransferred: SIZE, alreadyPresent: false });
  }, 600_000);
});
