// Garbage-collection figures against a throw-away local stack (three S3 regions, Temporal, the
// workers in this process): N blob rows with a copy in each of the three locations, linked in a
// repository, most of them referenced by no manifest; one collectGarbage run (no grace period).
// Printed next to the row counts so the rates are visible: time per phase (expire manifests,
// mark, sweep = per-location deletions, finish = blob rows), history events per workflow run
// (continue-as-new bounds them), and the worker's peak RSS (sampled every 50 ms). The baseline,
// on the same rows re-seeded: the bare SQL a GC without any of the protocol would run (delete the
// unreferenced blobs' placements and rows in two statements; no storage deletes).
//
// The rows are inserted with SQL and have no objects behind them: the sweep sends its S3
// DeleteObjects requests (one per 500 copies) for keys that are already absent, so its figure is
// the protocol's and the request count's, not the storage server's delete speed.
//
//   npx tsx bench/gc.ts [--blobs 100000] [--referenced 0.1]
import { availableParallelism, loadavg } from 'node:os';
import type { WorkflowHandle } from '@temporalio/client';
import { sql } from 'drizzle-orm';
import { createUser } from '../auth/accounts.ts';
import { loadConfig } from '../config.ts';
import { collectGarbageWorkflow, type GcProgress, gcProgressQuery } from '../contract/gc.ts';
import { connectDatabase, type DbHandle } from '../db/client.ts';
import { startEphemeralStack } from '../devstack/ephemeral.ts';
import { startWorkflow } from '../platform/workflows.ts';
import { startWorkers } from '../workers/main.ts';

const arg = (name: string, dflt: number) => {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? Number(process.argv[i + 1]) : dflt;
};
const BLOBS = arg('blobs', 100_000);
const REFERENCED = arg('referenced', 0.1);
const BLOBS_PER_MANIFEST = 100;

const mib = (n: number) => `${(n / 1024 / 1024).toFixed(0)} MiB`;
const rate = (n: number, ms: number) => `${Math.round(n / (ms / 1000)).toLocaleString('en')}/s`;

/** N blobs, each placed in every location and linked in bench/app; every 1/REFERENCED-th one is
 * referenced by a tagged manifest. Everything two days old. */
async function seed(db: DbHandle, repositoryId: number): Promise<{ referenced: number }> {
  const every = Math.max(1, Math.round(1 / REFERENCED));
  await db.db.execute(sql`
    insert into blobs (digest, size, created_at)
    select 'sha256:' || encode(sha256(convert_to('bench' || g || clock_timestamp(), 'UTF8')), 'hex'), 1000 + g % 5000, now() - interval '2 days'
    from generate_series(1, ${BLOBS}) g`);
  await db.db.execute(sql`
    insert into blob_placements (blob_id, location_id, state, verified_at, created_at)
    select b.id, l.id, 'available', now() - interval '2 days', now() - interval '2 days' from blobs b cross join storage_locations l`);
  await db.db.execute(sql`
    insert into repository_blobs (repository_id, blob_id, created_at) select ${repositoryId}, b.id, now() - interval '2 days' from blobs b`);
  const referenced = await db.db.execute<{ id: number }>(sql`select id from blobs where id % ${every} = 0 order by id`);
  const manifests = Math.ceil(referenced.length / BLOBS_PER_MANIFEST);
  await db.db.execute(sql`
    insert into manifests (repository_id, digest, media_type, size, content, created_at)
    select ${repositoryId}, 'sha256:' || encode(sha256(convert_to('manifest' || g || clock_timestamp(), 'UTF8')), 'hex'),
      'application/vnd.oci.image.manifest.v1+json', 2, '\\x7b7d'::bytea, now() - interval '2 days'
    from generate_series(1, ${manifests}) g`);
  await db.db.execute(sql`
    insert into manifest_blobs (manifest_id, blob_id)
    select m.id, r.id from (select id, (row_number() over (order by id) - 1) / ${BLOBS_PER_MANIFEST} as k from blobs where id % ${every} = 0) r
    join (select id, row_number() over (order by id) - 1 as k from manifests where repository_id = ${repositoryId}) m on m.k = r.k`);
  await db.db.execute(sql`insert into tags (repository_id, name, manifest_id) select ${repositoryId}, 't' || id, id from manifests where repository_id = ${repositoryId}`);
  await db.db.execute(sql`analyze`);
  return { referenced: referenced.length };
}

async function clear(db: DbHandle): Promise<void> {
  await db.db.execute(sql`truncate tags, manifest_blobs, manifest_children, manifests, repository_blobs, blob_placements, blobs, gc_runs cascade`);
}

