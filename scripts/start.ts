// `npm start`: the whole system on one machine. Starts the Temporal dev server (with its UI) — or,
// with MERIDIAN_TEMPORAL=server, the real Temporal server (PostgreSQL, mutual TLS) and the UI
// server — one S3 server per simulated region, registers the regions as storage locations, runs
// `meridian temporal setup`, bundles the workflows once, then starts the registry API and the
// workers (a control worker, and a copy worker per region as a real multi-region deployment would
// run them). Ctrl-C or SIGTERM stops everything it started; data stays in .data/.
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { ConfigError, loadConfig } from '../config.ts';
import { connectDatabase } from '../db/client.ts';
import { applyMigrations } from '../db/migrate.ts';
import { entryCommand, RUNNING_COMPILED, type EntryPoint } from '../devstack/entrypoints.ts';
import { canConnect } from '../devstack/ports.ts';
import { ManagedProcess } from '../devstack/process.ts';
import { s3Endpoint } from '../devstack/s3.ts';
import { assertPortsFree, devRegions, registerDevLocations, startLocalStack, type LocalStack } from '../devstack/stack.ts';
import { consecutivePorts, devServerTlsEnv } from '../devstack/temporal-server.ts';
import { DATA_DIR } from '../devstack/tools.ts';
import { fatal } from '../platform/main.ts';
import { bundleFileId, DEFAULT_BUNDLE_PATH, writeWorkflowBundle } from '../workers/bundle.ts';
import { setupTemporal } from '../workers/temporal-setup.ts';

/** Keys for secrets at rest and token signing, generated on first start and kept with the data. */
function loadOrCreateDevKeys(): Record<string, string> {
  const file = path.join(DATA_DIR, 'keys.env');
  if (!existsSync(file)) {
    mkdirSync(DATA_DIR, { recursive: true });
    const lines = [
      `MERIDIAN_SECRET_KEY=${randomBytes(32).toString('base64')}`,
      `MERIDIAN_TOKEN_KEY=${randomBytes(32).toString('base64')}`,
    ];
    writeFileSync(file, lines.join('\n') + '\n', { mode: 0o600 });
  }
  const keys: Record<string, string> = {};
  for (const line of readFileSync(file, 'utf8').split('\n')) {
    const m = /^([A-Z_]+)=(.+)$/.exec(line);
    if (m && process.env[m[1]!] === undefined) keys[m[1]!] = m[2]!;
  }
  return keys;
}

async function prebuiltWorkflowBundle(): Promise<{ path: string; id: string; bytes: number }> {
  return { path: DEFAULT_BUNDLE_PATH, id: bundleFileId(DEFAULT_BUNDLE_PATH), bytes: statSync(DEFAULT_BUNDLE_PATH).size };
}

/** V8 flags for every Meridian process started here: a 4 MB young-generation semi-space instead
 * of V8's up-to-16 MB, which a process otherwise keeps resident after its first busy minute
 * (~20-25 MB per process; bench/stack-rss.ts prints the whole system's memory). */
const NODE_FLAGS = ['--max-semi-space-size=4'];

function nodeProcess(name: string, entry: EntryPoint, args: string[], env: Record<string, string>, ready: () => Promise<boolean>): ManagedProcess {
  // Compiled (dist/, plain node) when this launcher runs compiled, as `npm start` runs it.
  const { command, args: entryArgs, cwd } = entryCommand(entry, args);
  return new ManagedProcess({
    name,
    command,
    args: [...NODE_FLAGS, ...entryArgs],
    env,
    cwd,
    logFile: path.join(DATA_DIR, 'logs', `${name}.log`),
    readyTimeoutMs: 120_000,
    ready,
  });
}

/** `dev`: the Temporal CLI's dev server (SQLite); `server`: the real server (PostgreSQL, mutual TLS). */
function temporalKind(): 'dev' | 'server' {
  const v = process.env.MERIDIAN_TEMPORAL || 'dev';
  if (v !== 'dev' && v !== 'server') throw new ConfigError('MERIDIAN_TEMPORAL', `expected dev or server, got "${v}"`);
  return v;
}

