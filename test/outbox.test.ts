import { randomUUID } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import * as grpc from '@grpc/grpc-js';
import { Client, Connection } from '@temporalio/client';
import { NativeConnection, Worker } from '@temporalio/worker';
import { eq, inArray, sql } from 'drizzle-orm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createUser } from '../auth/accounts.ts';
import { runCli } from '../cli/meridian.ts';
import { connectDatabase, type DbHandle } from '../db/client.ts';
import { outbox } from '../db/schema.ts';
import { createLogger } from '../platform/logger.ts';
import { defineWorkflow, type WorkflowDefinition } from '../contract/index.ts';
import { dueRows, enqueueWorkflowStart, OutboxRelay, type RelayOptions, type WorkflowStart } from '../platform/outbox.ts';
import { installRuntime } from '../workers/main.ts';
import { basic, stackControl, stackInfo, startTestApi, testDatabase, testTemporalOptions } from './support/harness.ts';

const TASK_QUEUE = `outbox-test-${randomUUID()}`;
/** The fixture workflow (test/fixtures/workflows.ts), declared as the contract declares Meridian's. */
const probeWorkflow = defineWorkflow<(marker: string) => Promise<string>>()('outboxProbe', TASK_QUEUE);
const known = (name: string): WorkflowDefinition | undefined => (name === probeWorkflow.name ? probeWorkflow : undefined);
/** A workflow type no worker or relay knows (as after a rollback to a release without it). */
const unknownWorkflow = defineWorkflow<(marker: string) => Promise<string>>()('noSuchWorkflow', TASK_QUEUE);

/** What the faulty connection does to StartWorkflowExecution calls: answer with a gRPC status
 * without reaching Temporal, or hold each call for a while (counting how many are in flight). */
