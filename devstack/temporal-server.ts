// The real Temporal server (go.temporal.io/server, built by setup.sh) as `MERIDIAN_TEMPORAL=server
// npm start` and the server test project run it: PostgreSQL persistence and visibility in two
// databases of its own, mutual TLS on the frontend with the certificates setup.sh generates in
// .tools/tls, all four services in one process; and the Temporal UI server next to it (the real
// server has no UI of its own). This is a one-node cluster for development and CI; a production
// cluster is the operator's (README, "Production deployment").
import { execFile } from 'node:child_process';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';
import { ensureDatabase } from '../db/migrate.ts';
import { canConnect } from './ports.ts';
import { ManagedProcess } from './process.ts';
import { TLS_DIR, toolPath } from './tools.ts';

const run = promisify(execFile);

/** The frontend's gRPC port and the ports of the other services and listeners. */
export interface TemporalServerPorts {
  frontend: number;
  frontendMembership: number;
  frontendHttp: number;
  history: number;
  historyMembership: number;
  matching: number;
  matchingMembership: number;
  worker: number;
  workerMembership: number;
  /** The server's own Prometheus metrics. */
  metrics: number;
}

/** Ten consecutive ports from the frontend's (`npm start` uses 7600–7609 in a port block). */
export function consecutivePorts(frontend: number): TemporalServerPorts {
  const [frontendMembership, frontendHttp, history, historyMembership, matching, matchingMembership, worker, workerMembership, metrics] = Array.from(
    { length: 9 },
    (_, i) => frontend + 1 + i,
  ) as [number, number, number, number, number, number, number, number, number];
  return { frontend, frontendMembership, frontendHttp, history, historyMembership, matching, matchingMembership, worker, workerMembership, metrics };
}

/** Client-side TLS files for this server: what TEMPORAL_TLS_* point a Meridian process at. */
export const DEV_TLS = {
  ca: path.join(TLS_DIR, 'ca.pem'),
  serverCert: path.join(TLS_DIR, 'server.pem'),
  serverKey: path.join(TLS_DIR, 'server.key'),
  clientCert: path.join(TLS_DIR, 'client.pem'),
  clientKey: path.join(TLS_DIR, 'client.key'),
  serverName: 'localhost',
};

/** The environment a Meridian process (or the `temporal` CLI) needs to reach this server. */
export function devServerTlsEnv(): Record<string, string> {
  return {
    TEMPORAL_TLS_SERVER_CA_CERT_PATH: DEV_TLS.ca,
    TEMPORAL_TLS_CLIENT_CERT_PATH: DEV_TLS.clientCert,
    TEMPORAL_TLS_CLIENT_KEY_PATH: DEV_TLS.clientKey,
    TEMPORAL_TLS_SERVER_NAME: DEV_TLS.serverName,
  };
}

export interface RealTemporalOptions {
  ports: TemporalServerPorts;
  /** Where config files go. */
  dataDir: string;
  logDir: string;
  /** Any database URL on the PostgreSQL server to use (host, port, user, password). */
  postgresUrl: string;
  /** The server's databases are `<prefix>` (history, tasks) and `<prefix>_visibility`. */
  databasePrefix: string;
  /** Dynamic config values (key → value), e.g. a lower continue-as-new suggestion threshold. */
  dynamicConfig?: Record<string, unknown>;
  /** Web UI port; omit for no UI. */
  uiPort?: number;
  /** The UI's default namespace. */
  namespace?: string;
}

export interface RealTemporal {
  server: ManagedProcess;
  ui: ManagedProcess | undefined;
  address: string;
  databases: string[];
}

interface Pg {
  host: string;
  port: string;
  user: string;
  password: string;
}

function pgOf(url: string): Pg {
  const u = new URL(url);
  return { host: u.hostname || '127.0.0.1', port: u.port || '5432', user: decodeURIComponent(u.username || 'postgres'), password: decodeURIComponent(u.password) };
}

/** Creates the two databases when missing and brings their schemas to this server version
 * (the schema tool's setup and update are idempotent). */
