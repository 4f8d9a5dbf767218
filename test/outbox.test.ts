import { randomUUID } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import { Client, Connection } from '@temporalio/client';
import { NativeConnection, Worker } from '@temporalio/worker';
import { eq, sql } from 'drizzle-orm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { outbox } from '../db/schema.ts';
import { createLogger } from '../platform/logger.ts';
import { defineWorkflow, type WorkflowDefinition } from '../contract/index.ts';
import { enqueueWorkflowStart, OutboxRelay, type WorkflowStart } from '../platform/outbox.ts';
import { installRuntime } from '../workers/main.ts';
import { stackControl, stackInfo, testDatabase, testTemporalOptions } from './support/harness.ts';

const TASK_QUEUE = `outbox-test-${randomUUID()}`;
/** The fixture workflow (test/fixtures/workflows.ts), declared as the contract declares Meridian's. */
const probeWorkflow = defineWorkflow<(marker: string) => Promise<string>>()('outboxProbe', TASK_QUEUE);
const known = (name: string): WorkflowDefinition | undefined => (name === probeWorkflow.name ? probeWorkflow : undefined);

describe('transactional outbox', () => {
  const database = testDatabase();
  let client: Client;
  let connection: Connection;
  let worker: Worker;
  let workerRun: Promise<void>;
  let relay: OutboxRelay;

  beforeAll(async () => {
    installRuntime('warn');
    connection = Connection.lazy({ ...testTemporalOptions(), connectTimeout: 2000 });
    client = new Client({ connection, namespace: stackInfo().temporalNamespace });
    worker = await Worker.create({
      connection: await NativeConnection.connect(testTemporalOptions()),
      namespace: stackInfo().temporalNamespace,
      taskQueue: TASK_QUEUE,
      workflowsPath: fileURLToPath(new URL('./fixtures/workflows.ts', import.meta.url)),
    });
    workerRun = worker.run();
    relay = new OutboxRelay(database.db, database.sql, client, createLogger('test', 'silent'), 2000, known);
  });

  afterAll(async () => {
    await stackControl.start('temporal');
    worker?.shutdown();
    await workerRun;
    await connection?.close();
    await database.close();
  });

  function intent(marker: string): WorkflowStart<(marker: string) => Promise<string>> {
    return { workflowId: `outbox-test/${marker}`, args: [marker] };
  }

  async function rowsFor(marker: string) {
    return database.db.select().from(outbox).where(sql`${outbox.payload}->>'workflowId' = ${intent(marker).workflowId}`);
  }

  async function runsOf(workflowId: string): Promise<number> {
    let n = 0;
    for await (const _ of client.workflow.list({ query: `WorkflowId = '${workflowId}'` })) n++;
    return n;
  }

  it('never delivers an intent whose transaction rolled back', async () => {
    const marker = randomUUID();
    await expect(
      database.db.transaction(async (tx) => {
        await enqueueWorkflowStart(tx, probeWorkflow, intent(marker));
        throw new Error('change failed');
      }),
    ).rejects.toThrow('change failed');
    await relay.drainOnce();
    expect(await rowsFor(marker)).toHaveLength(0);
    await expect(client.workflow.getHandle(intent(marker).workflowId).describe()).rejects.toThrow(/not found/i);
  });

  it('delivers a committed intent exactly once, even when Temporal was down when it was written', async () => {
    const marker = randomUUID();
    await stackControl.stop('temporal');
    await database.db.transaction((tx) => enqueueWorkflowStart(tx, probeWorkflow, intent(marker)));

    const whileDown = await relay.drainOnce();
    expect(whileDown.delivered).toBe(0);
    const [pending] = await rowsFor(marker);
    expect(pending?.deliveredAt).toBeNull();
    expect(pending?.attempts).toBe(1);
    expect(pending?.lastError).toBeTruthy();

    await stackControl.start('temporal');
    // Skip the back-off wait rather than sleep through it.
    await database.db.update(outbox).set({ availableAt: new Date(0) }).where(eq(outbox.id, pending!.id));
    let delivered = 0;
    for (let i = 0; i < 20 && delivered === 0; i++) {
      delivered += (await relay.drainOnce()).delivered;
      if (delivered === 0) {
        await database.db.update(outbox).set({ availableAt: new Date(0) }).where(eq(outbox.id, pending!.id));
        await new Promise((r) => setTimeout(r, 500));
      }
    }
    expect(delivered).toBe(1);
    const result = await client.workflow.getHandle(intent(marker).workflowId).result();
    expect(result).toBe(`delivered:${marker}`);

    // Later rounds (and a second relay) find nothing more to deliver.
    const other = new OutboxRelay(database.db, database.sql, client, createLogger('test', 'silent'), 2000, known);
    await Promise.all([relay.drainOnce(), other.drainOnce()]);
    const [row] = await rowsFor(marker);
    expect(row?.deliveredAt).not.toBeNull();
    await expect.poll(() => runsOf(intent(marker).workflowId), { timeout: 10_000 }).toBe(1);
    await new Promise((r) => setTimeout(r, 1000));
    expect(await runsOf(intent(marker).workflowId)).toBe(1);
  });

  it('lets concurrent relays share the work without delivering a row twice', async () => {
    const markers = Array.from({ length: 30 }, () => randomUUID());
    for (const m of markers) await database.db.transaction((tx) => enqueueWorkflowStart(tx, probeWorkflow, intent(m)));
    const relays = [relay, new OutboxRelay(database.db, database.sql, client, createLogger('test', 'silent'), 2000, known)];
    const stats = await Promise.all(relays.map((r) => r.drainOnce()));
    const total = stats.reduce((n, s) => n + s.delivered, 0);
    const rows = (await Promise.all(markers.map(rowsFor))).flat();
    expect(rows.every((r) => r.deliveredAt !== null && r.attempts === 1)).toBe(true);
    expect(total).toBe(30);
  });
});
