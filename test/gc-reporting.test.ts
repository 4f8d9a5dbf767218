// Garbage collection's per-namespace grace period (Quay's time machine per namespace), its dry
// run over every manifest, and what it reports: GET /api/v1/gc/summary and /runs, and the
// Prometheus metrics on /metrics (last run, reclaimable, reclaimed per location).
import { randomBytes } from 'node:crypto';
import { sql } from 'drizzle-orm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createUser } from '../auth/accounts.ts';
import type { RunningWorkers } from '../workers/main.ts';
import { gcApi, makeImage, pushImage, waitEverywhere } from './support/gc-helpers.ts';
import { waitFor } from './support/mirror-helpers.ts';
import { basic, createTestUser, stackInfo, startTestApi, startTestWorkers, testDatabase } from './support/harness.ts';
import { OciClient, sha256 } from './support/oci-client.ts';

interface Summary {
  lastRun: { outcome: string; finishedAt: string; report: { reclaimedPerLocation: { location: string; blobs: number; bytes: number }[] } } | null;
  lastDryRun: { outcome: string; report: { manifestsDeleted: number } } | null;
  reclaimable: { location: string; blobs: number; bytes: number }[];
  pending: { location: string; bytes: number }[];
  reclaimed: { location: string; blobs: number; bytes: number }[];
}

