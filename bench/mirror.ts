// Mirroring figures against a throw-away local stack: a 50-tag repository in a real distribution
// registry (htpasswd auth; 10 of the tags two-platform indexes; every image shares a base layer)
// mirrored by Meridian (all tags, sync-now → run finished), next to `skopeo sync --all` of the
// same repository to a local directory, measured in the same run on the same machine.
//
//   npx tsx bench/mirror.ts [--tags 50] [--layer-kib 1024] [--base-kib 4096] [--parallelism 4] [--no-copies]
//
// --no-copies runs no copy workers, so the mirrored blobs' replication to the other two regions
// waits instead of competing with the mirror for the machine (shows what replication costs).
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { startApi } from '../api/server.ts';
import { loadConfig } from '../config.ts';
import { startEphemeralStack } from '../devstack/ephemeral.ts';
import { requestSyncNow } from '../mirror/config.ts';
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
  const workers = await startWorkers(config, { control: true, mirror: true, copyLocations: COPIES ? ['us-east', 'eu-west', 'ap-south'] : [] });
  const skopeoDir = mkdtempSync(path.join(tmpdir(), 'meridian-bench-skopeo-'));
  try {
    const t0 = performance.now();
    await fillRepository(upstream, 'library/bench', { tags, multiArch: multi, layerSize: LAYER, sharedLayerSize: BASE });
    console.log(`upstream filled in ${((performance.now() - t0) / 1000).toFixed(1)} s`);

    // skopeo first (its own process, reading the same upstream through the same proxy).
    const s0 = performance.now();
    await run(
      'skopeo',
      ['sync', '--all', '--src', 'docker', '--dest', 'dir', '--src-tls-verify=false', '--src-creds', `${upstream.username}:${upstream.password}`, `${upstream.authority}/library/bench`, skopeoDir],
      { maxBuffer: 64 * 1024 * 1024 },
    );
    const skopeoSeconds = (performance.now() - s0) / 1000;
    const blobGetsSkopeo = upstream.count((r) => r.method === 'GET' && r.path.includes('/blobs/') && r.status === 200);

    const s = workers.services;
    const f = await mirrorFixture(s, 'bench');
    const cfg = await createMirror(
      s,
      f,
      mirrorBody(f, `${upstream.authority}/library/bench`, { external_registry_username: upstream.username, external_registry_password: upstream.password }),
    );
    // Let the reconcile create the schedule before timing.
    await new Promise((r) => setTimeout(r, 1500));
    const m0 = performance.now();
    await requestSyncNow(s, { ...f.repo, state: 'mirror' });
    const done = await waitForRuns(s, cfg.id, 1, 30 * 60_000);
    const meridianSeconds = (performance.now() - m0) / 1000;
    if (done.status !== 'SUCCESS') throw new Error(`mirror run ${done.status}: ${done.reason}`);
    const mirrored = Object.keys(await localTags(s, f.repo.id)).length;
    const blobGetsMeridian = upstream.count((r) => r.method === 'GET' && r.path.includes('/blobs/') && r.status === 200) - blobGetsSkopeo;
    const runSeconds = (done.finishedAt!.getTime() - done.startedAt.getTime()) / 1000;

    console.log('');
    console.log(`| tool | tags | wall time | MiB read | blob GETs | MiB/s |`);
    console.log(`| --- | --- | --- | --- | --- | --- |`);
    console.log(`| Meridian mirror (sync-now → run finished) | ${mirrored} | ${meridianSeconds.toFixed(1)} s (run itself ${runSeconds.toFixed(1)} s) | ${mib(done.bytes)} | ${blobGetsMeridian} | ${(done.bytes / 1024 ** 2 / meridianSeconds).toFixed(1)} |`);
    console.log(`| skopeo sync --all → dir | ${TAGS} | ${skopeoSeconds.toFixed(1)} s | — | ${blobGetsSkopeo} | — |`);
    console.log('');
    console.log(`Meridian / skopeo: ${(meridianSeconds / skopeoSeconds).toFixed(2)}×`);
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
