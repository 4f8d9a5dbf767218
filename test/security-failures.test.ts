// Activity failures as Temporal records them carry no secrets (issue 10 follow-up). A failure's
// message, stack and causes stay in the workflow's history and pending-activity state, shown by
// the UI to anyone with access to the namespace. Meridian's own errors name origins, not URLs, but
// an error it did not word — here the database's, raised under a mirror activity's insert by a
// trigger, as a driver or a proxy might quote a URL — reaches Temporal through the same path:
// the failed query's parameters and the quoted URL's password and token must not.
import { randomBytes } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import { ApplicationFailure } from '@temporalio/common';
import { bundleWorkflowCode, NativeConnection, Worker } from '@temporalio/worker';
import { sql } from 'drizzle-orm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createRobot, namespaceByName } from '../auth/accounts.ts';
import { createRepository } from '../registry/repositories.ts';
import { WORKFLOW_IDS } from '../temporal.config.ts';
import { redactingInterceptors } from '../security/failure-redaction.ts';
import { WORKFLOW_INTERCEPTOR_MODULES } from '../workers/bundle.ts';
import { installRuntime, type RunningWorkers } from '../workers/main.ts';
import { mirrorConfig } from './support/mirror-config.ts';
import { waitFor } from './support/mirror-helpers.ts';
import { createTestUser, stackInfo, startTestApi, startTestWorkers, testTemporal, testTemporalOptions } from './support/harness.ts';

const PASSWORD = `pw-${randomBytes(6).toString('hex')}`;
const TOKEN = `tok-${randomBytes(6).toString('hex')}`;

describe('activity failures in Temporal', () => {
  let api: Awaited<ReturnType<typeof startTestApi>>;
  let workers: RunningWorkers;
  let temporal: Awaited<ReturnType<typeof testTemporal>>;

  beforeAll(async () => {
    api = await startTestApi();
    workers = await startTestWorkers({ control: true, mirror: false, copyLocations: [] });
    temporal = await testTemporal();
  });
  afterAll(async () => {
    await api?.services.db.execute(sql`drop trigger if exists refuse_runs on mirror_runs`).catch(() => {});
    await workers?.stop();
    await api?.close();
    await temporal?.connection.close();
  });

  it("a mirror activity's failure keeps no URL password, URL token or query parameters", async () => {
    const owner = await createTestUser('fail-owner');
    const s = api.services;
    const repo = await createRepository(s.db, { fullName: `${owner.username}/mirrored` });
    const ns = (await namespaceByName(s.db, owner.username))!;
    const robot = (await s.db.transaction((tx) => createRobot(tx, { namespace: ns, shortName: 'mirror' }))).name;
    const created = await fetch(`${api.url}/api/v1/repository/${repo.fullName}/mirror`, {
      method: 'POST',
      headers: { authorization: owner.authorization, 'content-type': 'application/json' },
      body: JSON.stringify(mirrorConfig(robot, 'registry.example.com/library/nginx')),
    });
    expect(created.status).toBe(201);
    // Every run the mirror begins fails in the database with a message quoting a URL.
    await s.db.execute(
      sql.raw(`create or replace function refuse_runs() returns trigger language plpgsql as $$
        begin raise exception 'upstream https://mirror-user:${PASSWORD}@up.example.com/v2/?token=${TOKEN}&n=1 refused'; end $$;
        create trigger refuse_runs before insert on mirror_runs for each row execute function refuse_runs();`),
    );
    const sync = await fetch(`${api.url}/api/v1/repository/${repo.fullName}/mirror/sync-now`, { method: 'POST', headers: { authorization: owner.authorization } });
    expect(sync.status).toBe(204);

    // beginMirrorRun retries without end; Temporal keeps its last failure. (The schedule starts
    // the sync, under an id with the time appended.)
    let syncId = '';
    const failure = await waitFor(
      'the failed attempt recorded by Temporal',
      async () => {
        for await (const w of temporal.client.workflow.list({ query: `WorkflowType = 'mirrorSync'` })) {
          if (!w.workflowId.startsWith(WORKFLOW_IDS.mirrorSync(repo.fullName))) continue;
          const d = await temporal.client.workflow.getHandle(w.workflowId, w.runId).describe();
          const f = d.raw.pendingActivities?.find((a) => a.lastFailure)?.lastFailure;
          if (f) {
            syncId = w.workflowId;
            return f;
          }
        }
        return undefined;
      },
      60_000,
    );
    const recorded = JSON.stringify(failure);
    // It is the failure we caused, with enough left to act on…
    expect(recorded).toContain('Failed query: insert into');
    expect(recorded).toContain('https://mirror-user:***@up.example.com/v2/?token=***&n=***');
    // …and nothing of the secrets or the statement's parameters.
    expect(recorded).not.toContain(PASSWORD);
    expect(recorded).not.toContain(TOKEN);
    expect(recorded).not.toContain('params:');
    expect(recorded).not.toContain(syncId); // a parameter of the insert
    await temporal.client.workflow.getHandle(syncId).terminate('test done');
  });
});

