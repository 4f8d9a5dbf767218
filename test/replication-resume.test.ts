// A copy worker killed in the middle of copying a 1 GiB blob resumes from its last heartbeat
// when it comes back: fewer bytes are sent than a full restart, and the digest is right.
import { type ChildProcess, spawn } from 'node:child_process';
import { createCipheriv, createHash, randomBytes } from 'node:crypto';
import type { Client, Connection } from '@temporalio/client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DEV_BUCKET } from '../devstack/stack.ts';
import { PROJECT_ROOT } from '../devstack/tools.ts';
import { blobKey } from '../storage/paths.ts';
import { S3Driver } from '../storage/s3.ts';
import type { CopyCheckpoint } from '../replication/copy.ts';
import type { RunningWorkers } from '../workers/main.ts';
import { replicateBlobWorkflow } from '../contract/replication.ts';
import { workflowHandle } from '../platform/workflows.ts';
import { WORKFLOW_IDS } from '../temporal.config.ts';
import { createTestUser, stackInfo, startTestApi, startTestWorkers, testEnv, testTemporal } from './support/harness.ts';
import { OciClient } from './support/oci-client.ts';

const GiB = 1024 * 1024 * 1024;
const CHUNK = 4 * 1024 * 1024;

/** 1 GiB of pseudo-random bytes produced on the fly (AES-CTR keystream), hashed as they go. */
function* generated(size: number, hash: ReturnType<typeof createHash>): Generator<Buffer> {
  const cipher = createCipheriv('aes-128-ctr', randomBytes(16), randomBytes(16));
  const zeros = Buffer.alloc(CHUNK);
  for (let sent = 0; sent < size; sent += CHUNK) {
    const chunk = cipher.update(zeros.subarray(0, Math.min(CHUNK, size - sent)));
    hash.update(chunk);
    yield chunk;
  }
}

function copyWorker(): ChildProcess {
  // node with tsx's loader rather than the tsx wrapper: one process, so SIGKILL kills the worker.
  return spawn(process.execPath, ['--import', 'tsx', 'workers/main.ts', '--copy', 'eu-west'], {
    cwd: PROJECT_ROOT,
    env: { ...process.env, ...testEnv() },
    stdio: ['ignore', 'ignore', 'inherit'],
  });
}

describe('resumable copies', () => {
  let api: Awaited<ReturnType<typeof startTestApi>>;
  let workers: RunningWorkers;
  let connection: Connection;
  let temporal: Client;
  let child: ChildProcess | undefined;
  let euWest: S3Driver;

  beforeAll(async () => {
    api = await startTestApi({ MERIDIAN_STORAGE_PREFERENCE: 'us-east,eu-west,ap-south' });
    // eu-west's copy worker is a separate process so that it can be killed.
    workers = await startTestWorkers({ control: true, mirror: false, copyLocations: ['us-east', 'ap-south'] });
    ({ client: temporal, connection } = await testTemporal());
    const r = stackInfo().regions.find((x) => x.name === 'eu-west')!;
    euWest = new S3Driver({ name: 'eu-west', endpoint: `http://127.0.0.1:${r.port}`, region: 'us-east-1', bucket: DEV_BUCKET, ...stackInfo().s3Credentials });
  });

  afterAll(async () => {
    child?.kill('SIGKILL');
    await workers?.stop();
    await api?.close();
    euWest?.close();
    await connection?.close();
  });

  it('resumes a killed 1 GiB copy from its last heartbeat with the correct digest', async () => {
    const user = await createTestUser('resume');
    const repo = `${user.username}/big`;
    const client = new OciClient({ baseUrl: api.url, authorization: user.authorization });

    // Push 1 GiB in one streamed PATCH, then PUT with the digest computed on the way.
    const hash = createHash('sha256');
    const start = await client.fetch(`/v2/${repo}/blobs/uploads/`, { method: 'POST' });
    const location = start.headers.get('location')!;
    const patch = await client.fetch(location, { method: 'PATCH', body: ReadableStream.from(generated(GiB, hash)) as unknown as Blob });
    expect(patch.status).toBe(202);
    const digest = `sha256:${hash.digest('hex')}`;
    const put = await client.fetch(`${patch.headers.get('location')!}?digest=${digest}`, { method: 'PUT' });
    expect(put.status).toBe(201);

    child = copyWorker();
    const handle = workflowHandle(temporal, replicateBlobWorkflow, WORKFLOW_IDS.replicateBlob(digest));
    const checkpoint = async (): Promise<CopyCheckpoint | undefined> => {
      const d = await handle.describe().catch(() => undefined);
      // The copy into eu-west (the one whose worker we kill), not the one into ap-south.
      for (const a of d?.raw.pendingActivities ?? []) {
        const data = a.heartbeatDetails?.payloads?.[0]?.data;
        if (a.activityType?.name !== 'copyBlobToLocation' || !data) continue;
        const cp = JSON.parse(Buffer.from(data).toString()) as CopyCheckpoint | null;
        if (cp?.target === 'eu-west' && (cp.partCount ?? cp.parts?.length)) return cp;
      }
      return undefined;
    };
    // Kill the worker once a good part of the copy is checkpointed.
    await expect.poll(async () => (await checkpoint())?.offset ?? 0, { timeout: 180_000, interval: 200 }).toBeGreaterThanOrEqual(256 * 1024 * 1024);
    const killedAt = (await checkpoint())!.offset;
    child.kill('SIGKILL');
    await new Promise((r) => child!.once('exit', r));
    expect(killedAt).toBeLessThan(GiB);

    child = copyWorker();
    const result = await handle.result();
    expect(result.state).toBe('complete');
    const euCopy = result.copies.find((c) => c.target === 'eu-west')!;
    expect(euCopy.resumedFrom).toBeGreaterThanOrEqual(killedAt);
    expect(euCopy.bytesTransferred).toBe(GiB - euCopy.resumedFrom);
    expect(euCopy.bytesTransferred).toBeLessThan(GiB);

    const stored = createHash('sha256');
    for await (const c of (await euWest.read(blobKey('', digest))).body) stored.update(c as Buffer);
    expect(`sha256:${stored.digest('hex')}`).toBe(digest);
  }, 600_000);
});
