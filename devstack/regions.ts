// The multi-region topology (issue 9), as Quay's reference architecture deploys it, on one
// machine: each region a network namespace holding its S3 server, one API instance with that
// region's storage preference and its copy worker; a shared core (PostgreSQL, Redis, Temporal)
// in us-east; every path between regions, and from a region to the core, through a WAN relay with
// the link's latency and bandwidth (regions-wan.ts). `npm run start:regions`, the topology tests
// and bench/regions.ts all start it through startRegionTopology.
import { randomBytes } from 'node:crypto';
import { chmodSync, existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { loadConfig } from '../config.ts';
import { connectDatabase } from '../db/client.ts';
import { applyMigrations, ensureDatabase } from '../db/migrate.ts';
import { storageLocations } from '../db/schema.ts';
import { DEV_CREDENTIALS_REF } from '../storage/locations.ts';
import { S3Driver } from '../storage/s3.ts';
import { bundleWorkflows } from '../workers/bundle.ts';
import { setupTemporal } from '../workers/temporal-setup.ts';
import { entryCommand } from './entrypoints.ts';
import { canConnect, freePort } from './ports.ts';
import { ManagedProcess } from './process.ts';
import { VERSITYGW_FLAGS } from './s3.ts';
import { postgresServer, redisServer } from './regions-core.ts';
import { createRegionNets, heal, inRegion, partition, regionNets, removeRegionNets, s3HostName, type RegionNet } from './regions-net.ts';
import { WanLink } from './regions-wan.ts';
import { DEV_BUCKET, DEV_REGION_NAMES } from './stack.ts';
import { temporalServer } from './temporal.ts';
import { toolPath } from './tools.ts';

/** Round trips between regions (ms): 40 ms us-east↔eu-west, 120 ms to ap-south. */
export const DEFAULT_RTT_MS: Record<string, number> = { 'us-east|eu-west': 40, 'us-east|ap-south': 120, 'eu-west|ap-south': 120 };
/** Where the shared database, Redis and Temporal run. */
export const CORE_REGION = 'us-east';
/** A round trip inside one region (to its core, when the core is there). */
const LAN_RTT_MS = 0.5;
/** Region i's S3 server listens on S3_BASE_PORT + i (in its namespace, and at every other
 * region's relay to it, so one endpoint names it everywhere). */
const S3_BASE_PORT = 9000;
const API_PORT = 5000;
const CREDENTIALS = { accessKeyId: 'meridian-regions', secretAccessKey: 'meridian-regions-secret' };

export interface TopologyOptions {
  /** Keeps concurrent topologies apart: namespace names and 10.77.<id>.0/24. */
  id: number;
  dataDir: string;
  regions?: readonly string[];
  /** Round trip between two regions, ms; DEFAULT_RTT_MS by default. */
  rttMs?: (a: string, b: string) => number;
  bitsPerSecond?: number;
  /** Extra environment for every Meridian process. */
  env?: Record<string, string>;
  log?: (line: string) => void;
  /** Receives the stop function before anything starts (so a signal during start-up can clean up). */
  onStop?: (stop: () => Promise<void>) => void;
}

export interface TopologyRegion extends RegionNet {
  apiUrl: string;
  s3Endpoint: string;
  /** The region's S3 server (for faults: a stalled or stopped storage). */
  s3Server: ManagedProcess;
  /** Supervised: started again whenever it exits without stop() or kill() having been asked. */
  api: ManagedProcess;
  /** Supervised as the API is. */
  copyWorker: ManagedProcess;
}

export interface RegionTopology {
  regions: Map<string, TopologyRegion>;
  core: { postgres: ManagedProcess; redis: ManagedProcess; temporal: ManagedProcess; databaseUrl: string; redisUrl: string; temporalAddress: string };
  controlWorker: ManagedProcess;
  credentials: typeof CREDENTIALS;
  links: WanLink[];
  rttMs(a: string, b: string): number;
  /** A direct (undelayed) S3 driver of a region's server, for checks. */
  s3(region: string): S3Driver;
  /** Starts one more API instance in `region`'s namespace on `port`, `env` on top of the
   * region's (e.g. a storage preference putting a remote region first); stopped with the rest. */
  addApi(region: string, opts: { name: string; port: number; env: Record<string, string> }): Promise<{ url: string; process: ManagedProcess }>;
  partition(region: string): Promise<void>;
  heal(region: string): Promise<void>;
  stop(): Promise<void>;
}

export function defaultRtt(a: string, b: string): number {
  if (a === b) return LAN_RTT_MS;
  return DEFAULT_RTT_MS[`${a}|${b}`] ?? DEFAULT_RTT_MS[`${b}|${a}`] ?? 120;
}

export async function startRegionTopology(opts: TopologyOptions): Promise<RegionTopology> {
  const names = opts.regions ?? DEV_REGION_NAMES;
  const rtt = opts.rttMs ?? defaultRtt;
  const log = opts.log ?? (() => {});
  const logDir = path.join(opts.dataDir, 'logs');
  mkdirSync(logDir, { recursive: true });
  // PostgreSQL runs as its own user, which must be able to reach its folder inside this one.
  chmodSync(opts.dataDir, 0o755);
  const nets = regionNets(opts.id, names);
  const started: { stop(): Promise<void> }[] = [];
  const links: WanLink[] = [];
  const drivers = new Map<string, S3Driver>();
  let stopping = false;
  const stop = async () => {
    stopping = true;
    for (const d of drivers.values()) d.close();
    for (const s of started.reverse()) await s.stop().catch(() => {});
    await Promise.allSettled(links.map((l) => l.close()));
    await removeRegionNets(nets);
  };
  opts.onStop?.(stop);
  try {
    log(`creating ${nets.length} region namespaces (${nets.map((n) => n.netns).join(', ')})`);
    await createRegionNets(nets);
    const [pgPort, redisPort, temporalPort] = [await freePort(), await freePort(), await freePort()];
    const postgres = await postgresServer({ dataDir: path.join(opts.dataDir, 'postgres'), port: pgPort, logFile: path.join(logDir, 'postgres.log') });
    const redis = redisServer({ dataDir: path.join(opts.dataDir, 'redis'), port: redisPort, logFile: path.join(logDir, 'redis.log') });
    const temporal = temporalServer({ port: temporalPort, dataDir: path.join(opts.dataDir, 'temporal'), logFile: path.join(logDir, 'temporal.log') });
    log('starting the core: PostgreSQL, Redis, Temporal');
    const bundle = bundleWorkflows();
    bundle.catch(() => {});
    for (const p of [postgres, redis, temporal]) started.push(p);
    await Promise.all([postgres.start(), redis.start(), temporal.start()]);

    // The WAN: from each region, a relay to each core service and to every other region's S3.
    const linkOpts = { bitsPerSecond: opts.bitsPerSecond ?? 100e6 };
    for (const n of nets) {
      const toCore = rtt(n.region, CORE_REGION) / 2;
      for (const port of [pgPort, redisPort, temporalPort]) {
        links.push(new WanLink({ listen: { host: n.hostIp, port }, target: { host: '127.0.0.1', port }, oneWayDelayMs: toCore, ...linkOpts }));
      }
      for (const o of nets) {
        if (o === n) continue;
        const port = s3Port(nets, o);
        links.push(new WanLink({ listen: { host: n.hostIp, port }, target: { host: o.nsIp, port }, oneWayDelayMs: rtt(n.region, o.region) / 2, ...linkOpts }));
      }
    }
    await Promise.all(links.map((l) => l.start()));

    log('starting an S3 server in each region');
    const s3Servers = new Map<string, ManagedProcess>();
    for (const n of nets) {
      const s3 = regionS3(n, s3Port(nets, n), path.join(opts.dataDir, 's3', n.region), path.join(logDir, `s3-${n.region}.log`));
      started.push(s3);
      s3Servers.set(n.region, s3);
      await s3.start();
      const driver = new S3Driver({ name: n.region, endpoint: `http://${n.nsIp}:${s3Port(nets, n)}`, region: 'us-east-1', bucket: DEV_BUCKET, ...CREDENTIALS });
      drivers.set(n.region, driver);
      await driver.ensureBucket();
    }

    const databaseUrl = `postgres://postgres@127.0.0.1:${pgPort}/meridian`;
    await ensureDatabase(databaseUrl);
    await applyMigrations(databaseUrl);
    const db = connectDatabase(databaseUrl, { max: 1 });
    try {
      for (const n of nets) {
        await db.db
          .insert(storageLocations)
          .values({ name: n.region, region: n.region, endpoint: `http://${s3HostName(n.region)}:${s3Port(nets, n)}`, bucket: DEV_BUCKET, pathPrefix: '', credentialsRef: DEV_CREDENTIALS_REF, replicateByDefault: true })
          .onConflictDoNothing();
      }
    } finally {
      await db.close();
    }
    const keys = topologyKeys(opts.dataDir);
    const coreEnv = (host: string) => ({
      ...keys,
      DATABASE_URL: `postgres://postgres@${host}:${pgPort}/meridian`,
      REDIS_URL: `redis://${host}:${redisPort}/0`,
      TEMPORAL_ADDRESS: `${host}:${temporalPort}`,
      TEMPORAL_NAMESPACE: 'default',
      MERIDIAN_DEV_S3_ACCESS_KEY: CREDENTIALS.accessKeyId,
      MERIDIAN_DEV_S3_SECRET_KEY: CREDENTIALS.secretAccessKey,
    });
    await setupTemporal(loadConfig({ ...process.env, ...coreEnv('127.0.0.1'), ...opts.env }), { retentionDays: 1, log: (l) => log(`temporal setup: ${l}`) });
    const bundlePath = path.join(opts.dataDir, 'workflow-bundle.js');
    writeFileSync(bundlePath, (await bundle).code);

    const regions = new Map<string, TopologyRegion>();
    const meridian = (n: RegionNet, name: string, entry: 'api/main' | 'workers/main', args: string[], ready: () => Promise<boolean>, env: Record<string, string> = {}) => {
      const preference = [...names].sort((a, b) => rtt(n.region, a) - rtt(n.region, b));
      const cmd = entryCommand(entry, args);
      const wrapped = inRegion(n, cmd.command, cmd.args);
      return new ManagedProcess({
        name,
        ...wrapped,
        cwd: cmd.cwd,
        env: {
          ...coreEnv(n.hostIp),
          HOST: '0.0.0.0',
          PORT: String(API_PORT),
          MERIDIAN_PUBLIC_URL: `http://${n.nsIp}:${API_PORT}`,
          MERIDIAN_API_WORKERS: '1',
          MERIDIAN_STORAGE_PREFERENCE: preference.join(','),
          // Clients outside the namespaces cannot resolve the S3 host names: bytes go through the API.
          MERIDIAN_BLOB_SERVE_MODE: 'proxy',
          MERIDIAN_INSTANCE_NAME: n.region,
          MERIDIAN_WORKFLOW_BUNDLE: bundlePath,
          LOG_LEVEL: 'info',
          ...opts.env,
          ...env,
        },
        logFile: path.join(logDir, `${name}.log`),
        // Generous: seven Node processes start at once, on a machine that may be busy.
        readyTimeoutMs: 300_000,
        ready,
      });
    };
    // Ready once this process (its pid: a restarted worker appends to the same log) says so.
    const workerReady = (name: string, proc: () => ManagedProcess) => async () => {
      const pid = `"pid":${proc().pid},`;
      return readFileSync(path.join(logDir, `${name}.log`), 'utf8')
        .split('\n')
        .some((l) => l.includes('workers running') && l.includes(pid));
    };
    // What a region's process manager (systemd, Kubernetes) does for its deployment: a Meridian
    // process that dies is started again, backing off to every 5 s while it cannot start (the
    // database restarting), as the API's own cluster supervisor replaces a dead worker.
    const supervise = (p: ManagedProcess) => {
      let restarting = false;
      p.onUnexpectedExit((code) => {
        if (stopping || restarting) return;
        restarting = true;
        log(`${p.spec.name} exited unexpectedly (${code === null ? 'killed' : `code ${code}`}); starting it again`);
        void (async () => {
          for (let failures = 1; !stopping && !p.running; failures++) {
            await sleep(Math.min(failures * 200, 5000));
            if (stopping || p.running) break;
            try {
              await p.start();
              log(`${p.spec.name} is back (pid ${p.pid})`);
            } catch (e) {
              log(`${p.spec.name} could not start again (${(e as Error).message}); trying again`);
            }
          }
          restarting = false;
        })();
      });
      return p;
    };
    for (const n of nets) {
      const api = supervise(meridian(n, `api-${n.region}`, 'api/main', [], () => canConnect(API_PORT, n.nsIp)));
      const copyName = `worker-copy-${n.region}`;
      const copyWorker: ManagedProcess = supervise(meridian(n, copyName, 'workers/main', ['--copy', n.region], workerReady(copyName, () => copyWorker)));
      regions.set(n.region, { ...n, apiUrl: `http://${n.nsIp}:${API_PORT}`, s3Endpoint: `http://${n.nsIp}:${s3Port(nets, n)}`, s3Server: s3Servers.get(n.region)!, api, copyWorker });
      started.push(api, copyWorker);
    }
    const coreNet = nets.find((n) => n.region === CORE_REGION) ?? nets[0]!;
    const controlWorker: ManagedProcess = supervise(meridian(coreNet, 'worker-control', 'workers/main', ['--control', '--mirror'], workerReady('worker-control', () => controlWorker)));
    started.push(controlWorker);
    log('starting an API instance and a copy worker in each region, the control worker in the core region');
    await Promise.all([...regions.values()].flatMap((r) => [r.api.start(), r.copyWorker.start()]).concat(controlWorker.start()));

    const byName = (region: string) => {
      const r = regions.get(region);
      if (!r) throw new Error(`no region ${region}`);
      return r;
    };
    return {
      regions,
      core: { postgres, redis, temporal, databaseUrl, redisUrl: `redis://127.0.0.1:${redisPort}/0`, temporalAddress: `127.0.0.1:${temporalPort}` },
      controlWorker,
      credentials: CREDENTIALS,
      links,
      rttMs: rtt,
      s3: (region) => drivers.get(region) ?? (() => { throw new Error(`no region ${region}`); })(),
      async addApi(region, { name, port, env }) {
        const n = byName(region);
        const api = supervise(meridian(n, name, 'api/main', [], () => canConnect(port, n.nsIp), { PORT: String(port), MERIDIAN_PUBLIC_URL: `http://${n.nsIp}:${port}`, ...env }));
        started.push(api);
        await api.start();
        return { url: `http://${n.nsIp}:${port}`, process: api };
      },
      partition: (region) => partition(byName(region)),
      heal: (region) => heal(byName(region)),
      stop,
    };
  } catch (e) {
    await stop();
    throw e;
  }
}

/** The topology's MERIDIAN_SECRET_KEY and MERIDIAN_TOKEN_KEY, generated on its first start and kept
 * with its data (sealed secrets and tokens outlive a restart). */
function topologyKeys(dataDir: string): Record<string, string> {
  const file = path.join(dataDir, 'keys.json');
  if (!existsSync(file)) {
    const keys = { MERIDIAN_SECRET_KEY: randomBytes(32).toString('base64'), MERIDIAN_TOKEN_KEY: randomBytes(32).toString('base64') };
    writeFileSync(file, JSON.stringify(keys), { mode: 0o600 });
  }
  return JSON.parse(readFileSync(file, 'utf8')) as Record<string, string>;
}

function s3Port(nets: RegionNet[], n: RegionNet): number {
  return S3_BASE_PORT + nets.indexOf(n);
}

function regionS3(n: RegionNet, port: number, dataDir: string, logFile: string): ManagedProcess {
  const root = path.join(dataDir, 'objects');
  const meta = path.join(dataDir, 'meta');
  mkdirSync(root, { recursive: true });
  mkdirSync(meta, { recursive: true });
  return new ManagedProcess({
    name: `s3 ${n.region}`,
    ...inRegion(n, toolPath('versitygw'), ['--port', `${n.nsIp}:${port}`, ...VERSITYGW_FLAGS, 'posix', '--sidecar', meta, root]),
    env: { ROOT_ACCESS_KEY_ID: CREDENTIALS.accessKeyId, ROOT_SECRET_ACCESS_KEY: CREDENTIALS.secretAccessKey },
    logFile,
    readyTimeoutMs: 30_000,
    ready: () => canConnect(port, n.nsIp),
  });
}

/** Removes a topology's namespaces and data left by a run that could not clean up. */
export async function removeRegionTopology(id: number, dataDir?: string, regions: readonly string[] = DEV_REGION_NAMES): Promise<void> {
  await removeRegionNets(regionNets(id, regions));
  if (dataDir) rmSync(dataDir, { recursive: true, force: true });
}