const fault = { status: undefined as grpc.status | undefined, delayMs: 0, calls: 0, inFlight: 0, maxInFlight: 0 };
const faultInterceptor: grpc.Interceptor = (options, nextCall) => {
  if (!options.method_definition.path.endsWith('/StartWorkflowExecution')) return new grpc.InterceptingCall(nextCall(options));
  fault.calls++;
  const code = fault.status;
  if (code !== undefined) {
    return new grpc.InterceptingCall(nextCall(options), {
      start(_metadata, listener) {
        setImmediate(() => listener.onReceiveStatus({ code, details: `injected ${grpc.status[code]}`, metadata: new grpc.Metadata() }));
      },
      sendMessage() {},
      halfClose() {},
    });
  }
  const delayMs = fault.delayMs;
  return new grpc.InterceptingCall(nextCall(options), {
    start(metadata, listener, next) {
      fault.inFlight++;
      fault.maxInFlight = Math.max(fault.maxInFlight, fault.inFlight);
      setTimeout(
        () =>
          next(metadata, {
            onReceiveStatus(status, nextStatus) {
              fault.inFlight--;
              nextStatus(status);
            },
          }),
        delayMs,
      );
    },
  });
};

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
    relay = newRelay();
  });

  function newRelay(options: RelayOptions = {}, via: Client = client, db: DbHandle = database): OutboxRelay {
    return new OutboxRelay(db.db, db.sql, via, createLogger('test', 'silent'), { definitions: known, ...options });
  }

  /** A client whose StartWorkflowExecution calls go through faultInterceptor (and no SDK retries). */
  function faultyClient(): { client: Client; connection: Connection } {
    const conn = Connection.lazy({ ...testTemporalOptions(), connectTimeout: 2000, interceptors: [faultInterceptor] });
    return { connection: conn, client: new Client({ connection: conn, namespace: stackInfo().temporalNamespace }) };
  }

  async function enqueue(def: WorkflowDefinition<(marker: string) => Promise<string>>, n: number): Promise<string[]> {
    const markers = Array.from({ length: n }, () => randomUUID());
    for (const m of markers) await database.db.transaction((tx) => enqueueWorkflowStart(tx, def, intent(m)));
    return markers;
  }

  async function rowsOf(markers: string[]) {
    return database.db.select().from(outbox).where(inArray(sql`${outbox.payload}->>'workflowId'`, markers.map((m) => intent(m).workflowId)));
  }

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
    // Temporal being down is not the row's fault: no attempt is counted against it.
    expect(whileDown.paused).toBe(true);
    expect(pending?.attempts).toBe(0);
    expect(pending?.deadAt).toBeNull();
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
    const other = newRelay();
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
    const relays = [relay, newRelay()];
    const stats = await Promise.all(relays.map((r) => r.drainOnce()));
    const total = stats.reduce((n, s) => n + s.delivered, 0);
    const rows = (await Promise.all(markers.map(rowsFor))).flat();
    expect(rows.every((r) => r.deliveredAt !== null && r.attempts === 1)).toBe(true);
    expect(total).toBe(30);
  });

  it('delivers a batch with bounded concurrency, holding no transaction open while Temporal answers', async () => {
    const markers = await enqueue(probeWorkflow, 24);
    const faulty = faultyClient();
    // Its own pool, named, so its sessions can be told apart in pg_stat_activity.
    const appName = `outbox-relay-${randomUUID().slice(0, 8)}`;
    const relayDb = connectDatabase(stackInfo().databaseUrl, { max: 4, applicationName: appName });
    try {
      Object.assign(fault, { status: undefined, delayMs: 800, inFlight: 0, maxInFlight: 0 });
      const slow = newRelay({ concurrency: 6 }, faulty.client, relayDb);
      let drained = false;
      const round = slow.drainOnce().finally(() => (drained = true));
      // A transaction held across a start stays open for the whole 800 ms answer. The claim's own
      // short transaction is also "idle in transaction" between its statements, and on a loaded
      // machine a 50 ms sample can land there, so only one open for half an answer counts.
      let openTransactions = 0;
      while (!drained) {
        const [row] = await database.sql<{ n: number }[]>`
          select count(*)::int as n from pg_stat_activity
          where application_name = ${appName} and state like 'idle in transaction%'
            and xact_start < now() - interval '400 milliseconds'`;
        openTransactions = Math.max(openTransactions, row!.n);
        await new Promise((r) => setTimeout(r, 50));
      }
      const stats = await round;
      expect(stats.delivered).toBeGreaterThanOrEqual(24);
      expect(fault.maxInFlight).toBeGreaterThan(1);
      expect(fault.maxInFlight).toBeLessThanOrEqual(6);
      expect(openTransactions).toBe(0);
      expect((await rowsOf(markers)).every((r) => r.deliveredAt !== null)).toBe(true);
    } finally {
      fault.delayMs = 0;
      await relayDb.close();
      await faulty.connection.close();
    }
  });

  it.each([
    ['RESOURCE_EXHAUSTED', grpc.status.RESOURCE_EXHAUSTED],
    ['UNAUTHENTICATED', grpc.status.UNAUTHENTICATED],
    ['PERMISSION_DENIED', grpc.status.PERMISSION_DENIED],
  ])('pauses on %s without blaming the rows, and delivers them once Temporal takes work again', async (name, code) => {
    const markers = await enqueue(probeWorkflow, 5);
    const faulty = faultyClient();
    try {
      Object.assign(fault, { status: code, calls: 0 });
      const paused = await newRelay({ concurrency: 1 }, faulty.client).drainOnce();
      expect(paused).toMatchObject({ delivered: 0, failed: 0, dead: 0, paused: true });
      // The first refusal stops the round: the other rows are not even tried.
      expect(fault.calls).toBe(1);
      const rows = await rowsOf(markers);
      expect(rows).toHaveLength(5);
      for (const r of rows) {
        expect(r.attempts).toBe(0);
        expect(r.deadAt).toBeNull();
        expect(r.deliveredAt).toBeNull();
        // Due again at once: the relay's own pause paces the retry, not a per-row backoff.
        expect(r.availableAt.getTime()).toBeLessThanOrEqual(Date.now() + 1000);
      }
      expect(rows.some((r) => r.lastError?.includes(name))).toBe(true);

      fault.status = undefined;
      const resumed = await newRelay({}, faulty.client).drainOnce();
      expect(resumed.delivered).toBeGreaterThanOrEqual(5);
      expect((await rowsOf(markers)).every((r) => r.deliveredAt !== null && r.attempts === 1)).toBe(true);
    } finally {
      fault.status = undefined;
      await faulty.connection.close();
    }
  });

  it('dead-letters a row refused on every attempt, shows it to operators and in /metrics, and requeues it on request', async () => {
    const [marker] = await enqueue(unknownWorkflow, 1);
    const strict = newRelay({ maxAttempts: 3 });
    const rowOf = async () => (await rowsOf([marker!]))[0]!;
    for (let i = 0; i < 3; i++) {
      await database.db.update(outbox).set({ availableAt: new Date(0) }).where(sql`${outbox.payload}->>'workflowId' = ${intent(marker!).workflowId}`);
      const stats = await strict.drainOnce();
      expect(stats.failed).toBe(1);
      expect(stats.dead).toBe(i === 2 ? 1 : 0);
    }
    const dead = await rowOf();
    expect(dead.deadAt).not.toBeNull();
    expect(dead.attempts).toBe(3);
    expect(dead.lastError).toMatch(/unknown workflow type noSuchWorkflow/);
    // A dead row is no longer taken, however long the relay runs.
    await database.db.update(outbox).set({ availableAt: new Date(0) }).where(eq(outbox.id, dead.id));
    expect((await strict.drainOnce()).claimed).toBe(0);
    expect((await rowOf()).attempts).toBe(3);

    const rootName = `root-${randomUUID().slice(0, 8)}`;
    const api = await startTestApi({ MERIDIAN_SUPERUSERS: rootName });
    try {
      await api.services.db.transaction((tx) => createUser(tx, { username: rootName, password: 'root-password' }));
      const root = basic(rootName, 'root-password');
      const call = async (method: string, p: string, auth?: string) => {
        const r = await fetch(`${api.url}${p}`, { method, headers: auth ? { Authorization: auth } : {} });
        const text = await r.text();
        return { status: r.status, text, json: text.startsWith('{') ? JSON.parse(text) : undefined };
      };
      const view = await call('GET', '/api/v1/outbox', root);
      expect(view.status).toBe(200);
      expect(view.json.dead).toBe(1);
      expect(view.json.dead_intents).toEqual([
        expect.objectContaining({ id: dead.id, workflow_type: 'noSuchWorkflow', workflow_id: intent(marker!).workflowId, attempts: 3, last_error: expect.stringMatching(/unknown workflow type/) }),
      ]);
      expect((await call('GET', '/api/v1/outbox')).status).toBe(401);
      expect((await call('GET', '/metrics')).text).toMatch(/^meridian_outbox_dead 1$/m);

      // The same through the CLI: list, requeue.
      const cli = async (...args: string[]) => {
        const out: string[] = [];
        const io = { env: { MERIDIAN_URL: api.url, MERIDIAN_USERNAME: rootName, MERIDIAN_PASSWORD: 'root-password' }, out: (l: string) => out.push(l), err: (l: string) => out.push(l), readStdin: async () => '' };
        const code = await runCli(args, io);
        return { code, out: out.join('\n') };
      };
      const listed = await cli('outbox');
      expect(listed.code).toBe(0);
      expect(listed.out).toMatch(/dead 1/);
      expect(listed.out).toContain(`#${dead.id}  noSuchWorkflow ${intent(marker!).workflowId}  3 attempts`);
      expect(await cli('outbox', 'requeue', String(dead.id))).toEqual({ code: 0, out: `requeued outbox intent ${dead.id}` });
      const requeued = await rowOf();
      expect(requeued).toMatchObject({ deadAt: null, attempts: 0 });
      expect((await call('POST', `/api/v1/outbox/${dead.id}/requeue`, root)).status).toBe(404);
      const again = await cli('outbox', 'requeue', String(dead.id));
      expect(again.code).toBe(1);
      expect(again.out).toMatch(/no dead-lettered outbox intent/);
      const bad = await call('POST', '/api/v1/outbox/abc/requeue', root);
      expect(bad.status).toBe(400);
      expect(bad.text).toMatch(/id must be/);
      expect((await call('GET', '/metrics')).text).toMatch(/^meridian_outbox_dead 0$/m);
    } finally {
      await api.close();
      // Nothing in this file can start it: leave no due row for the other tests' relays.
      await database.db.delete(outbox).where(sql`${outbox.payload}->>'workflowId' = ${intent(marker!).workflowId}`);
    }
  });

  it('prunes delivered rows once they are older than the retention, and keeps newer ones', async () => {
    const [oldMarker, newMarker] = await enqueue(probeWorkflow, 2);
    expect((await relay.drainOnce()).delivered).toBeGreaterThanOrEqual(2);
    await database.db.execute(sql`update ${outbox} set delivered_at = now() - interval '2 hours' where ${outbox.payload}->>'workflowId' = ${intent(oldMarker!).workflowId}`);
    await newRelay({ retentionMs: 3600_000 }).drainOnce();
    expect(await rowsOf([oldMarker!])).toHaveLength(0);
    expect(await rowsOf([newMarker!])).toHaveLength(1);
  });

  it('finds due rows in id order through an index, without sorting the backlog', async () => {
    const plan = await database.db.transaction(async (tx) => {
      // On a small test table the planner would rightly scan it; ask what it does at scale.
      await tx.execute(sql`set local enable_seqscan = off`);
      const [row] = await tx.execute<{ 'QUERY PLAN': unknown }>(sql`explain (format json) ${dueRows(100)}`);
      return JSON.stringify(row!['QUERY PLAN']);
    });
    expect(plan).toContain('"Index Name":"outbox_pending_idx"');
    expect(plan).not.toContain('"Node Type":"Sort"');
  });
});
