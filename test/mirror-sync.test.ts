// Mirroring against a real upstream: the CNCF distribution registry with htpasswd auth, behind a
// counting proxy that speaks Docker Hub's token auth. Syncs run as they do in production: the
// outbox starts a reconcile, the reconcile creates the Temporal Schedule, sync-now triggers it,
// the sync workflow copies on the mirror task queue.
import { createServer, type Server } from 'node:http';
import { sql } from 'drizzle-orm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { requestSyncNow, updateMirrorConfig } from '../mirror/config.ts';
import { createSubscription, verifySignature } from '../mirror/webhooks.ts';
import { UpstreamHostPolicy } from '../mirror/reference.ts';
import type { RunningWorkers } from '../workers/main.ts';
import { stackInfo, startTestWorkers } from './support/harness.ts';
import {
  createMirror,
  localTags,
  mirrorBody,
  mirrorConfigOf,
  mirrorFixture,
  runsOf,
  waitFor,
  waitForRuns,
} from './support/mirror-helpers.ts';
import { fillRepository, type FilledRepository, retag, startUpstreamRegistry, type UpstreamRegistry } from './support/upstream-registry.ts';
import { WORKFLOW_IDS } from '../temporal.config.ts';
import type { replicateBlobs } from '../workflows/replication.ts';

const TAGS = [
  'v1.0', 'v1.1', 'v1.2', 'v1.3', 'v1.4', 'v1.5', 'latest',
  'v2.0', 'v2.1', 'v2.2', 'v2.3', 'v10', 'v1', 'beta', 'dev-1', 'dev-2', 'dev-3', 'rc1', 'rc2', 'stable', 'edge', 'nightly',
];
const MULTI_ARCH = ['v1.2', 'v1.4', 'latest', 'v2.1'];

/** How many activities of each type a workflow run scheduled. */
async function activityTypes(s: RunningWorkers['services'], workflowId: string, runId: string): Promise<Record<string, number>> {
  const history = await s.temporal.client.workflow.getHandle(workflowId, runId).fetchHistory();
  const counts: Record<string, number> = {};
  for (const e of history.events ?? []) {
    const name = e.activityTaskScheduledEventAttributes?.activityType?.name;
    if (name) counts[name] = (counts[name] ?? 0) + 1;
  }
  return counts;
}