// Failures thrown by workflow code, and an ApplicationFailure's details (recorded beside its
// message), go through the same redaction: the workers' interceptors (activity side) and the
// workflow interceptor modules every bundle carries (workers/bundle.ts), on a worker of this test's
// own that runs test/fixtures/workflows.ts.
describe('workflow failures and failure details in Temporal', () => {
  const taskQueue = `redaction-${randomBytes(4).toString('hex')}`;
  const url = `https://mirror-user:${PASSWORD}@up.example.com/v2/?token=${TOKEN}`;
  let temporal: Awaited<ReturnType<typeof testTemporal>>;
  let worker: Worker;
  let running: Promise<void>;

  beforeAll(async () => {
    installRuntime('warn');
    temporal = await testTemporal();
    const { code } = await bundleWorkflowCode({
      workflowsPath: fileURLToPath(new URL('./fixtures/workflows.ts', import.meta.url)),
      workflowInterceptorModules: WORKFLOW_INTERCEPTOR_MODULES,
      logger: { trace() {}, debug() {}, info() {}, warn() {}, error() {}, log() {} },
    });
    worker = await Worker.create({
      connection: await NativeConnection.connect(testTemporalOptions()),
      namespace: stackInfo().temporalNamespace,
      taskQueue,
      workflowBundle: { code },
      interceptors: redactingInterceptors,
      activities: {
        refuseUpstream: async (u: string) => {
          throw ApplicationFailure.nonRetryable('upstream refused', 'UpstreamRefused', { url: u, headers: { authorization: `Bearer ${TOKEN}` } });
        },
      },
    });
    running = worker.run();
  }, 120_000);
  afterAll(async () => {
    worker?.shutdown();
    await running;
    await temporal?.connection.close();
  });

  /** The failures the workflow's history stores (not its input: the caller's own), payloads (the
   * details) as the JSON text they hold. */
  async function failuresOf(workflow: string): Promise<string> {
    const handle = await temporal.client.workflow.start(workflow, { taskQueue, workflowId: `${taskQueue}-${workflow}`, args: [url] });
    await expect(handle.result()).rejects.toThrow();
    const failures = (await handle.fetchHistory()).events!.map((e) => e.activityTaskFailedEventAttributes?.failure ?? e.workflowExecutionFailedEventAttributes?.failure).filter(Boolean);
    expect(failures.length).toBeGreaterThan(0);
    // As JSON the history's payload bytes are base64 (of JSON: the details).
    return JSON.stringify(failures, (k, v: unknown) => (k === 'data' && typeof v === 'string' ? JSON.parse(Buffer.from(v, 'base64').toString()) : v));
  }

  it("a failure thrown by workflow code keeps no URL password or token, in its message or its details", async () => {
    const recorded = await failuresOf('failsQuotingUrl');
    expect(recorded).toContain('upstream https://mirror-user:***@up.example.com/v2/?token=*** refused');
    expect(recorded).toContain('UpstreamRefused');
    expect(recorded).toContain('"password":"***"');
    expect(recorded).not.toContain(PASSWORD);
    expect(recorded).not.toContain(TOKEN);
  });

  it("an activity's ApplicationFailure details keep no URL password, token or credential header", async () => {
    const recorded = await failuresOf('activityFailsQuotingUrl');
    expect(recorded).toContain('upstream refused');
    expect(recorded).toContain('https://mirror-user:***@up.example.com/v2/?token=***');
    expect(recorded).not.toContain(PASSWORD);
    expect(recorded).not.toContain(TOKEN);
  });

  it('an update rejected by its validator or failed by its handler keeps no URL password or token', async () => {
    const handle = await temporal.client.workflow.start('updateFailsQuotingUrl', { taskQueue, workflowId: `${taskQueue}-update` });
    const plain = url.replace('https://', 'http://');
    const rejected: unknown = await handle.executeUpdate('useUpstream', { args: [plain] }).then(
      () => undefined,
      (e: unknown) => e,
    );
    const said = JSON.stringify(rejected, Object.getOwnPropertyNames(rejected ?? {})) + String((rejected as Error | undefined)?.cause);
    expect(said).toContain('refused http://mirror-user:***@up.example.com/v2/?token=***');
    expect(said).not.toContain(PASSWORD);
    expect(said).not.toContain(TOKEN);

    await expect(handle.executeUpdate('useUpstream', { args: [url] })).rejects.toThrow();
    await handle.result();
    const outcomes = (await handle.fetchHistory()).events!.map((e) => e.workflowExecutionUpdateCompletedEventAttributes?.outcome?.failure).filter(Boolean);
    expect(outcomes.length).toBe(1);
    const recorded = JSON.stringify(outcomes, (k, v: unknown) => (k === 'data' && typeof v === 'string' ? JSON.parse(Buffer.from(v, 'base64').toString()) : v));
    expect(recorded).toContain('cannot use https://mirror-user:***@up.example.com/v2/?token=***');
    expect(recorded).not.toContain(PASSWORD);
    expect(recorded).not.toContain(TOKEN);
  });
});
