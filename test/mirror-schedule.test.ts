// The Temporal side of mirroring: one Schedule per config kept in step with the database (also
// when Temporal was down at the time of the change), syncs on the interval with no request,
// pausing, cancel of a running sync, deletion.
import { ScheduleNotFoundError } from '@temporalio/client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { deleteMirrorConfig, formatQuayDate, requestSyncCancel, requestSyncNow, updateMirrorConfig } from '../mirror/config.ts';
import { WORKFLOW_IDS } from '../temporal.config.ts';
import type { RunningWorkers } from '../workers/main.ts';
import { stackControl, startTestWorkers } from './support/harness.ts';
import { createMirror, localTags, mirrorBody, mirrorConfigOf, mirrorFixture, runsOf, waitFor, waitForRuns } from './support/mirror-helpers.ts';
import { fillRepository, startUpstreamRegistry, type UpstreamRegistry } from './support/upstream-registry.ts';

describe('mirror schedules', () => {
  let upstream: UpstreamRegistry;
  let workers: RunningWorkers;

  beforeAll(async () => {
    upstream = await startUpstreamRegistry();
    await fillRepository(upstream, 'team/tool', { tags: ['v1', 'v2', 'v3', 'v4', 'v5', 'v6'], multiArch: ['v2'] });
    // Four tags per workflow run: a six-tag sync continues as new once.
    workers = await startTestWorkers({}, { MERIDIAN_MIRROR_ALLOWED_HOSTS: '127.0.0.1', MERIDIAN_MIRROR_TAG_ATTEMPTS: '2', MERIDIAN_MIRROR_TAGS_PER_RUN: '4' });
  });

  afterAll(async () => {
    await workers?.stop();
    await upstream?.close();
  });

  const schedule = (repo: string) => workers.services.temporal.client.schedule.getHandle(WORKFLOW_IDS.mirrorSchedule(repo));

  it('syncs on its interval without any request; disabling pauses the schedule, deleting removes it', async () => {
    const s = workers.services;
    const f = await mirrorFixture(s);
    const repo = { ...f.repo, state: 'mirror' as const };
    const cfg = await createMirror(
      s,
      f,
      mirrorBody(f, `${upstream.authority}/team/tool`, {
        sync_interval: 5,
        sync_start_date: formatQuayDate(new Date()),
        external_registry_username: upstream.username,
        external_registry_password: upstream.password,
      }),
    );
    const desc = await waitFor('the schedule', () => schedule(f.repo.fullName).describe());
    expect(desc.spec.intervals?.[0]?.every).toBe(5000);
    expect(desc.policies.overlap).toBe('SKIP');
    const second = await waitForRuns(s, cfg.id, 2, 90_000);
    expect(second.status, second.reason ?? '').toBe('SUCCESS');
    const runs = await runsOf(s, cfg.id);
    expect(runs.every((r) => r.trigger === 'schedule')).toBe(true);
    expect(Object.keys(await localTags(s, f.repo.id)).sort()).toEqual(['v1', 'v2', 'v3', 'v4', 'v5', 'v6']);
    // The first sync continued as new after four tags and finished the other two in its next run.
    const first = runs[runs.length - 1]!;
    const history = await s.temporal.client.workflow.getHandle(first.workflowId, first.runId).describe();
    expect(history.status.name).toBe('CONTINUED_AS_NEW');
    expect(first.tagResults?.filter((t) => t.status === 'synced')).toHaveLength(6);

    await updateMirrorConfig(s, repo, { is_enabled: false });
    await waitFor('the schedule paused', async () => (await schedule(f.repo.fullName).describe()).state.paused);
    await updateMirrorConfig(s, repo, { is_enabled: true, sync_interval: 3600 });
    await waitFor('the schedule resumed with the new interval', async () => {
      const d = await schedule(f.repo.fullName).describe();
      return !d.state.paused && d.spec.intervals?.[0]?.every === 3_600_000;
    });

    await deleteMirrorConfig(s, repo);
    await waitFor('the schedule deleted', async () => {
      try {
        await schedule(f.repo.fullName).describe();
        return false;
      } catch (e) {
        return e instanceof ScheduleNotFoundError;
      }
    });
  });

  it('cancel stops a running sync: status CANCEL, no retries, tags rolled back', async () => {
    const s = workers.services;
    const f = await mirrorFixture(s);
    const repo = { ...f.repo, state: 'mirror' as const };
    const cfg = await createMirror(
      s,
      f,
      mirrorBody(f, `${upstream.authority}/team/tool`, {
        rollback_on_failure: true,
        external_registry_username: upstream.username,
        external_registry_password: upstream.password,
      }),
    );
    upstream.blobDelayMs = 3000;
    try {
      await requestSyncNow(s, repo);
      await waitFor('the sync running', async () => (await mirrorConfigOf(s, f.repo.id)).syncStatus === 'SYNCING', 60_000, 100);
      await requestSyncCancel(s, repo);
      const run = await waitForRuns(s, cfg.id, 1, 60_000);
      expect(run.status).toBe('CANCEL');
      const after = await mirrorConfigOf(s, f.repo.id);
      expect(after.syncStatus).toBe('CANCEL');
      expect(after.syncRetriesRemaining).toBe(0);
      expect(await localTags(s, f.repo.id)).toEqual({});
    } finally {
      upstream.blobDelayMs = 0;
    }
    // Cancelling when nothing runs is refused, as in Quay.
    await expect(requestSyncCancel(s, repo)).rejects.toThrow(/no sync/);
  });

  it('a config change made while Temporal is down reaches it when it is back', async () => {
    const s = workers.services;
    const f = await mirrorFixture(s);
    await stackControl.stop('temporal');
    try {
      // The change itself does not need Temporal: the outbox keeps the intent.
      await createMirror(s, f, mirrorBody(f, `${upstream.authority}/team/tool`));
    } finally {
      await stackControl.start('temporal');
    }
    const d = await waitFor('the schedule after Temporal returns', () => schedule(f.repo.fullName).describe(), 120_000, 1000);
    expect(d.spec.intervals?.[0]?.every).toBe(3_600_000);
  });
});