async function main(): Promise<void> {
  console.log(`bench: garbage collection of ${BLOBS.toLocaleString('en')} blob rows, ${Math.round((1 - REFERENCED) * 100)} % unreferenced, 3 locations`);
  const eph = await startEphemeralStack({ name: 'benchgc' });
  const config = loadConfig({ ...eph.env({ PORT: '0', LOG_LEVEL: 'error', MERIDIAN_STORAGE_PREFERENCE: 'us-east,eu-west,ap-south' }) });
  const db = connectDatabase(eph.databaseUrl, { max: 2 });
  const workers = await startWorkers(config, { control: true, mirror: false, copyLocations: ['us-east', 'eu-west', 'ap-south'] });
  let peak = 0;
  const sampler = setInterval(() => (peak = Math.max(peak, process.memoryUsage().rss)), 50);
  try {
    await db.db.transaction((tx) => createUser(tx, { username: 'bench', password: 'bench-password' }));
    const [repo] = await db.db.execute<{ id: number }>(sql`
      insert into repositories (namespace_id, name) select id, 'app' from namespaces where name = 'bench' returning id`);
    const repositoryId = Number(repo!.id);

    let t = Date.now();
    const { referenced } = await seed(db, repositoryId);
    const copies = BLOBS * 3;
    const garbage = BLOBS - referenced;
    console.log(`seeded ${BLOBS.toLocaleString('en')} blobs, ${copies.toLocaleString('en')} placements, ${referenced.toLocaleString('en')} referenced, in ${((Date.now() - t) / 1000).toFixed(1)} s`);

    const client = workers.services.temporal.client;
    const rssBefore = process.memoryUsage().rss;
    peak = rssBefore;
    t = Date.now();
    const handle = await startWorkflow(client, collectGarbageWorkflow, { workflowId: 'bench/gc', args: [{ graceSeconds: 0 }] });
    const phaseAt = new Map<string, number>();
    let last: GcProgress | null = null;
    for (;;) {
      const d = await handle.describe();
      if (d.status.name !== 'RUNNING') break;
      last = await handle.query(gcProgressQuery).catch(() => last);
      if (last && !phaseAt.has(last.phase)) phaseAt.set(last.phase, Date.now());
      await new Promise((r) => setTimeout(r, 100));
    }
    const result = await handle.result();
    const total = Date.now() - t;
    phaseAt.set('done', Date.now());
    const at = (phase: string) => phaseAt.get(phase) ?? t;
    const mark = at('sweep') - at('mark');
    const sweep = at('finish') - at('sweep');
    const finish = at('done') - at('finish');

    // Every run of the chain (continue-as-new) and its history length.
    const events: number[] = [];
    for (let runId: string | undefined = handle.firstExecutionRunId; runId; ) {
      const h: WorkflowHandle = client.workflow.getHandle('bench/gc', runId);
      const history: Awaited<ReturnType<WorkflowHandle['fetchHistory']>> = await h.fetchHistory();
      events.push(history.events?.length ?? 0);
      runId = history.events?.at(-1)?.workflowExecutionContinuedAsNewEventAttributes?.newExecutionRunId ?? undefined;
    }
    const [left] = await db.db.execute<{ blobs: number; placements: number }>(sql`
      select (select count(*)::int from blobs) as blobs, (select count(*)::int from blob_placements) as placements`);

    console.log(`collectGarbage: ${result.blobsMarked.toLocaleString('en')} of ${result.blobsScanned.toLocaleString('en')} blobs unreferenced; ` +
      `${result.reclaimedPerLocation.reduce((n, x) => n + x.blobs, 0).toLocaleString('en')} copies deleted; ${result.blobRowsDeleted.toLocaleString('en')} blob rows deleted; ` +
      `left ${left!.blobs.toLocaleString('en')} blobs, ${left!.placements.toLocaleString('en')} placements`);
    console.log(`  mark   ${(mark / 1000).toFixed(1)} s  ${rate(BLOBS, mark)} blob rows scanned (${rate(garbage, mark)} marked)`);
    console.log(`  sweep  ${(sweep / 1000).toFixed(1)} s  ${rate(garbage * 3, sweep)} copies deleted (3 locations in parallel)`);
    console.log(`  finish ${(finish / 1000).toFixed(1)} s  ${rate(garbage, finish)} blob rows deleted`);
    console.log(`  total  ${(total / 1000).toFixed(1)} s  for ${BLOBS.toLocaleString('en')} blob rows (${rate(BLOBS, total)})`);
    console.log(`  history: ${events.length} workflow runs (continue-as-new), events per run ${events.join(', ')} (max ${Math.max(...events)})`);
    console.log(`  load average during the run: ${loadavg().map((x) => x.toFixed(1)).join(', ')} (1, 5, 15 min; ${availableParallelism()} cores)`);
    console.log(`  worker peak RSS ${mib(peak)} (${mib(rssBefore)} before the run, +${mib(peak - rssBefore)})`);

    // Baseline: the same rows, deleted by two bare statements.
    await clear(db);
    await seed(db, repositoryId);
    const b0 = Date.now();
    await db.db.execute(sql`
      delete from blob_placements p using blobs b where b.id = p.blob_id and not exists (select 1 from manifest_blobs mb where mb.blob_id = b.id)`);
    await db.db.execute(sql`
      delete from blobs b where not exists (select 1 from manifest_blobs mb where mb.blob_id = b.id) and not exists (select 1 from blob_placements p where p.blob_id = b.id)`);
    const bare = Date.now() - b0;
    console.log(`baseline: bare SQL delete of the same ${garbage.toLocaleString('en')} blobs and ${(garbage * 3).toLocaleString('en')} placements: ${(bare / 1000).toFixed(1)} s; ` +
      `collectGarbage took ${(total / bare).toFixed(1)}× as long (mark + sweep: ${((mark + sweep) / bare).toFixed(1)}×)`);
  } finally {
    clearInterval(sampler);
    await workers.stop();
    await db.close();
    await eph.destroy();
  }
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
