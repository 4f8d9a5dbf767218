// Mirroring figures against a throw-away local stack: a 50-tag repository in a real distribution
// registry (htpasswd auth; 10 of the tags two-platform indexes; every image shares a base layer)
// mirrored by Meridian (all tags, sync-now → run finished), next to `skopeo sync --all` of the
// same repository to a local directory, measured in the same run on the same machine.
//
//   npx tsx bench/mirror.ts [--tags 50] [--layer-kib 1024] [--base-kib 4096] [--parallelism 4] [--no-copies]
//
// --no-copies runs no copy workers, so the mirrored blobs' replication to the other two regions
// waits instead of competing with the mirror for the machine (shows what replication costs).
// With copies (the default) the bench also waits until every mirrored blob is held by every
// region and prints how long after the run that was, and what Temporal ran for it (workflows and
// activities by type). For a CPU profile of the whole process (API, workers, copies):
//   node --cpu-prof --cpu-prof-dir=/tmp/prof --import tsx bench/mirror.ts
import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { sql } from 'drizzle-orm';
import { startApi } from '../api/server.ts';
import { loadConfig } from '../config.ts';
import { startEphemeralStack } from '../devstack/ephemeral.ts';
import { requestSyncNow } from '../mirror/config.ts';
import type { Services } from '../platform/services.ts';
import { startWorkers } from '../workers/main.ts';
import { createMirror, localTags, mirrorBody, mirrorFixture, waitForRuns } from '../test/support/mirror-helpers.ts';
import { fillRepository, startUpstreamRegistry } from '../test/support/upstream-registry.ts';

const run = promisify(execFile);
const arg = (name: string, dflt: number) => {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? Number(process.argv[i + 1]) : dflt;
};
const TAGS = arg('tags', 50);
const LAYER = arg('layer-kib', 1024) * 1024;
const BASE = arg('base-kib', 4096) * 1024;
const PARALLELISM = arg('parallelism', 4);
const COPIES = !process.argv.includes('--no-copies');

const mib = (bytes: number) => (bytes / 1024 ** 2).toFixed(1);
const REGIONS = ['us-east', 'eu-west', 'ap-south'];

/** CPU seconds the whole machine has spent busy (every process: Meridian, Temporal, PostgreSQL,
 * the S3 server, the upstream registry, skopeo). On a 2-core machine the mirror is CPU-bound, so
 * this explains a wall-time ratio better than the wall time does. */
function machineBusySeconds(): number {
  const [, ...ticks] = readFileSync('/proc/stat', 'utf8').split('\n')[0]!.trim().split(/\s+/).map(Number);
  // user nice system idle iowait irq softirq steal: busy is everything but idle and iowait.
  const busy = ticks.slice(0, 8).reduce((a, b) => a + b, 0) - ticks[3]! - ticks[4]!;
  return busy / 100;
}

/** Blobs of the repository not yet held (available) by every region. */
async function unreplicated(s: Services, repositoryId: number): Promise<number> {
  const [row] = await s.db.execute<{ n: number }>(sql`
    select count(*)::int as n from repository_blobs rb
    where rb.repository_id = ${repositoryId}
      and (select count(*) from blob_placements p where p.blob_id = rb.blob_id and p.state = 'available') < ${REGIONS.length}`);
  return row?.n ?? 0;
}

interface TemporalWork {
  workflows: Record<string, number>;
  activities: Record<string, number>;
  /** Mean seconds per phase of the activities, by type: queued (schedule to start) and running. */
  phases: Record<string, { queued: number; running: number; n: number }>;
  /** Mean seconds a replicateBlob workflow ran (start to close), and its workflow tasks. */
  replicate: { seconds: number; workflowTasks: number; n: number };
}

/** Workflows Temporal ran since `since`, by type, the activities they scheduled, and where their
 * time went. */
async function temporalWork(s: Services, since: Date): Promise<TemporalWork> {
  const work: TemporalWork = { workflows: {}, activities: {}, phases: {}, replicate: { seconds: 0, workflowTasks: 0, n: 0 } };
  const client = s.temporal.client;
  const secs = (t: { seconds?: unknown; nanos?: number | null } | null | undefined) => Number(t?.seconds ?? 0) + (t?.nanos ?? 0) / 1e9;
  for await (const w of client.workflow.list({ query: `StartTime >= "${since.toISOString()}"` })) {
    work.workflows[w.type] = (work.workflows[w.type] ?? 0) + 1;
    const events = (await client.workflow.getHandle(w.workflowId, w.runId).fetchHistory()).events ?? [];
    const scheduled = new Map<number, { name: string; at: number }>();
    const started = new Map<number, number>();
    for (const e of events) {
      const id = Number(e.eventId);
      const at = secs(e.eventTime);
      const sched = e.activityTaskScheduledEventAttributes;
      if (sched?.activityType?.name) {
        work.activities[sched.activityType.name] = (work.activities[sched.activityType.name] ?? 0) + 1;
        scheduled.set(id, { name: sched.activityType.name, at });
      }
      if (e.activityTaskStartedEventAttributes) started.set(Number(e.activityTaskStartedEventAttributes.scheduledEventId), at);
      const done = e.activityTaskCompletedEventAttributes ?? e.activityTaskFailedEventAttributes;
      if (done) {
        const sid = Number(done.scheduledEventId);
        const sc = scheduled.get(sid);
        const st = started.get(sid);
        if (sc && st !== undefined) {
          const ph = (work.phases[sc.name] ??= { queued: 0, running: 0, n: 0 });
          ph.queued += st - sc.at;
          ph.running += at - st;
          ph.n++;
        }
      }
    }
    if (w.type === 'replicateBlob' && events.length > 1) {
      work.replicate.seconds += secs(events.at(-1)!.eventTime) - secs(events[0]!.eventTime);
      work.replicate.workflowTasks += events.filter((e) => e.workflowTaskCompletedEventAttributes).length;
      work.replicate.n++;
    }
  }
  return work;
}

