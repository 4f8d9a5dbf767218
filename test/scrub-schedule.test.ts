// A location added through the API gets its weekly scrub schedule at once (before, only the next
// `meridian temporal setup` created it, so a new region went unscrubbed until a deploy), and a
// location removed through the API takes its schedule with it.
import { randomBytes } from 'node:crypto';
import { type Client, type Connection, ScheduleNotFoundError } from '@temporalio/client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createUser } from '../auth/accounts.ts';
import { WORKFLOW_IDS } from '../temporal.config.ts';
import type { RunningWorkers } from '../workers/main.ts';
import { startExtraRegion, type ExtraRegion } from './support/extra-region.ts';
import { basic, startTestApi, startTestWorkers, testTemporal } from './support/harness.ts';
import { waitFor } from './support/mirror-helpers.ts';

describe('scrub schedules follow the locations', () => {
  let api: Awaited<ReturnType<typeof startTestApi>>;
  let workers: RunningWorkers;
  let temporal: Client;
  let connection: Connection;
  let region: ExtraRegion;
  const name = `scrubbed-${randomBytes(3).toString('hex')}`;
  const root = `root-${randomBytes(3).toString('hex')}`;
  const rootPassword = `pw-${randomBytes(8).toString('hex')}`;

  beforeAll(async () => {
    api = await startTestApi({ MERIDIAN_SUPERUSERS: root });
    await api.services.db.transaction((tx) => createUser(tx, { username: root, password: rootPassword }));
    workers = await startTestWorkers({ control: true, mirror: false });
    ({ client: temporal, connection } = await testTemporal());
    region = await startExtraRegion(name, 'scrubbed');
  });
  afterAll(async () => {
    await temporal?.schedule.getHandle(WORKFLOW_IDS.scrubSchedule(name)).delete().catch(() => undefined);
    await workers?.stop();
    await api?.close();
    await region?.stop();
    await connection?.close();
  });

  const asRoot = (path: string, method: string, body?: unknown) =>
    fetch(`${api.url}${path}`, {
      method,
      headers: { Authorization: basic(root, rootPassword), 'Content-Type': 'application/json' },
      ...(body ? { body: JSON.stringify(body) } : {}),
    });

  async function scheduleExists(): Promise<boolean> {
    try {
      await temporal.schedule.getHandle(WORKFLOW_IDS.scrubSchedule(name)).describe();
      return true;
    } catch (e) {
      if (e instanceof ScheduleNotFoundError) return false;
      throw e;
    }
  }

  it('creates the scrub schedule when a location is added and deletes it when the location is removed', async () => {
    expect(await scheduleExists()).toBe(false);
    const added = await asRoot('/api/v1/locations', 'POST', {
      name,
      region: name,
      endpoint: region.endpoint,
      bucket: region.bucket,
      replicate_by_default: false,
      credentials: { access_key: region.credentials.accessKeyId, secret_key: region.credentials.secretAccessKey },
    });
    expect(added.status, await added.clone().text()).toBe(201);
    expect(await scheduleExists()).toBe(true);
    const described = await temporal.schedule.getHandle(WORKFLOW_IDS.scrubSchedule(name)).describe();
    expect(described.action.type).toBe('startWorkflow');
    expect(described.action.type === 'startWorkflow' && described.action.workflowType).toBe('scrubLocation');
    expect(described.action.type === 'startWorkflow' && described.action.args).toEqual([{ location: name }]);

    expect((await asRoot(`/api/v1/locations/${name}`, 'DELETE')).status).toBe(202);
    await waitFor(`${name} removed`, async () => (await (await asRoot('/api/v1/locations', 'GET')).json() as { locations: { name: string }[] }).locations.every((l) => l.name !== name), 120_000);
    await waitFor(`the scrub schedule of ${name} gone`, async () => !(await scheduleExists()), 30_000);
  });
});