describe('garbage collection: namespace grace, dry runs, metrics', () => {
  const database = testDatabase();
  let api: Awaited<ReturnType<typeof startTestApi>>;
  let workers: RunningWorkers;
  const root = `root-${randomBytes(3).toString('hex')}`;
  const rootPassword = `pw-${randomBytes(8).toString('hex')}`;
  const regions = stackInfo().regions.map((r) => r.name).sort();

  beforeAll(async () => {
    api = await startTestApi({ MERIDIAN_SUPERUSERS: root });
    await api.services.db.transaction((tx) => createUser(tx, { username: root, password: rootPassword }));
    workers = await startTestWorkers({ control: true, mirror: false });
  });
  afterAll(async () => {
    await workers?.stop();
    await api?.close();
    await database.close();
  });

  const asRoot = (path: string, init: RequestInit = {}) =>
    fetch(`${api.url}${path}`, { ...init, headers: { Authorization: basic(root, rootPassword), 'Content-Type': 'application/json' } });

  async function runGc(body: Record<string, unknown>): Promise<void> {
    const gc = gcApi(api.url, root, rootPassword);
    await gc.start(body);
    const done = await gc.until('the run to finish', (s) => s.status !== 'RUNNING', 90_000);
    expect(done.status).toBe('COMPLETED');
  }

  it("keeps a namespace's untagged manifests for its own grace period, even against --grace 0", async () => {
    const keeper = await createTestUser('gckeep');
    const other = await createTestUser('gcother');
    const keeperClient = new OciClient({ baseUrl: api.url, authorization: keeper.authorization });
    const otherClient = new OciClient({ baseUrl: api.url, authorization: other.authorization });
    const kept = makeImage(`${keeper.username}/app`, 'v1');
    const dropped = makeImage(`${other.username}/app`, 'v1');
    await pushImage(keeperClient, kept);
    await pushImage(otherClient, dropped);
    await waitEverywhere(database, [...kept.blobs, ...dropped.blobs].map(sha256), regions.length);
    const manifestDigest = (m: Buffer) => sha256(m);

    // Namespace admins set it; others may not; bad values are refused.
    const put = (client: OciClient, ns: string, body: unknown) =>
      client.fetch(`/api/v1/namespace/${ns}/gc`, { method: 'PUT', body: JSON.stringify(body), headers: { 'Content-Type': 'application/json' } });
    expect((await put(otherClient, keeper.username, { grace_seconds: 0 })).status).toBe(403);
    const bad = await put(keeperClient, keeper.username, { grace_seconds: -5 });
    expect(bad.status).toBe(400);
    expect(await bad.text()).toContain('grace_seconds must be a number of seconds from 0 to 31536000');
    expect((await put(keeperClient, keeper.username, { grace_seconds: 'soon' })).status).toBe(400);
    const set = await put(keeperClient, keeper.username, { grace_seconds: 7 * 86400 });
    expect(set.status).toBe(200);
    expect(await set.json()).toEqual({ namespace: keeper.username, grace_seconds: 7 * 86400 });
    expect(await (await keeperClient.fetch(`/api/v1/namespace/${keeper.username}/gc`)).json()).toEqual({ namespace: keeper.username, grace_seconds: 604800 });
    expect((await asRoot('/api/v1/namespace/no-such-namespace-x/gc', { method: 'PUT', body: '{"grace_seconds": null}' })).status).toBe(404);

    for (const [client, img] of [
      [keeperClient, kept],
      [otherClient, dropped],
    ] as const) {
      expect((await client.fetch(`/v2/${img.repo}/manifests/${img.tag}`, { method: 'DELETE' })).status).toBe(202);
    }
    await runGc({ grace_seconds: 0 });
    const byDigest = (client: OciClient, img: typeof kept) =>
      client.fetch(`/v2/${img.repo}/manifests/${manifestDigest(img.manifest)}`, { headers: { Accept: img.mediaType } });
    expect((await byDigest(keeperClient, kept)).status).toBe(200);
    expect((await byDigest(otherClient, dropped)).status).toBe(404);
    for (const b of kept.blobs) expect((await keeperClient.pullBlob(kept.repo, sha256(b))).body.equals(b)).toBe(true);
    for (const b of dropped.blobs) expect((await otherClient.pullBlob(dropped.repo, sha256(b))).status).toBe(404);

    // Back to the default (null), the same run deletes it.
    expect((await put(keeperClient, keeper.username, { grace_seconds: null })).status).toBe(200);
    await runGc({ grace_seconds: 0 });
    expect((await byDigest(keeperClient, kept)).status).toBe(404);
    for (const b of kept.blobs) expect((await keeperClient.pullBlob(kept.repo, sha256(b))).status).toBe(404);
  });

  it('dry-runs over every expired manifest, and reports runs through the API and /metrics', async () => {
    const user = await createTestUser('gcreport');
    const client = new OciClient({ baseUrl: api.url, authorization: user.authorization });
    const img = makeImage(`${user.username}/app`, 'v1', 50_000);
    await pushImage(client, img);
    await waitEverywhere(database, img.blobs.map(sha256), regions.length);
    // 1,200 untagged manifests from a day ago, straight into the table: more than one page.
    const [repo] = await database.db.execute<{ id: number }>(sql`
      select r.id from repositories r join namespaces n on n.id = r.namespace_id where n.name = ${user.username} and r.name = 'app'`);
    await database.db.execute(sql`
      insert into manifests (repository_id, digest, media_type, size, content, created_at)
      select ${repo!.id}, 'sha256:' || encode(sha256(convert_to('m' || g, 'UTF8')), 'hex'), 'application/vnd.oci.image.manifest.v1+json', 2, '\\x7b7d'::bytea, now() - interval '1 day'
      from generate_series(1, 1200) g`);
    expect((await client.fetch(`/v2/${img.repo}/manifests/${img.tag}`, { method: 'DELETE' })).status).toBe(202);

    const gc = gcApi(api.url, root, rootPassword);
    await gc.start({ dry_run: true, grace_seconds: 0 });
    await waitFor('the dry run to finish', async () => (await gc.status(true)).status !== 'RUNNING', 90_000, 250);
    const dryReport = await (await asRoot('/api/v1/gc?dry_run=true')).json() as { status: string; progress: { manifestsDeleted: number; markedPerLocation: { location: string; bytes: number }[] } };
    expect(dryReport.status).toBe('COMPLETED');
    expect(dryReport.progress.manifestsDeleted).toBe(1201);
    const size = img.blobs.reduce((n, b) => n + b.length, 0);
    expect(dryReport.progress.markedPerLocation.map((t) => [t.location, t.bytes]).sort()).toEqual(regions.map((r) => [r, size]));
    const [{ n } = { n: 0 }] = await database.db.execute<{ n: number }>(sql`select count(*)::int as n from manifests where repository_id = ${repo!.id}`);
    expect(n).toBe(1201);

    await runGc({ grace_seconds: 0 });
    const summary = (await (await asRoot('/api/v1/gc/summary')).json()) as Summary;
    expect(summary.lastRun?.outcome).toBe('completed');
    expect(summary.lastDryRun?.report.manifestsDeleted).toBe(1201);
    expect(summary.reclaimable.map((t) => [t.location, t.bytes]).sort()).toEqual(regions.map((r) => [r, size]));
    expect(summary.pending).toEqual([]);
    // Every run in this file so far is recorded, the newest first.
    const runs = (await (await asRoot('/api/v1/gc/runs?dry_run=false&limit=10')).json()) as { runs: { outcome: string }[] };
    expect(runs.runs.map((r) => r.outcome)).toEqual(['completed', 'completed', 'completed']);
    expect((await asRoot('/api/v1/gc/runs?limit=0')).status).toBe(400);
    expect((await client.fetch('/api/v1/gc/summary')).status).toBe(403);

    const metrics = await (await fetch(`${api.url}/metrics`)).text();
    const value = (name: string, labels: string) => {
      const line = metrics.split('\n').find((l) => l.startsWith(`${name}{${labels}}`));
      return line === undefined ? undefined : Number(line.split(' ').at(-1));
    };
    const finished = Date.parse(summary.lastRun!.finishedAt) / 1000;
    expect(value('meridian_gc_last_run_timestamp_seconds', 'dry_run="false"')).toBeCloseTo(finished, 0);
    expect(value('meridian_gc_last_run_success', 'dry_run="false",outcome="completed"')).toBe(1);
    expect(value('meridian_gc_last_run_success', 'dry_run="true",outcome="completed"')).toBe(1);
    for (const r of regions) {
      expect(value('meridian_gc_reclaimable_bytes', `location="${r}"`)).toBe(size);
      const total = summary.reclaimed.find((t) => t.location === r)!;
      expect(value('meridian_gc_reclaimed_bytes_total', `location="${r}"`)).toBe(total.bytes);
      expect(value('meridian_gc_reclaimed_copies_total', `location="${r}"`)).toBe(total.blobs);
      // This run's two blobs, plus the first test's.
      expect(total.bytes).toBeGreaterThanOrEqual(size);
    }
  });
});
