// Mirroring against a real upstream: the CNCF distribution registry with htpasswd auth, behind a
// counting proxy that speaks Docker Hub's token auth. Syncs run as they do in production: the
// outbox starts a reconcile, the reconcile creates the Temporal Schedule, sync-now triggers it,
// the sync workflow copies on the mirror task queue.
import { createServer, type Server } from 'node:http';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { requestSyncCancel, requestSyncNow, updateMirrorConfig } from '../mirror/config.ts';
import { createSubscription, verifySignature } from '../mirror/webhooks.ts';
import { UpstreamHostPolicy } from '../mirror/reference.ts';
import type { RunningWorkers } from '../workers/main.ts';
import { startTestWorkers } from './support/harness.ts';
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

const TAGS = [
  'v1.0', 'v1.1', 'v1.2', 'v1.3', 'v1.4', 'v1.5', 'latest',
  'v2.0', 'v2.1', 'v2.2', 'v2.3', 'v10', 'v1', 'beta', 'dev-1', 'dev-2', 'dev-3', 'rc1', 'rc2', 'stable', 'edge', 'nightly',
];
const MULTI_ARCH = ['v1.2', 'v1.4', 'latest', 'v2.1'];

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
    workers = await startTestWorkers({}, { MERIDIAN_MIRROR_ALLOWED_HOSTS: '127.0.0.1', MERIDIAN_MIRROR_TAG_ATTEMPTS: '2' });
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
    await requestSyncNow(s, { ...f.repo, state: 'mirror' });
    const run = await waitForRuns(s, cfg.id, 1);
    expect(run.status, run.reason ?? '').toBe('SUCCESS');
    expect(run.trigger).toBe('manual');

    const expected = ['latest', 'v1.0', 'v1.1', 'v1.2', 'v1.3', 'v1.4', 'v1.5'];
    const tags = await localTags(s, f.repo.id);
    expect(Object.keys(tags).sort()).toEqual(expected);
    for (const t of expected) expect(tags[t], t).toBe(filled.digestOf(t));
    // One GET of the layer every image shares, however many tags (and platforms) need it.
    const sharedGets = upstream.requests.slice(before).filter((r) => r.method === 'GET' && r.path.endsWith(`/blobs/${filled.sharedLayer}`));
    expect(sharedGets).toHaveLength(1);

    const after = await mirrorConfigOf(s, f.repo.id);
    expect(after.syncStatus).toBe('SUCCESS');
    expect(after.syncRetriesRemaining).toBe(3);
    expect(after.syncExpirationDate).toBeNull();
    expect(run.bytes).toBeGreaterThan(64 * 1024);
    expect(run.tagResults?.filter((t) => t.status === 'synced').map((t) => t.tag).sort()).toEqual(expected);
  });
});