/** Requests by kind, e.g. "GET manifest 60, HEAD blob 3". */
function requestKinds(requests: { method: string; path: string; status: number }[]): string {
  const kinds: Record<string, number> = {};
  for (const r of requests) {
    const what = r.path.includes('/blobs/') ? 'blob' : r.path.includes('/manifests/') ? 'manifest' : r.path.endsWith('/tags/list') ? 'tags' : r.path === '/v2/' ? 'ping' : r.path;
    const key = `${r.method} ${what}${r.status === 200 || r.status === 0 ? '' : ` ${r.status}`}`;
    kinds[key] = (kinds[key] ?? 0) + 1;
  }
  return `${requests.length} (${Object.entries(kinds).sort().map(([k, v]) => `${k} ${v}`).join(', ')})`;
}

async function main(): Promise<void> {
  const tags = Array.from({ length: TAGS }, (_, i) => `v1.${i}`);
  const multi = tags.filter((_, i) => i % 5 === 0);
  console.log(`bench: mirror ${TAGS} tags (${multi.length} two-platform indexes), ${mib(BASE)} MiB shared base layer + ${mib(LAYER)} MiB per image; tag parallelism ${PARALLELISM}${COPIES ? '' : ', replication copies not running'}`);
  const upstream = await startUpstreamRegistry();
  const eph = await startEphemeralStack({ name: 'benchmirror' });
  const config = loadConfig(
    eph.env({
      PORT: '0',
      LOG_LEVEL: 'error',
      MERIDIAN_STORAGE_PREFERENCE: 'us-east,eu-west,ap-south',
      MERIDIAN_MIRROR_ALLOWED_HOSTS: '127.0.0.1',
      MERIDIAN_MIRROR_TAG_PARALLELISM: String(PARALLELISM),
    }),
  );
  const api = await startApi(config);
  // The mirror worker and the control worker; copies to the other regions run too, as in production.
  const workers = await startWorkers(config, { control: true, mirror: true, copyLocations: COPIES ? REGIONS : [] });
  const skopeoDir = mkdtempSync(path.join(tmpdir(), 'meridian-bench-skopeo-'));
  try {
    const t0 = performance.now();
    await fillRepository(upstream, 'library/bench', { tags, multiArch: multi, layerSize: LAYER, sharedLayerSize: BASE });
    console.log(`upstream filled in ${((performance.now() - t0) / 1000).toFixed(1)} s`);

    // skopeo first (its own process, reading the same upstream through the same proxy).
    const s0 = performance.now();
    const skopeoCpu0 = machineBusySeconds();
    await run(
      'skopeo',
      ['sync', '--all', '--src', 'docker', '--dest', 'dir', '--src-tls-verify=false', '--src-creds', `${upstream.username}:${upstream.password}`, `${upstream.authority}/library/bench`, skopeoDir],
      { maxBuffer: 64 * 1024 * 1024 },
    );
    const skopeoSeconds = (performance.now() - s0) / 1000;
    const skopeoCpu = machineBusySeconds() - skopeoCpu0;
    const blobGetsSkopeo = upstream.count((r) => r.method === 'GET' && r.path.includes('/blobs/') && r.status === 200);
    const skopeoRequests = upstream.requests.length;

    const s = workers.services;
    const f = await mirrorFixture(s, 'bench');
    const cfg = await createMirror(
      s,
      f,
      mirrorBody(f, `${upstream.authority}/library/bench`, { external_registry_username: upstream.username, external_registry_password: upstream.password }),
    );
    // Let the reconcile create the schedule before timing.
    await new Promise((r) => setTimeout(r, 1500));
    const startedAt = new Date();
    const m0 = performance.now();
    const meridianCpu0 = machineBusySeconds();
    await requestSyncNow(s, { ...f.repo, state: 'mirror' });
    const done = await waitForRuns(s, cfg.id, 1, 30 * 60_000);
    const meridianSeconds = (performance.now() - m0) / 1000;
    const meridianCpu = machineBusySeconds() - meridianCpu0;
    if (done.status !== 'SUCCESS') throw new Error(`mirror run ${done.status}: ${done.reason}`);
    const mirrored = Object.keys(await localTags(s, f.repo.id)).length;
    const blobGetsMeridian = upstream.count((r) => r.method === 'GET' && r.path.includes('/blobs/') && r.status === 200) - blobGetsSkopeo;
    const meridianRequests = upstream.requests.slice(skopeoRequests);
    const runSeconds = (done.finishedAt!.getTime() - done.startedAt.getTime()) / 1000;
    const perTag = (done.tagResults ?? []).length ? (runSeconds / done.tagResults!.length).toFixed(2) : '?';

    // Replication of what the run wrote: every blob held by every region, verified.
    let replicatedSeconds: number | undefined;
    if (COPIES) {
      await new Promise<void>((resolve, reject) => {
        const deadline = Date.now() + 30 * 60_000;
        const poll = async () => {
          if ((await unreplicated(s, f.repo.id)) === 0) return resolve();
          if (Date.now() > deadline) return reject(new Error('replication did not finish within 30 minutes'));
          setTimeout(() => void poll().catch(reject), 200);
        };
        void poll().catch(reject);
      });
      replicatedSeconds = (performance.now() - m0) / 1000;
    }
    const work = await temporalWork(s, startedAt);
    const [relay] = await s.db.execute<{ n: number; mean: number; max: number }>(sql`
      select count(*)::int as n, avg(extract(epoch from delivered_at - created_at))::float8 as mean,
        max(extract(epoch from delivered_at - created_at))::float8 as max
      from outbox where created_at >= ${startedAt.toISOString()} and delivered_at is not null`);

    console.log('');
    console.log(`| tool | tags | wall time | MiB read | blob GETs | MiB/s |`);
    console.log(`| --- | --- | --- | --- | --- | --- |`);
    console.log(`| Meridian mirror (sync-now → run finished) | ${mirrored} | ${meridianSeconds.toFixed(1)} s (run itself ${runSeconds.toFixed(1)} s) | ${mib(done.bytes)} | ${blobGetsMeridian} | ${(done.bytes / 1024 ** 2 / meridianSeconds).toFixed(1)} |`);
    console.log(`| skopeo sync --all → dir | ${TAGS} | ${skopeoSeconds.toFixed(1)} s | — | ${blobGetsSkopeo} | — |`);
    console.log('');
    console.log(`Meridian / skopeo: ${(meridianSeconds / skopeoSeconds).toFixed(2)}×`);
    console.log(`machine CPU busy during each (all processes, upstream included): Meridian ${meridianCpu.toFixed(1)} CPU-s, skopeo ${skopeoCpu.toFixed(1)} CPU-s`);
    // The upstream checks a bcrypt password on every authenticated request, so requests cost it CPU.
    console.log(`upstream requests: skopeo ${requestKinds(upstream.requests.slice(0, skopeoRequests))}; Meridian ${requestKinds(meridianRequests)}`);
    console.log(`run: ${runSeconds.toFixed(1)} s for ${done.tagResults?.length ?? '?'} tags, ${perTag} s per tag (tag parallelism ${PARALLELISM})`);
    if (replicatedSeconds !== undefined) {
      console.log(`replication finished (every mirrored blob in all ${REGIONS.length} regions): ${replicatedSeconds.toFixed(1)} s after sync-now, ${(replicatedSeconds - meridianSeconds).toFixed(1)} s after the run`);
    } else {
      console.log(`replication: not run (--no-copies)`);
    }
    const fmt = (r: Record<string, number>) => Object.entries(r).sort().map(([k, v]) => `${k} ${v}`).join(', ');
    console.log(`Temporal workflows started: ${fmt(work.workflows)}`);
    console.log(`outbox: ${relay?.n} intents, commit to workflow start mean ${relay?.mean?.toFixed(3)} s, max ${relay?.max?.toFixed(3)} s`);
    console.log(`Temporal activities scheduled: ${fmt(work.activities)}`);
    for (const [name, ph] of Object.entries(work.phases).sort()) {
      console.log(`  ${name}: mean ${(ph.queued / ph.n).toFixed(3)} s queued, ${(ph.running / ph.n).toFixed(3)} s running (${ph.n})`);
    }
    const rep = work.replicate;
    if (rep.n) console.log(`replicateBlob: mean ${(rep.seconds / rep.n).toFixed(2)} s start to close, ${(rep.workflowTasks / rep.n).toFixed(1)} workflow tasks (${rep.n} workflows)`);
  } finally {
    rmSync(skopeoDir, { recursive: true, force: true });
    await workers.stop();
    await api.close();
    await eph.destroy();
    await upstream.close();
  }
}

main().then(
  () => process.exit(0),
  (e: unknown) => {
    console.error(`bench failed: ${(e as Error).message}`);
    process.exit(1);
  },
);