export async function prepareTemporalDatabases(postgresUrl: string, prefix: string): Promise<string[]> {
  if (!/^[a-z0-9_]+$/.test(prefix)) throw new Error(`unsupported Temporal database name "${prefix}"`);
  const pg = pgOf(postgresUrl);
  const names = [prefix, `${prefix}_visibility`];
  const schemas = ['postgresql/v12/temporal', 'postgresql/v12/visibility'];
  const tool = toolPath('temporal-sql-tool');
  await Promise.all(
    names.map(async (db, i) => {
      const u = new URL(postgresUrl);
      u.pathname = `/${db}`;
      await ensureDatabase(u.toString());
      const common = ['--plugin', 'postgres12', '--ep', pg.host, '-p', pg.port, '-u', pg.user, '--db', db];
      const env = { ...process.env, SQL_PASSWORD: pg.password };
      try {
        await run(tool, [...common, 'setup-schema', '-v', '0.0'], { env });
        await run(tool, [...common, 'update-schema', '--schema-name', schemas[i]!], { env });
      } catch (e) {
        const err = e as { stderr?: string; message: string };
        throw new Error(`Temporal schema for database ${db} failed: ${(err.stderr ?? err.message).split('\n').filter(Boolean).slice(-3).join(' ')}`);
      }
    }),
  );
  return names;
}

function serverConfig(opts: RealTemporalOptions, dynamicConfigPath: string): unknown {
  const pg = pgOf(opts.postgresUrl);
  const p = opts.ports;
  // Each of the four services has its own pool: keep them small, the PostgreSQL of a development
  // machine (max_connections 100) is shared with everything else.
  const store = (databaseName: string, maxConns: number) => ({
    sql: {
      pluginName: 'postgres12',
      databaseName,
      connectAddr: `${pg.host}:${pg.port}`,
      connectProtocol: 'tcp',
      user: pg.user,
      password: pg.password,
      maxConns,
      maxIdleConns: 1,
      maxConnLifetime: '1h',
    },
  });
  const rpc = (grpcPort: number, membershipPort: number, extra: object = {}) => ({ rpc: { grpcPort, membershipPort, bindOnLocalHost: true, ...extra } });
  const clientTls = { serverName: DEV_TLS.serverName, rootCaFiles: [DEV_TLS.ca] };
  // JSON is YAML: the server reads this file as its YAML config.
  return {
    log: { stdout: true, level: 'warn' },
    persistence: {
      defaultStore: 'default',
      visibilityStore: 'visibility',
      numHistoryShards: 4,
      datastores: { default: store(opts.databasePrefix, 6), visibility: store(`${opts.databasePrefix}_visibility`, 2) },
    },
    global: {
      membership: { maxJoinDuration: '30s', broadcastAddress: '127.0.0.1' },
      metrics: { prometheus: { framework: 'tally', timerType: 'histogram', listenAddress: `127.0.0.1:${p.metrics}` } },
      tls: {
        // Mutual TLS on the frontend: clients need a certificate from the CA as well.
        frontend: {
          server: { certFile: DEV_TLS.serverCert, keyFile: DEV_TLS.serverKey, clientCaFiles: [DEV_TLS.ca], requireClientAuth: true },
          client: clientTls,
        },
        // The server's own system worker (schedules, batch operations) is a frontend client too.
        systemWorker: { certFile: DEV_TLS.clientCert, keyFile: DEV_TLS.clientKey, client: clientTls },
      },
    },
    services: {
      frontend: rpc(p.frontend, p.frontendMembership, { httpPort: p.frontendHttp }),
      history: rpc(p.history, p.historyMembership),
      matching: rpc(p.matching, p.matchingMembership),
      worker: rpc(p.worker, p.workerMembership),
    },
    clusterMetadata: {
      enableGlobalNamespace: false,
      failoverVersionIncrement: 10,
      masterClusterName: 'active',
      currentClusterName: 'active',
      clusterInformation: { active: { enabled: true, initialFailoverVersion: 1, rpcName: 'frontend', rpcAddress: `127.0.0.1:${p.frontend}` } },
    },
    dcRedirectionPolicy: { policy: 'noop' },
    publicClient: { hostPort: `127.0.0.1:${p.frontend}` },
    dynamicConfigClient: { filepath: dynamicConfigPath, pollInterval: '10s' },
  };
}

