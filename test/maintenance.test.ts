import { randomBytes } from 'node:crypto';
import type { Client, Connection } from '@temporalio/client';
import { eq, sql } from 'drizzle-orm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { uploadSessions } from '../db/schema.ts';
import { DEV_BUCKET } from '../devstack/stack.ts';
import { ObjectNotFoundError } from '../storage/driver.ts';
import { S3Driver } from '../storage/s3.ts';
import { TASK_QUEUES, WORKFLOW_IDS } from '../temporal.config.ts';
import type { RunningWorkers } from '../workers/main.ts';
import { setupTemporal } from '../workers/temporal-setup.ts';
import { createTestUser, stackInfo, startTestApi, startTestWorkers, testConfig, testDatabase, testTemporal } from './support/harness.ts';
import { OciClient } from './support/oci-client.ts';

describe('abandoned uploads', () => {
  const database = testDatabase();
  let api: Awaited<ReturnType<typeof startTestApi>>;
  let workers: RunningWorkers;
  let connection: Connection;
  let temporal: Client;
  let usEast: S3Driver;

  beforeAll(async () => {
    api = await startTestApi({ MERIDIAN_STORAGE_PREFERENCE: 'us-east' });
    workers = await startTestWorkers({ control: true, mirror: false, copyLocations: [] });
    // The deploy step creates the schedule (test/temporal-setup.test.ts covers it in full).
    await setupTemporal(testConfig(), { retentionDays: 1, skipMirrors: true });
    ({ client: temporal, connection } = await testTemporal());
    const r = stackInfo().regions.find((x) => x.name === 'us-east')!;
    usEast = new S3Driver({ name: 'us-east', endpoint: `http://127.0.0.1:${r.port}`, region: 'us-east-1', bucket: DEV_BUCKET, ...stackInfo().s3Credentials });
  });
  afterAll(async () => {
    usEast.close();
    await workers?.stop();
    await api?.close();
    await connection?.close();
    await database.close();
  });

  it('has an hourly schedule that ends sessions idle for a day and deletes their partial objects', async () => {
    const schedule = await temporal.schedule.getHandle(WORKFLOW_IDS.expireUploadsSchedule).describe();
    expect(schedule.spec.intervals?.[0]?.every).toBe(3_600_000);

    const user = await createTestUser('janitor');
    const client = new OciClient({ baseUrl: api.url, authorization: user.authorization });
    const start = await client.fetch(`/v2/${user.username}/junk/blobs/uploads/`, { method: 'POST' });
    const id = start.headers.get('docker-upload-uuid')!;
    await client.fetch(start.headers.get('location')!, { method: 'PATCH', body: randomBytes(17 * 1024 * 1024 + 5) });
    const [session] = await database.db.select().from(uploadSessions).where(eq(uploadSessions.id, id));
    expect(session?.multipartUploadId).toBeTruthy();
    expect(session?.tailKeys).toHaveLength(1);
    // A fresh session is left alone; a day-old one is ended.
    const fresh = await client.fetch(`/v2/${user.username}/junk/blobs/uploads/`, { method: 'POST' });
    await database.db.update(uploadSessions).set({ updatedAt: sql`now() - interval '25 hours'` }).where(eq(uploadSessions.id, id));

    const ended = await temporal.workflow.execute('expireUploads', { taskQueue: TASK_QUEUES.control, workflowId: `test-expire-${id}`, args: [{}] });
    expect(ended).toBeGreaterThanOrEqual(1);
    expect(await database.db.select().from(uploadSessions).where(eq(uploadSessions.id, id))).toEqual([]);
    expect(await database.db.select().from(uploadSessions).where(eq(uploadSessions.id, fresh.headers.get('docker-upload-uuid')!))).toHaveLength(1);
    expect(await usEast.list(`_uploads/${id}/`)).toEqual([]);
    await expect(usEast.listParts(session!.objectKey, session!.multipartUploadId!)).rejects.toBeInstanceOf(ObjectNotFoundError);
  });
});
