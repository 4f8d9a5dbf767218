// Activity failures as Temporal records them carry no secrets (issue 10 follow-up). A failure's
// message, stack and causes stay in the workflow's history and pending-activity state, shown by
// the UI to anyone with access to the namespace. Meridian's own errors name origins, not URLs, but
// an error it did not word — here the database's, raised under a mirror activity's insert by a
// trigger, as a driver or a proxy might quote a URL — reaches Temporal through the same path:
// the failed query's parameters and the quoted URL's password and token must not.
import { randomBytes } from 'node:crypto';
import { sql } from 'drizzle-orm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createRobot, namespaceByName } from '../auth/accounts.ts';
import { createRepository } from '../registry/repositories.ts';
import { WORKFLOW_IDS } from '../temporal.config.ts';
import type { RunningWorkers } from '../workers/main.ts';
import { waitFor } from './support/mirror-helpers.ts';
import { createTestUser, startTestApi, startTestWorkers, testTemporal } from './support/harness.ts';

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
      body: JSON.stringify({
        external_reference: 'registry.example.com/library/nginx',
        sync_interval: 3600,
        sync_start_date: '2030-01-02T03:04:05Z',
        root_rule: { rule_kind: 'tag_glob_csv', rule_value: ['*'] },
        robot_username: robot,
      }),
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
