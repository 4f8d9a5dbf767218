// The one place that reads the environment. Every setting but the two keys has a default that
// works with `npm start` on one machine (which generates the keys); a bad or missing value stops
// start-up with a one-line message naming the variable (ConfigError), never a stack trace.
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { availableParallelism } from 'node:os';

export class ConfigError extends Error {
  constructor(
    readonly variable: string,
    problem: string,
  ) {
    super(`${variable}: ${problem}`);
    this.name = 'ConfigError';
  }
}

export type BlobServeMode = 'redirect' | 'proxy';

/** How to reach a Temporal cluster: the dev server of `npm start`, a self-hosted cluster with
 * (mutual) TLS, or Temporal Cloud with an API key. Read from the variables the `temporal` CLI
 * uses, so one environment serves both. */
export interface TemporalSettings {
  /** Frontend host:port. */
  address: string;
  namespace: string;
  /** TLS to the frontend; absent means plaintext (the dev server). */
  tls?: TemporalTls;
  /** Sent as `Authorization: Bearer <key>` on every call (Temporal Cloud API keys). */
  apiKey?: string;
}

export interface TemporalTls {
  /** PEM CA bundle that signed the frontend's certificate; the system's roots when absent. */
  serverCa?: Buffer;
  /** PEM client certificate and key, for a frontend that requires mutual TLS. */
  clientCert?: Buffer;
  clientKey?: Buffer;
  /** Name to verify the frontend's certificate against, when it differs from the address's host. */
  serverName?: string;
}

export interface Config {
  /** Where the API listens. */
  host: string;
  port: number;
  /** API processes sharing the port (`npm start`, `node dist/api/main.js`); default one per core. */
  apiWorkers: number;
  /** The URL clients reach this instance at: token realm, upload Location headers. */
  publicUrl: string;
  databaseUrl: string;
  redisUrl: string;
  /** Prefix of every Redis key, so several deployments (or test runs) can share one Redis. */
  redisKeyPrefix: string;
  temporal: TemporalSettings;
  /** host:port where each worker process serves the Temporal SDK's Prometheus metrics; none when absent. */
  workerMetricsAddress: string | undefined;
  /** On SIGTERM, how long a worker lets in-flight activities (copies, mirror tags) finish before
   * cancelling them; they resume from their last heartbeat on another worker either way. */
  workerShutdownGraceSeconds: number;
  /** A workflow bundle built by `npm run build` (scripts/bundle-workflows.ts); workers bundle
   * workflows/ themselves at start-up when absent. */
  workflowBundlePath: string | undefined;
  /** Ordered storage location names, nearest first (Quay's QUAY_DISTRIBUTED_STORAGE_PREFERENCE). */
  storagePreference: string[];
  /** Credentials of the S3 servers that `npm start` runs; locations refer to them as `env:MERIDIAN_DEV_S3`. */
  devS3: { accessKeyId: string; secretAccessKey: string };
  blobServeMode: BlobServeMode;
  /** Lifetime of presigned blob URLs handed to clients, seconds. */
  presignTtlSeconds: number;
  superusers: string[];
  adminPassword: string | undefined;
  /** 32-byte key for authenticated encryption of secrets at rest (upstream passwords, S3 keys). */
  secretKey: Buffer;
  /** Old keys that still decrypt during a rotation (MERIDIAN_SECRET_KEY_PREVIOUS, comma separated). */
  previousSecretKeys: Buffer[];
  /** Key that signs registry bearer tokens. */
  tokenSigningKey: Buffer;
  tokenTtlSeconds: number;
  /** Failed password logins before an account, or a client address, gets 429 for the rest of the
   * window (auth/login-throttle.ts); 0 turns a limit off. */
  loginMaxFailuresPerAccount: number;
  loginMaxFailuresPerAddress: number;
  loginFailureWindowSeconds: number;
  /** Behind a reverse proxy: the client address is the last X-Forwarded-For entry (the one the
   * proxy added), not the socket's peer. Off by default — a client could otherwise pick its own. */
  trustProxy: boolean;
  /** Longest a request may take to arrive, body included (a client trickling a body does not hold
   * a socket for ever); a blob upload must fit in it. */
  requestTimeoutSeconds: number;
  /** A socket with no traffic for this long is closed. */
  idleTimeoutSeconds: number;
  /** Bearer token GET /metrics requires; open when absent (see metricsAddress). */
  metricsToken: string | undefined;
  /** host:port of a separate listener serving only /metrics (and not the main port). */
  metricsAddress: string | undefined;
  /** Quay's REPO_MIRROR_ROLLBACK: the default of a mirror config's rollback_on_failure. */
  mirrorRollbackDefault: boolean;
  /** Upstream hosts (names or CIDRs) a mirror may reach although private or loopback (Quay's SSRF_ALLOWED_HOSTS). */
  mirrorAllowedHosts: string[];
  /** Tags of one repository copied at once (Quay copies one at a time). */
  mirrorTagParallelism: number;
  /** Requests in flight to one upstream host, across every mirror and worker (a Redis semaphore). */
  mirrorUpstreamConcurrency: number;
  /** Attempts at one tag before it counts as failed (transient upstream errors, Retry-After). */
  mirrorTagAttempts: number;
  /** Tags one sync workflow run handles before it continues as new (bounds its history). */
  mirrorTagsPerRun: number;
  /** How long an unreferenced blob or untagged manifest is kept before GC deletes it. */
  gcGraceSeconds: number;
  /** A name for this instance in logs and metrics. */
  instanceName: string;
  logLevel: string;
}

