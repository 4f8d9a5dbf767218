// `meridian temporal setup`, the deploy step: registers a namespace and Meridian's search
// attributes, brings every schedule Meridian owns in line with this release (a changed interval
// reaches an existing schedule; a schedule a release dropped goes), reconciles mirror schedules
// with their rows, and stays idempotent. Runs against the dev server and the real server.
import { randomBytes } from 'node:crypto';
import { type Client, type Connection, ScheduleNotFoundError, ScheduleOverlapPolicy } from '@temporalio/client';
import Long from 'long';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runCli } from '../cli/meridian.ts';
import { createServices, type Services } from '../platform/services.ts';
import { TASK_QUEUES, WORKFLOW_IDS } from '../temporal.config.ts';
import { MAINTENANCE_SCHEDULES } from '../workers/schedules.ts';
import { ensureTestLocations, testConfig, testEnv, testTemporal } from './support/harness.ts';
import { createMirror, mirrorBody, mirrorFixture, waitFor } from './support/mirror-helpers.ts';

async function setup(env: Record<string, string | undefined> = {}, args: string[] = []) {
  const out: string[] = [];
  const err: string[] = [];
  const code = await runCli(['temporal', 'setup', ...args], {
    env: testEnv(env),
    out: (l) => out.push(l),
    err: (l) => err.push(l),
    readStdin: async () => '',
  });
  return { code, out: out.join('\n'), err: err.join('\n'), errLines: err.length };
}

/** Schedules are listed through visibility, which follows a moment behind on the real server. */
async function waitUntilListed(client: Client, id: string): Promise<void> {
  await waitFor(`schedule ${id} listed`, async () => {
    for await (const s of client.schedule.list()) if (s.scheduleId === id) return true;
    return false;
  }, 30_000);
}

async function scheduleGone(client: Client, id: string): Promise<boolean> {
  try {
    await client.schedule.getHandle(id).describe();
    return false;
  } catch (e) {
    return e instanceof ScheduleNotFoundError;
  }
}