describe('repository mirroring against a distribution registry', () => {
  let upstream: UpstreamRegistry;
  let filled: FilledRepository;
  let workers: RunningWorkers;
  const hooks: { url: string; server: Server; received: { headers: Record<string, string | string[] | undefined>; body: Buffer }[] } = {
    url: '',
    server: undefined as unknown as Server,
    received: [],
  };

  beforeAll(async () => {
    upstream = await startUpstreamRegistry({ tokenAuth: true });
    filled = await fillRepository(upstream, 'library/app', { tags: TAGS, multiArch: MULTI_ARCH });
    workers = await startTestWorkers({}, { MERIDIAN_MIRROR_ALLOWED_HOSTS: '127.0.0.1', MERIDIAN_MIRROR_TAG_ATTEMPTS: '2', MERIDIAN_MIRROR_UPSTREAM_CONCURRENCY: '3' });
    hooks.server = createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        hooks.received.push({ headers: req.headers, body: Buffer.concat(chunks) });
        res.writeHead(204).end();
      });
    });
    await new Promise<void>((r) => hooks.server.listen(0, '127.0.0.1', r));
    const addr = hooks.server.address();
    hooks.url = `http://127.0.0.1:${typeof addr === 'object' && addr ? addr.port : 0}/hook`;
  });

  afterAll(async () => {
    await workers?.stop();
    await upstream?.close();
    await new Promise<void>((r) => (hooks.server ? hooks.server.close(() => r()) : r()));
  });

  let main: { f: Awaited<ReturnType<typeof mirrorFixture>>; configId: number };

  it('mirrors exactly the tags matching ["v1.*", "latest"], digests identical, the shared layer fetched once', async () => {
    const s = workers.services;
    const f = await mirrorFixture(s);
    const cfg = await createMirror(
      s,
      f,
      mirrorBody(f, `${upstream.authority}/library/app`, {
        root_rule: { rule_kind: 'tag_glob_csv', rule_value: ['v1.*', 'latest'] },
        external_registry_username: upstream.username,
        external_registry_password: upstream.password,
      }),
    );
    // The reconcile (through the outbox) creates the schedule.
    await waitFor('the schedule', () => s.temporal.client.schedule.getHandle(WORKFLOW_IDS.mirrorSchedule(f.repo.fullName)).describe());
    const before = upstream.requests.length;
    // The first look at v1.3 is answered 429 with Retry-After: the tag is retried after it and syncs.
    let throttled = 0;
    upstream.intercept = (_method, path) => (path.endsWith('/manifests/v1.3') && throttled++ === 0 ? { status: 429, headers: { 'retry-after': '2' } } : undefined);
    upstream.maxInFlight = 0;
    await requestSyncNow(s, { ...f.repo, state: 'mirror' });
    const run = await waitForRuns(s, cfg.id, 1);
    upstream.intercept = undefined;
    expect(throttled).toBeGreaterThanOrEqual(2);
    // MERIDIAN_MIRROR_UPSTREAM_CONCURRENCY=3, although four tags are copied at once.
    expect(upstream.maxInFlight).toBeLessThanOrEqual(3);
    expect(upstream.maxInFlight).toBeGreaterThanOrEqual(1);
    expect(run.status, run.reason ?? '').toBe('SUCCESS');
    expect(run.trigger).toBe('manual');

    const expected = ['latest', 'v1.0', 'v1.1', 'v1.2', 'v1.3', 'v1.4', 'v1.5'];
    const tags = await localTags(s, f.repo.id);
    expect(Object.keys(tags).sort()).toEqual(expected);
    for (const t of expected) expect(tags[t], t).toBe(filled.digestOf(t));
    // One GET of the layer every image shares, however many tags (and platforms) need it.
    const sharedGets = upstream.requests.slice(before).filter((r) => r.method === 'GET' && r.path.endsWith(`/blobs/${filled.sharedLayer}`));
    expect(sharedGets).toHaveLength(1);

    main = { f, configId: cfg.id };
    const after = await mirrorConfigOf(s, f.repo.id);
    expect(after.syncStatus).toBe('SUCCESS');
    expect(after.syncRetriesRemaining).toBe(3);
    expect(after.syncExpirationDate).toBeNull();
    // The shared layer once, each of the ten images' own layer, configs and manifests.
    expect(run.bytes, JSON.stringify(run.tagResults)).toBeGreaterThan(64 * 1024 + 10 * 8 * 1024);
    expect(run.tagResults?.filter((t) => t.status === 'synced').map((t) => t.tag).sort()).toEqual(expected);
    // Tags new here are read with one GET each (no HEAD first: there is nothing local to compare).
    const firstRequests = upstream.requests.slice(before);
    expect(firstRequests.filter((r) => r.method === 'HEAD' && r.path.includes('/manifests/'))).toHaveLength(0);
    // All seven tags in one batch activity (one Temporal round trip, not one per tag).
    const activities = await activityTypes(s, run.workflowId, run.runId);
    expect(activities.mirrorTags, JSON.stringify(activities)).toBe(1);
    expect(activities.mirrorTag, JSON.stringify(activities)).toBeUndefined();
  });

  it('replicates what each synced tag brought in as one replicateBlobs workflow, to every region', async () => {
    const s = workers.services;
    const regions = stackInfo().regions.length;
    const repo = main.f.repo;
    // Every blob of the mirrored repository ends up held by every region.
    await waitFor('every mirrored blob in every region', async () => {
      const [row] = await s.db.execute<{ n: number; total: number }>(sql`
        select count(*) filter (where (select count(*) from blob_placements p where p.blob_id = rb.blob_id and p.state = 'available') < ${regions})::int as n,
          count(*)::int as total
        from repository_blobs rb where rb.repository_id = ${repo.id}`);
      return row!.total > 0 && row!.n === 0 ? row : undefined;
    });
    // Through one workflow per synced tag: each blob's own intent was superseded by its tag's batch.
    const intents = await s.db.execute<{ workflow_type: string; workflow_id: string; delivered: boolean; last_error: string | null }>(sql`
      select payload->>'workflowType' as workflow_type, payload->>'workflowId' as workflow_id, delivered_at is not null as delivered, last_error
      from outbox where payload->'args'->0->>'repository' = ${repo.fullName}`);
    const perBlob = intents.filter((i) => i.workflow_type === 'replicateBlob');
    const sets = intents.filter((i) => i.workflow_type === 'replicateBlobs');
    expect(perBlob.length).toBeGreaterThan(sets.length);
    for (const i of perBlob) expect(i.last_error, i.workflow_id).toMatch(/^superseded by replicate-set\//);
    // Seven tags synced; two of them may share every new blob with a tag copied beside them.
    expect(sets.length).toBeGreaterThan(0);
    expect(sets.length).toBeLessThanOrEqual(7);
    for (const set of sets) {
      const handle = s.temporal.client.workflow.getHandle<typeof replicateBlobs>(set.workflow_id);
      const result = await handle.result();
      expect(result.failed, set.workflow_id).toEqual([]);
      expect(result.complete + result.gone, set.workflow_id).toBe(result.blobs);
      const activities = await activityTypes(s, set.workflow_id, (await handle.describe()).runId);
      // One copy activity per region the blobs were missing from, whatever the number of blobs.
      expect(activities.copyBlobsToLocation, JSON.stringify(activities)).toBeLessThanOrEqual(regions - 1);
    }
  });

  it('a second sync copies nothing new; changed globs and tags gone upstream are deleted locally', async () => {
    const s = workers.services;
    const { f, configId } = main;
    const repo = { ...f.repo, state: 'mirror' as const };
    const before = upstream.requests.length;
    await requestSyncNow(s, repo);
    const second = await waitForRuns(s, configId, 2);
    expect(second.status, second.reason ?? '').toBe('SUCCESS');
    expect(second.tagResults?.every((t) => t.status === 'unchanged')).toBe(true);
    expect(upstream.requests.slice(before).filter((r) => r.method === 'GET' && r.path.includes('/blobs/'))).toHaveLength(0);
    // Tags already here: one HEAD each tells they are unchanged, and no manifest is read.
    expect(upstream.requests.slice(before).filter((r) => r.method === 'GET' && r.path.includes('/manifests/'))).toHaveLength(0);
    expect(upstream.requests.slice(before).filter((r) => r.method === 'HEAD' && r.path.includes('/manifests/') && r.status === 200)).toHaveLength(7);

    // v1.5 disappears upstream (its manifest deleted), and the globs narrow to v1.0, v1.1, latest.
    const del = await upstream.directClient.fetch(`/v2/library/app/manifests/${filled.digestOf('v1.5')}`, { method: 'DELETE' });
    expect(del.status).toBe(202);
    await updateMirrorConfig(s, repo, { root_rule: { rule_kind: 'tag_glob_csv', rule_value: ['v1.[01]', 'latest', 'v1.5'] } });
    await requestSyncNow(s, repo);
    const third = await waitForRuns(s, configId, 3);
    expect(third.status, third.reason ?? '').toBe('SUCCESS');
    const tags = await localTags(s, f.repo.id);
    expect(Object.keys(tags).sort()).toEqual(['latest', 'v1.0', 'v1.1']);
    expect(third.tagResults?.filter((t) => t.status === 'deleted').map((t) => t.tag).sort()).toEqual(['v1.2', 'v1.3', 'v1.4', 'v1.5']);
  });

  /** Re-points every matching upstream tag at a new image, then syncs and stops the registry
   * once `finishedBeforeStop` tags have synced. */
  async function syncWithUpstreamDying(rollback: boolean) {
    const s = workers.services;
    const f = await mirrorFixture(s, rollback ? 'rollback' : 'besteffort');
    const repo = { ...f.repo, state: 'mirror' as const };
    // Twelve tags (more than the four copied at once), chosen with every kind of wildcard.
    const globs = ['v2.*', 'dev-?', 'rc[12]', 'stable', 'edge', 'nightly'];
    const cfg = await createMirror(
      s,
      f,
      mirrorBody(f, `${upstream.authority}/library/app`, {
        root_rule: { rule_kind: 'tag_glob_csv', rule_value: globs },
        external_registry_username: upstream.username,
        external_registry_password: upstream.password,
        rollback_on_failure: rollback,
      }),
    );
    const { secret } = await createSubscription(
      { db: s.db, secrets: s.secrets, policy: new UpstreamHostPolicy(['127.0.0.1']) },
      repo,
      { event: 'repo_mirror_sync_failed', method: 'webhook', config: { url: hooks.url }, title: 'failures' },
    );
    await requestSyncNow(s, repo);
    const first = await waitForRuns(s, cfg.id, 1);
    expect(first.status, first.reason ?? '').toBe('SUCCESS');
    const snapshot = await localTags(s, f.repo.id);
    expect(Object.keys(snapshot).sort()).toEqual(['dev-1', 'dev-2', 'dev-3', 'edge', 'nightly', 'rc1', 'rc2', 'stable', 'v2.0', 'v2.1', 'v2.2', 'v2.3']);

    // A new upstream release of every v2 tag, then a sync that loses the upstream mid-way.
    for (const t of Object.keys(snapshot)) await retag(upstream, 'library/app', t);
    upstream.blobDelayMs = 500;
    const hooksBefore = hooks.received.length;
    await requestSyncNow(s, repo);
    await waitFor(
      'a tag synced in the second run',
      async () => {
        const [run] = await runsOf(s, cfg.id);
        return run && run.id !== first.id && (run.tagResults ?? []).some((t) => t.status === 'synced');
      },
      60_000,
      50,
    );
    await upstream.stopRegistry();
    try {
      const failed = await waitForRuns(s, cfg.id, 2);
      expect(failed.status).toBe('FAIL');
      expect(failed.reason).toMatch(/tags failed/);
      const after = await mirrorConfigOf(s, f.repo.id);
      expect(after.syncStatus).toBe('FAIL');
      expect(after.syncRetriesRemaining).toBe(2);
      const hook = await waitFor('the failure webhook', async () => hooks.received.slice(hooksBefore).find((h) => h.headers['x-meridian-event'] === 'repo_mirror_sync_failed'), 60_000);
      expect(
        verifySignature(secret, { signature: hook.headers['x-meridian-signature'] as string, timestamp: hook.headers['x-meridian-timestamp'] as string }, hook.body),
      ).toBe(true);
      expect(verifySignature('not-the-secret', { signature: hook.headers['x-meridian-signature'] as string, timestamp: hook.headers['x-meridian-timestamp'] as string }, hook.body)).toBe(false);
      const payload = JSON.parse(hook.body.toString('utf8'));
      expect(payload).toMatchObject({ event: 'repo_mirror_sync_failed', repository: f.repo.fullName, status: 'FAIL' });
      return { s, f, snapshot, failed, tags: await localTags(s, f.repo.id) };
    } finally {
      upstream.blobDelayMs = 0;
      await upstream.startRegistry();
    }
  }

  it('an upstream dying mid-run with rollback_on_failure leaves the tags exactly as before; FAIL, reason, signed webhook', async () => {
    const { snapshot, failed, tags } = await syncWithUpstreamDying(true);
    expect(failed.reason).toMatch(/rolled back/);
    expect(tags).toEqual(snapshot);
  });

  it('an upstream dying mid-run in best-effort mode keeps the tags that finished', async () => {
    const { snapshot, failed, tags } = await syncWithUpstreamDying(false);
    const results = failed.tagResults ?? [];
    const synced = results.filter((t) => t.status === 'synced');
    const broken = results.filter((t) => t.status === 'failed');
    expect(synced.length).toBeGreaterThan(0);
    expect(broken.length).toBeGreaterThan(0);
    for (const t of synced) {
      expect(tags[t.tag]).toBe(t.digest);
      expect(tags[t.tag]).not.toBe(snapshot[t.tag]);
    }
    for (const t of broken) expect(tags[t.tag]).toBe(snapshot[t.tag]);
  });
});