type Env = Record<string, string | undefined>;


function str(env: Env, name: string, fallback: string): string {
  const v = env[name];
  return v === undefined || v === '' ? fallback : v;
}

function int(env: Env, name: string, fallback: number, min: number, max: number): number {
  const raw = env[name];
  if (raw === undefined || raw === '') return fallback;
  if (!/^\d+$/.test(raw)) throw new ConfigError(name, `expected a whole number, got "${raw}"`);
  const n = Number(raw);
  if (n < min || n > max) throw new ConfigError(name, `must be between ${min} and ${max}, got ${n}`);
  return n;
}

function bool(env: Env, name: string, fallback: boolean): boolean {
  const raw = env[name];
  if (raw === undefined || raw === '') return fallback;
  if (/^(1|true|yes|on)$/i.test(raw)) return true;
  if (/^(0|false|no|off)$/i.test(raw)) return false;
  throw new ConfigError(name, `expected true or false, got "${raw}"`);
}

function url(env: Env, name: string, fallback: string, protocols: string[]): string {
  const raw = str(env, name, fallback);
  let parsed: URL;
  try {
    parsed = new URL(raw);
  } catch {
    throw new ConfigError(name, `not a valid URL: "${redactUrl(raw)}"`);
  }
  if (!protocols.includes(parsed.protocol)) {
    throw new ConfigError(name, `expected a ${protocols.join(' or ')} URL, got "${redactUrl(raw)}"`);
  }
  return raw;
}

function hostPort(env: Env, name: string, fallback: string): string {
  const raw = str(env, name, fallback);
  if (!/^[A-Za-z0-9.\-[\]:]+:\d{1,5}$/.test(raw)) throw new ConfigError(name, `expected host:port, got "${raw}"`);
  return raw;
}

/** A key the instance cannot run safely without: there is no fallback (a fixed default would let
 * anyone sign superuser tokens or open sealed secrets). Tools that neither seal nor sign (migrations,
 * `temporal setup`) load with `requireKeys: false` and get a random key nobody else knows. */
function key(env: Env, name: string, minBytes: number, required: boolean): Buffer {
  const raw = env[name];
  if (raw === undefined || raw === '') {
    if (required) throw new ConfigError(name, `is required (${minBytes} random bytes, base64 or hex: openssl rand -base64 ${minBytes}); \`npm start\` generates one into .data/keys.env`);
    return randomBytes(minBytes);
  }
  return parseKey(name, raw, minBytes);
}

function parseKey(name: string, raw: string, minBytes: number): Buffer {
  const buf = /^[0-9a-f]+$/i.test(raw) && raw.length % 2 === 0 ? Buffer.from(raw, 'hex') : Buffer.from(raw, 'base64');
  if (buf.length < minBytes) throw new ConfigError(name, `must be at least ${minBytes} bytes (hex or base64)`);
  return buf;
}