describe('meridian temporal setup', () => {
  let connection: Connection;
  let client: Client;
  let services: Services;

  beforeAll(async () => {
    ({ client, connection } = await testTemporal());
    await ensureTestLocations();
    services = createServices(testConfig(), 'test');
  });

  afterAll(async () => {
    await services?.close();
    await connection?.close();
  });

  it('registers a new namespace with the search attributes, creates the schedules, and is idempotent', async () => {
    const namespace = `setup-${randomBytes(4).toString('hex')}`;
    const first = await setup({ TEMPORAL_NAMESPACE: namespace }, ['--retention', '3', '--skip-mirrors']);
    expect(first, first.err).toMatchObject({ code: 0 });
    expect(first.out).toContain(`namespace ${namespace}: registered (retention 3 days)`);
    expect(first.out).toMatch(/search attributes: added MeridianBlobDigest, .*MeridianBytes/);
    expect(first.out).toContain(`schedule ${WORKFLOW_IDS.expireUploadsSchedule}: created`);

    const ns = await connection.workflowService.describeNamespace({ namespace });
    expect(Number(ns.config?.workflowExecutionRetentionTtl?.seconds)).toBe(3 * 86_400);
    // Workflows can be found by digest in it at once.
    await connection.workflowService.countWorkflowExecutions({ namespace, query: `MeridianBlobDigest = "sha256:${'0'.repeat(64)}"` });

    const again = await setup({ TEMPORAL_NAMESPACE: namespace }, ['--skip-mirrors']);
    expect(again, again.err).toMatchObject({ code: 0 });
    expect(again.out).toContain(`namespace ${namespace}: exists`);
    expect(again.out).toContain('search attributes: none to add; 10 present');
    expect(again.out).toContain(`schedule ${WORKFLOW_IDS.expireUploadsSchedule}: updated`);
  });

  it('updates a maintenance schedule an older release created, keeps an operator\'s pause, deletes dropped ones', async () => {
    // As a release with a two-hour interval and a different task queue left them.
    await client.schedule.create({
      scheduleId: WORKFLOW_IDS.expireUploadsSchedule,
      spec: { intervals: [{ every: '2 hours' }] },
      action: { type: 'startWorkflow', workflowType: 'expireUploads', taskQueue: 'old-queue', args: [{}] },
      policies: { overlap: ScheduleOverlapPolicy.ALLOW_ALL },
      state: { paused: true, note: 'paused by an operator' },
    });
    await client.schedule.create({
      scheduleId: 'maintenance/retired-job',
      spec: { intervals: [{ every: '1 day' }] },
      action: { type: 'startWorkflow', workflowType: 'retiredJob', taskQueue: TASK_QUEUES.control, args: [] },
    });
    await waitUntilListed(client, 'maintenance/retired-job');

    const r = await setup({}, ['--skip-mirrors']);
    expect(r, r.err).toMatchObject({ code: 0 });
    expect(r.out).toContain(`schedule ${WORKFLOW_IDS.expireUploadsSchedule}: updated`);
    expect(r.out).toContain('schedule maintenance/retired-job: deleted');

    const d = await client.schedule.getHandle(WORKFLOW_IDS.expireUploadsSchedule).describe();
    expect(d.spec.intervals?.[0]?.every).toBe(3_600_000);
    expect(d.action.type === 'startWorkflow' && d.action.taskQueue).toBe(TASK_QUEUES.control);
    expect(d.policies.overlap).toBe('SKIP');
    expect(d.state.paused).toBe(true);
    expect(d.state.note).toBe('paused by an operator');
    expect(await scheduleGone(client, 'maintenance/retired-job')).toBe(true);
    expect(MAINTENANCE_SCHEDULES.map((s) => s.scheduleId)).toContain(WORKFLOW_IDS.expireUploadsSchedule);
  });

  it('reconciles mirror schedules with their rows: a missing one is created, an orphan deleted', async () => {
    // No outbox relay runs in this file: the row exists, its schedule does not (as after a
    // Temporal namespace was recreated, or a deploy that changed the schedule options).
    const f = await mirrorFixture(services);
    await createMirror(services, f, mirrorBody(f, 'registry.example.com/library/app', { sync_interval: 7200 }));
    const orphan = `gone-${randomBytes(3).toString('hex')}/app`;
    await client.schedule.create({
      scheduleId: WORKFLOW_IDS.mirrorSchedule(orphan),
      spec: { intervals: [{ every: '1 hour' }] },
      action: { type: 'startWorkflow', workflowType: 'mirrorSync', taskQueue: TASK_QUEUES.control, args: [{ repository: orphan }] },
    });
    await waitUntilListed(client, WORKFLOW_IDS.mirrorSchedule(orphan));
    const r = await setup();
    expect(r, r.err).toMatchObject({ code: 0 });
    expect(r.out).toContain('mirror schedules: 2 reconciled');
    const d = await client.schedule.getHandle(WORKFLOW_IDS.mirrorSchedule(f.repo.fullName)).describe();
    expect(d.spec.intervals?.[0]?.every).toBe(7_200_000);
    expect(await scheduleGone(client, WORKFLOW_IDS.mirrorSchedule(orphan))).toBe(true);
  });

  it('refuses a search attribute registered with another type, saying how to fix it', async () => {
    const namespace = `setup-${randomBytes(4).toString('hex')}`;
    await connection.workflowService.registerNamespace({ namespace, workflowExecutionRetentionPeriod: { seconds: Long.fromNumber(86_400) } });
    const { waitForNamespace } = await import('../platform/temporal-admin.ts');
    await waitForNamespace(connection, namespace, []);
    await connection.operatorService.addSearchAttributes({ namespace, searchAttributes: { MeridianBytes: 2 /* Keyword */ } });
    const r = await setup({ TEMPORAL_NAMESPACE: namespace }, ['--skip-mirrors']);
    expect(r.code).toBe(1);
    expect(r.errLines).toBe(1);
    expect(r.err).toMatch(/^meridian: search attribute MeridianBytes is registered in namespace "setup-\w+" as Keyword, Meridian needs Int; remove it/);
  });

  it('reports an unreachable Temporal in one line', async () => {
    const r = await setup({ TEMPORAL_ADDRESS: '127.0.0.1:1' }, ['--skip-mirrors']);
    expect(r.code).toBe(1);
    expect(r.errLines).toBe(1);
    expect(r.err).toMatch(/^meridian: temporal setup failed \(127\.0\.0\.1:1\): /);
  });
});