function dynamicConfigYaml(values: Record<string, unknown>): string {
  return JSON.stringify(Object.fromEntries(Object.entries(values).map(([k, v]) => [k, [{ value: v, constraints: {} }]])), null, 2);
}

function uiConfig(opts: RealTemporalOptions): unknown {
  return {
    temporalGrpcAddress: `127.0.0.1:${opts.ports.frontend}`,
    host: '127.0.0.1',
    port: opts.uiPort,
    enableUi: true,
    defaultNamespace: opts.namespace ?? 'default',
    notifyOnNewVersion: false,
    cors: { allowOrigins: [`http://127.0.0.1:${opts.uiPort}`, `http://localhost:${opts.uiPort}`], cookieInsecure: true },
    tls: { caFile: DEV_TLS.ca, certFile: DEV_TLS.clientCert, keyFile: DEV_TLS.clientKey, serverName: DEV_TLS.serverName, enableHostVerification: true },
  };
}

/** Databases prepared, config written; the processes are returned unstarted. */
export async function realTemporal(opts: RealTemporalOptions): Promise<RealTemporal> {
  mkdirSync(opts.dataDir, { recursive: true });
  const databases = await prepareTemporalDatabases(opts.postgresUrl, opts.databasePrefix);
  const dynamicConfigPath = path.join(opts.dataDir, 'dynamicconfig.yaml');
  writeFileSync(dynamicConfigPath, dynamicConfigYaml(opts.dynamicConfig ?? {}));
  const configPath = path.join(opts.dataDir, 'config.yaml');
  writeFileSync(configPath, JSON.stringify(serverConfig(opts, dynamicConfigPath), null, 2));
  const address = `127.0.0.1:${opts.ports.frontend}`;
  const server = new ManagedProcess({
    name: 'temporal-server',
    command: toolPath('temporal-server'),
    // No authorizer: mutual TLS is what admits a client (README, "Production deployment").
    args: ['--config-file', configPath, '--allow-no-auth', 'start'],
    logFile: path.join(opts.logDir, 'temporal-server.log'),
    readyTimeoutMs: 120_000,
    ready: async () => {
      if (!(await canConnect(opts.ports.frontend))) return false;
      const { Connection } = await import('@temporalio/client');
      const conn = await Connection.connect({ address, tls: devClientTls(), connectTimeout: 1000 });
      try {
        // The system namespace exists once the frontend, history and its persistence work.
        await conn.workflowService.describeNamespace({ namespace: 'temporal-system' });
        return true;
      } finally {
        await conn.close();
      }
    },
  });
  let ui: ManagedProcess | undefined;
  if (opts.uiPort) {
    const uiDir = path.join(opts.dataDir, 'ui');
    mkdirSync(uiDir, { recursive: true });
    writeFileSync(path.join(uiDir, 'meridian.yaml'), JSON.stringify(uiConfig(opts), null, 2));
    ui = new ManagedProcess({
      name: 'temporal-ui',
      command: toolPath('temporal-ui-server'),
      args: ['--root', uiDir, '--config', '.', '--env', 'meridian', 'start'],
      logFile: path.join(opts.logDir, 'temporal-ui.log'),
      ready: () => canConnect(opts.uiPort!),
    });
  }
  return { server, ui, address, databases };
}

/** TLS options of @temporalio/client for this server (the client certificate of setup.sh). */
export function devClientTls() {
  return {
    serverRootCACertificate: readFileSync(DEV_TLS.ca),
    clientCertPair: { crt: readFileSync(DEV_TLS.clientCert), key: readFileSync(DEV_TLS.clientKey) },
    serverNameOverride: DEV_TLS.serverName,
  };
}