/** PEM from `<NAME>_PATH` (a file) or `<NAME>_DATA` (the PEM itself), the Temporal CLI's pair. */
function pem(env: Env, name: string, kind: 'CERTIFICATE' | 'PRIVATE KEY'): Buffer | undefined {
  const file = env[`${name}_PATH`] || undefined;
  const data = env[`${name}_DATA`] || undefined;
  if (file && data) throw new ConfigError(`${name}_PATH`, `set ${name}_PATH or ${name}_DATA, not both`);
  const variable = file ? `${name}_PATH` : `${name}_DATA`;
  let buf: Buffer;
  if (file) {
    try {
      buf = readFileSync(file);
    } catch (e) {
      throw new ConfigError(variable, `cannot read ${file}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
    }
  } else if (data) {
    buf = Buffer.from(data.replace(/\\n/g, '\n'));
  } else {
    return undefined;
  }
  const text = buf.toString('latin1');
  const ok = kind === 'CERTIFICATE' ? /-----BEGIN CERTIFICATE-----/.test(text) : /-----BEGIN [A-Z ]*PRIVATE KEY-----/.test(text);
  if (!ok) throw new ConfigError(variable, `expected a PEM ${kind.toLowerCase()}`);
  return buf;
}

function temporalSettings(env: Env): TemporalSettings {
  const serverCa = pem(env, 'TEMPORAL_TLS_SERVER_CA_CERT', 'CERTIFICATE');
  const clientCert = pem(env, 'TEMPORAL_TLS_CLIENT_CERT', 'CERTIFICATE');
  const clientKey = pem(env, 'TEMPORAL_TLS_CLIENT_KEY', 'PRIVATE KEY');
  const serverName = env.TEMPORAL_TLS_SERVER_NAME || undefined;
  const apiKey = env.TEMPORAL_API_KEY || undefined;
  if (!!clientCert !== !!clientKey) {
    throw new ConfigError(clientCert ? 'TEMPORAL_TLS_CLIENT_KEY_PATH' : 'TEMPORAL_TLS_CLIENT_CERT_PATH', 'a client certificate needs its key and a key its certificate');
  }
  const anyTls = !!(serverCa || clientCert || serverName);
  // TLS is on when asked for, when any TLS setting is given, or with an API key (Temporal Cloud).
  const tlsOn = bool(env, 'TEMPORAL_TLS', anyTls || !!apiKey);
  if (!tlsOn && anyTls) throw new ConfigError('TEMPORAL_TLS', 'is false but TLS certificates or a server name are set');
  return {
    address: hostPort(env, 'TEMPORAL_ADDRESS', '127.0.0.1:7233'),
    namespace: str(env, 'TEMPORAL_NAMESPACE', 'default'),
    ...(tlsOn ? { tls: { serverCa, clientCert, clientKey, serverName } } : {}),
    ...(apiKey ? { apiKey } : {}),
  };
}

function metricsToken(env: Env): string | undefined {
  const raw = env.MERIDIAN_METRICS_TOKEN;
  if (raw === undefined || raw === '') return undefined;
  if (raw.length < 16 || !/^[\x21-\x7e]+$/.test(raw)) throw new ConfigError('MERIDIAN_METRICS_TOKEN', 'must be at least 16 printable characters without spaces');
  return raw;
}

export const LOCATION_NAME = /^[a-z0-9][a-z0-9-]{0,62}$/;

function list(env: Env, name: string, fallback: string[]): string[] {
  const raw = env[name];
  if (raw === undefined || raw.trim() === '') return fallback;
  return raw
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s !== '');
}

/** Hides a password in a URL so that an error message never prints it. */
export function redactUrl(raw: string): string {
  return raw.replace(/(\/\/[^:/@]+:)[^@/]*@/, '$1***@');
}

export interface LoadOptions {
  /** False only for tools that neither seal secrets nor sign or check tokens. Default true. */
  requireKeys?: boolean;
}

export function loadConfig(env: Env = process.env, opts: LoadOptions = {}): Config {
  const requireKeys = opts.requireKeys ?? true;
  const port = int(env, 'PORT', 5000, 0, 65535);
  const host = str(env, 'HOST', '127.0.0.1');
  const storagePreference = list(env, 'MERIDIAN_STORAGE_PREFERENCE', ['us-east', 'eu-west', 'ap-south']);
  for (const name of storagePreference) {
    if (!LOCATION_NAME.test(name)) throw new ConfigError('MERIDIAN_STORAGE_PREFERENCE', `"${name}" is not a valid location name`);
  }
  if (new Set(storagePreference).size !== storagePreference.length) {
    throw new ConfigError('MERIDIAN_STORAGE_PREFERENCE', 'a location is listed twice');
  }
  const mode = str(env, 'MERIDIAN_BLOB_SERVE_MODE', 'redirect');
  if (mode !== 'redirect' && mode !== 'proxy') throw new ConfigError('MERIDIAN_BLOB_SERVE_MODE', `expected redirect or proxy, got "${mode}"`);
  const publicUrl = url(env, 'MERIDIAN_PUBLIC_URL', `http://${host.includes(':') ? `[${host}]` : host}:${port}`, ['http:', 'https:']).replace(/\/+$/, '');
  return {
    host,
    port,
    apiWorkers: int(env, 'MERIDIAN_API_WORKERS', availableParallelism(), 1, 256),
    publicUrl,
    databaseUrl: url(env, 'DATABASE_URL', 'postgres://postgres@127.0.0.1:5432/meridian', ['postgres:', 'postgresql:']),
    redisUrl: url(env, 'REDIS_URL', 'redis://127.0.0.1:6379/0', ['redis:', 'rediss:']),
    redisKeyPrefix: str(env, 'MERIDIAN_REDIS_PREFIX', 'meridian:'),
    temporal: temporalSettings(env),
    workerMetricsAddress: env.MERIDIAN_WORKER_METRICS_ADDRESS ? hostPort(env, 'MERIDIAN_WORKER_METRICS_ADDRESS', '') : undefined,
    workerShutdownGraceSeconds: int(env, 'MERIDIAN_WORKER_SHUTDOWN_GRACE', 30, 0, 3600),
    workflowBundlePath: env.MERIDIAN_WORKFLOW_BUNDLE || undefined,
    storagePreference,
    devS3: {
      accessKeyId: str(env, 'MERIDIAN_DEV_S3_ACCESS_KEY', 'meridian'),
      secretAccessKey: str(env, 'MERIDIAN_DEV_S3_SECRET_KEY', 'meridian-dev-secret'),
    },
    blobServeMode: mode,
    presignTtlSeconds: int(env, 'MERIDIAN_PRESIGN_TTL_SECONDS', 600, 10, 7 * 24 * 3600),
    superusers: list(env, 'MERIDIAN_SUPERUSERS', ['admin']),
    adminPassword: env.MERIDIAN_ADMIN_PASSWORD || undefined,
    secretKey: key(env, 'MERIDIAN_SECRET_KEY', 32, requireKeys).subarray(0, 32),
    previousSecretKeys: list(env, 'MERIDIAN_SECRET_KEY_PREVIOUS', []).map((raw) =>
      parseKey('MERIDIAN_SECRET_KEY_PREVIOUS', raw, 32).subarray(0, 32),
    ),
    tokenSigningKey: key(env, 'MERIDIAN_TOKEN_KEY', 32, requireKeys),
    tokenTtlSeconds: int(env, 'MERIDIAN_TOKEN_TTL_SECONDS', 300, 30, 86400),
    loginMaxFailuresPerAccount: int(env, 'MERIDIAN_LOGIN_MAX_FAILURES_PER_ACCOUNT', 10, 0, 1_000_000),
    loginMaxFailuresPerAddress: int(env, 'MERIDIAN_LOGIN_MAX_FAILURES_PER_ADDRESS', 100, 0, 1_000_000_000),
    loginFailureWindowSeconds: int(env, 'MERIDIAN_LOGIN_FAILURE_WINDOW', 300, 1, 86400),
    trustProxy: bool(env, 'MERIDIAN_TRUST_PROXY', false),
    requestTimeoutSeconds: int(env, 'MERIDIAN_REQUEST_TIMEOUT', 3600, 1, 7 * 86400),
    idleTimeoutSeconds: int(env, 'MERIDIAN_IDLE_TIMEOUT', 120, 1, 86400),
    metricsToken: metricsToken(env),
    metricsAddress: env.MERIDIAN_METRICS_ADDRESS ? hostPort(env, 'MERIDIAN_METRICS_ADDRESS', '') : undefined,
    mirrorRollbackDefault: bool(env, 'MERIDIAN_REPO_MIRROR_ROLLBACK', false),
    mirrorAllowedHosts: list(env, 'MERIDIAN_MIRROR_ALLOWED_HOSTS', []),
    mirrorTagParallelism: int(env, 'MERIDIAN_MIRROR_TAG_PARALLELISM', 4, 1, 64),
    mirrorUpstreamConcurrency: int(env, 'MERIDIAN_MIRROR_UPSTREAM_CONCURRENCY', 8, 1, 256),
    mirrorTagAttempts: int(env, 'MERIDIAN_MIRROR_TAG_ATTEMPTS', 5, 1, 100),
    mirrorTagsPerRun: int(env, 'MERIDIAN_MIRROR_TAGS_PER_RUN', 300, 1, 5000),
    gcGraceSeconds: int(env, 'MERIDIAN_GC_GRACE', 86400, 0, 365 * 86400),
    instanceName: str(env, 'MERIDIAN_INSTANCE_NAME', storagePreference[0] ?? 'meridian'),
    logLevel: str(env, 'LOG_LEVEL', 'info'),
  };
}