async function main(): Promise<void> {
  const keys = loadOrCreateDevKeys();
  Object.assign(process.env, keys);
  const kind = temporalKind();
  // The real server admits clients with a certificate from setup.sh's CA: every process we start
  // (and `temporal setup` below) gets the TLS settings.
  const tlsEnv: Record<string, string> = kind === 'server' ? devServerTlsEnv() : {};
  Object.assign(process.env, tlsEnv);
  const config = loadConfig();
  const temporalPort = Number(config.temporal.address.split(':').pop());
  const uiPort = Number(process.env.TEMPORAL_UI_PORT ?? temporalPort + 1000);
  const s3BasePort = Number(process.env.MERIDIAN_DEV_S3_BASE_PORT ?? 9001);
  const regions = devRegions(s3BasePort);
  const serverPorts = consecutivePorts(temporalPort);
  // The SDK metrics of each worker process: PORT+10 (control), PORT+11… (copy workers).
  const workerMetricsPort = (i: number) => config.port + 10 + i;
  await assertPortsFree([
    { port: config.port, what: 'registry API', variable: 'PORT' },
    ...(kind === 'server'
      ? Object.entries(serverPorts).map(([what, port]) => ({ port, what: `Temporal server ${what}`, variable: 'TEMPORAL_ADDRESS' }))
      : [{ port: temporalPort, what: 'Temporal gRPC', variable: 'TEMPORAL_ADDRESS' }]),
    { port: uiPort, what: 'Temporal UI', variable: 'TEMPORAL_UI_PORT' },
    ...regions.map((r) => ({ port: r.port, what: `S3 server ${r.name}`, variable: 'MERIDIAN_DEV_S3_BASE_PORT' })),
    ...[0, ...regions.map((_, i) => i + 1)].map((i) => ({ port: workerMetricsPort(i), what: 'worker metrics', variable: 'PORT' })),
  ]);

  const logDir = path.join(DATA_DIR, 'logs');
  console.log(
    `meridian: starting ${kind === 'server' ? 'the Temporal server (PostgreSQL, mutual TLS)' : 'the Temporal dev server'} and ${regions.length} S3 regions (logs in ${path.relative(process.cwd(), logDir) || '.'})`,
  );
  const temporalDb = `${new URL(config.databaseUrl).pathname.slice(1)}_temporal`;
  // Compiled, `npm run build` has bundled the workflows already (and bundling here would keep
  // webpack's memory in this process for as long as the stack runs).
  const bundling = RUNNING_COMPILED ? prebuiltWorkflowBundle() : writeWorkflowBundle(path.join(DATA_DIR, 'workflow-bundle.js'));
  bundling.catch(() => {});
  const stack: LocalStack = await startLocalStack({
    dataDir: DATA_DIR,
    logDir,
    temporalPort,
    temporalUiPort: uiPort,
    regions,
    credentials: config.devS3,
    ...(kind === 'server' ? { realTemporal: { ports: serverPorts, postgresUrl: config.databaseUrl, databasePrefix: temporalDb } } : {}),
  });
  const children: ManagedProcess[] = [];
  let stopping = false;
  const stopAll = async (code: number) => {
    if (stopping) return;
    stopping = true;
    console.log('\nmeridian: stopping');
    await Promise.allSettled(children.map((c) => c.stop()));
    await stack.stop();
    console.log('meridian: stopped; data kept in .data/');
    process.exit(code);
  };
  process.on('SIGINT', () => void stopAll(0));
  process.on('SIGTERM', () => void stopAll(0));
  // If whoever started us goes away without a signal reaching us (a killed `npm`), stop too
  // rather than leave servers behind.
  const parent = process.ppid;
  setInterval(() => {
    if (process.ppid !== parent) void stopAll(0);
  }, 1000).unref();

  try {
    await applyMigrations(config.databaseUrl);
    const database = connectDatabase(config.databaseUrl, { max: 2, applicationName: 'meridian-start' });
    try {
      await registerDevLocations(database.db, regions);
    } finally {
      await database.close();
    }
    // The deploy step: namespace, search attributes, every schedule Meridian owns.
    await setupTemporal(config, { retentionDays: 7, log: (line) => console.log(`meridian: temporal setup: ${line}`) });
    const bundle = await bundling;
    console.log(`meridian: workflow bundle ${bundle.id} (${Math.round(bundle.bytes / 1024)} KiB)`);
    const { bootstrapAdmin } = await import('./bootstrap.ts');
    const admin = await bootstrapAdmin(config);
    // Said at once: if a later step fails, the generated password is not lost.
    if (admin.generatedPassword) console.log(`meridian: created superuser admin with password ${admin.generatedPassword} (shown once)`);

    const env = {
      ...keys,
      ...tlsEnv,
      MERIDIAN_DEV_S3_ACCESS_KEY: config.devS3.accessKeyId,
      MERIDIAN_DEV_S3_SECRET_KEY: config.devS3.secretAccessKey,
      MERIDIAN_WORKFLOW_BUNDLE: bundle.path,
    };
    const metricsEnv = (i: number) => ({ MERIDIAN_WORKER_METRICS_ADDRESS: `127.0.0.1:${workerMetricsPort(i)}` });
    const workerLog = (name: string) => async () => readFileSync(path.join(logDir, `${name}.log`), 'utf8').includes('workers running');
    const control = nodeProcess('worker-control', 'workers/main', ['--control', '--mirror'], { ...env, ...metricsEnv(0) }, workerLog('worker-control'));
    const copyWorkers = regions.map((r, i) =>
      nodeProcess(
        `worker-copy-${r.name}`,
        'workers/main',
        ['--copy', r.name],
        { ...env, ...metricsEnv(i + 1), MERIDIAN_INSTANCE_NAME: r.name },
        workerLog(`worker-copy-${r.name}`),
      ),
    );
    const api = nodeProcess('api', 'api/main', [], env, () => canConnect(config.port, config.host === '0.0.0.0' ? '127.0.0.1' : config.host));
    children.push(api, control, ...copyWorkers);
    for (const c of children) c.onUnexpectedExit((code) => {
      if (!stopping) console.error(`meridian: ${c.spec.name} exited unexpectedly (code ${code}); see ${c.spec.logFile}`);
    });
    await Promise.all(children.map((c) => c.start()));

    console.log(`
Meridian is running.

  Registry API      ${config.publicUrl}   (docker login ${config.publicUrl.replace(/^https?:\/\//, '')})
  Health            ${config.publicUrl}/health/endtoend
  Temporal UI       http://127.0.0.1:${uiPort}
  Temporal gRPC     ${config.temporal.address}  (namespace ${config.temporal.namespace}${kind === 'server' ? `; mutual TLS, certificates in .tools/tls; PostgreSQL databases ${temporalDb}, ${temporalDb}_visibility` : '; dev server'})
  Worker metrics    ${[0, ...regions.map((_, i) => i + 1)].map((i) => `http://127.0.0.1:${workerMetricsPort(i)}/metrics`).join(' ')}
${regions.map((r) => `  S3 ${r.name.padEnd(14)} ${s3Endpoint(r.port)}  bucket meridian`).join('\n')}
  S3 credentials    access key ${config.devS3.accessKeyId} / secret key ${config.devS3.secretAccessKey}
  Superuser         admin${admin.generatedPassword ? ` / password ${admin.generatedPassword}  (generated; shown once)` : ' (password from MERIDIAN_ADMIN_PASSWORD or set earlier)'}
  Logs              ${path.relative(process.cwd(), logDir)}/

Press Ctrl-C to stop.`);
  } catch (e) {
    if (e instanceof ConfigError) {
      console.error(`meridian: ${e.message}`);
      await stopAll(2);
      return;
    }
    console.error(`meridian: start-up failed: ${(e as Error).message}`);
    await stopAll(1);
  }
}

main().catch((e: unknown) => {
  if (e instanceof ConfigError) fatal(e.message);
  if ((e as Error).name === 'PortInUseError') fatal((e as Error).message);
  fatal(`start-up failed: ${(e as Error).message}`, 1);
});
