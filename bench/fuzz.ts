// Hostile-input fuzzing of /v2, /v2/auth and /api/v1: generated malformed requests (NUL bytes,
// malformed %-escapes, lone surrogates, huge numbers, impossible dates, deep and oversized JSON,
// wrong types, junk credentials and headers) against every route of the table, with and without
// valid credentials. A correct server answers each with a 4xx (or a 2xx when the junk happens to
// be acceptable), never a 5xx, and stays up.
//
//   npx tsx bench/fuzz.ts [--requests 100000] [--seed 1] [--concurrency 8]
//
// (Ctrl-C stops sending and prints the report of what was sent, with a non-zero exit.)
// starts its own throw-away stack (loopback only), prints requests sent, answers by status and
// every 5xx with its request, and exits non-zero on any 5xx or if the server stopped answering.
// test/security-fuzz.test.ts runs a short seeded run of the same generator in `npm test`.
import { Pool, request } from 'undici';

export interface FuzzRequest {
  method: string;
  path: string;
  headers: Record<string, string>;
  body?: string;
}

export interface FuzzTarget {
  /** A user (superuser when the caller configured it) with a repository of its own. */
  username: string;
  password: string;
  repository: string;
}

export interface FuzzReport {
  sent: number;
  byStatus: Record<string, number>;
  serverErrors: { request: FuzzRequest; status: number; body: string }[];
  /** Requests the client could not send or whose connection failed (a crash shows here). */
  transportErrors: { request: FuzzRequest; error: string }[];
}

/** mulberry32: small, seeded, good enough to pick cases reproducibly. */
function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const HOSTILE_STRINGS = [
  '',
  '\u0000',
  'a\u0000b',
  '%00',
  '%',
  '%zz',
  '%E0%A4%A',
  '%ff%fe',
  '%C0%AF',
  '..',
  '../../etc/passwd',
  '\ud800',
  '\udfff\ud800',
  '😀',
  ' ',
  '\t\r\n',
  '\u202e',
  '<script>alert(1)</script>',
  "' or 1=1 --",
  '$(id)',
  '{{7*7}}',
  '99999999999999999999999999999',
  '-1',
  '-0',
  '1e309',
  '0x10',
  'NaN',
  'Infinity',
  '0000-01-01T00:00:00Z',
  '0000-00-00T00:00:00Z',
  '9999-99-99T99:99:99Z',
  '+275760-09-13T00:00:00Z',
  '2030-02-30T00:00:00Z',
  '2030-01-01T00:00:00+99:00',
  'sha256:',
  'sha256:' + 'g'.repeat(64),
  'sha256:' + 'a'.repeat(63),
  'sha512:' + 'a'.repeat(128),
  'md5:abc',
  'A'.repeat(300),
  'a/'.repeat(200),
  'UPPER/Case',
  'null',
  'true',
  '[]',
  '{}',
  '__proto__',
  'constructor',
];

const HOSTILE_NUMBERS = ['0', '-1', '1e400', '-1e400', '1.5', '9007199254740993', '99999999999999999999999999999999', '1e-400', '-0'];

function pick<T>(r: () => number, list: readonly T[]): T {
  return list[Math.floor(r() * list.length)]!;
}

/** A value of any JSON type, hostile more often than not. */
function jsonValue(r: () => number, depth = 0): string {
  const k = r();
  if (k < 0.35) return JSON.stringify(pick(r, HOSTILE_STRINGS));
  if (k < 0.5) return pick(r, HOSTILE_NUMBERS);
  if (k < 0.6) return pick(r, ['null', 'true', 'false', '[]', '{}', '""']);
  if (k < 0.7 && depth < 3) return `[${jsonValue(r, depth + 1)},${jsonValue(r, depth + 1)}]`;
  if (k < 0.8 && depth < 3) return `{${JSON.stringify(pick(r, FIELDS))}:${jsonValue(r, depth + 1)}}`;
  if (k < 0.85) return JSON.stringify('x'.repeat(Math.floor(r() * 70_000)));
  return JSON.stringify(`${pick(r, HOSTILE_STRINGS)}${pick(r, HOSTILE_STRINGS)}`);
}

const FIELDS = [
  'name', 'description', 'repository', 'namespace', 'visibility', 'repo_kind', 'state', 'role', 'email', 'password', 'username',
  'is_enabled', 'external_reference', 'external_registry_username', 'external_registry_password', 'sync_interval', 'sync_start_date',
  'root_rule', 'rule_kind', 'rule_value', 'robot_username', 'external_registry_config', 'verify_tls', 'unsigned_images', 'proxy',
  'http_proxy', 'https_proxy', 'no_proxy', 'rollback_on_failure', 'event', 'method', 'config', 'url', 'title', 'event_config',
  'friendlyName', 'endpoint', 'bucket', 'region', 'credentials', 'locations', 'mode', 'schemaVersion', 'mediaType', 'layers',
  'manifests', 'subject', 'artifactType', 'digest', 'size', 'annotations',
];

const QUERY_KEYS = ['last', 'n', 'before', 'limit', 'page', 'next_page', 'public', 'namespace', 'artifactType', 'mount', 'from', 'digest', 'tag', 'scope', 'service', 'account', 'offline_token', 'client_id', 'includeTags', 'popularity'];

/** Routes with `{repo}` (the target's repository), `{ns}` (its namespace) and `{x}` (a hostile segment). */
const ROUTES: [string, string][] = [
  ['GET', '/v2/'],
  ['GET', '/v2/_catalog'],
  ['GET', '/v2/auth'],
  ['POST', '/v2/auth'],
  ['GET', '/v2/{repo}/tags/list'],
  ['GET', '/v2/{x}/tags/list'],
  ['GET', '/v2/{repo}/manifests/{x}'],
  ['HEAD', '/v2/{repo}/manifests/{x}'],
  ['PUT', '/v2/{repo}/manifests/{x}'],
  ['PUT', '/v2/{repo}/manifests/latest'],
  ['DELETE', '/v2/{repo}/manifests/{x}'],
  ['GET', '/v2/{repo}/blobs/{x}'],
  ['HEAD', '/v2/{repo}/blobs/{x}'],
  ['DELETE', '/v2/{repo}/blobs/{x}'],
  ['POST', '/v2/{repo}/blobs/uploads/'],
  ['GET', '/v2/{repo}/blobs/uploads/{x}'],
  ['PATCH', '/v2/{repo}/blobs/uploads/{x}'],
  ['PUT', '/v2/{repo}/blobs/uploads/{x}'],
  ['DELETE', '/v2/{repo}/blobs/uploads/{x}'],
  ['GET', '/v2/{repo}/referrers/{x}'],
  ['GET', '/api/v1/repository'],
  ['POST', '/api/v1/repository'],
  ['GET', '/api/v1/repository/{repo}'],
  ['GET', '/api/v1/repository/{x}'],
  ['PUT', '/api/v1/repository/{repo}'],
  ['POST', '/api/v1/repository/{repo}/changevisibility'],
  ['PUT', '/api/v1/repository/{repo}/changestate'],
  ['GET', '/api/v1/repository/{repo}/permissions/user/'],
  ['GET', '/api/v1/repository/{repo}/permissions/user/{x}'],
  ['PUT', '/api/v1/repository/{repo}/permissions/user/{x}'],
  ['GET', '/api/v1/repository/{repo}/mirror'],
  ['POST', '/api/v1/repository/{repo}/mirror'],
  ['PUT', '/api/v1/repository/{repo}/mirror'],
  ['POST', '/api/v1/repository/{repo}/mirror/sync-now'],
  ['GET', '/api/v1/repository/{repo}/mirror/runs'],
  ['GET', '/api/v1/repository/{repo}/notification/'],
  ['POST', '/api/v1/repository/{repo}/notification/'],
  ['GET', '/api/v1/repository/{repo}/notification/{x}'],
  ['POST', '/api/v1/organization/'],
  ['GET', '/api/v1/organization/{x}'],
  ['GET', '/api/v1/organization/{x}/robots'],
  ['PUT', '/api/v1/organization/{x}/robots/{x}'],
  ['PUT', '/api/v1/user/robots/{x}'],
  ['GET', '/api/v1/user/robots/{x}'],
  ['GET', '/api/v1/user/'],
  ['POST', '/api/v1/user/apptoken'],
  ['POST', '/api/v1/superuser/users/'],
  ['GET', '/api/v1/locations'],
  ['POST', '/api/v1/locations'],
  ['GET', '/api/v1/locations/{x}'],
  ['GET', '/api/v1/blobs/{x}/placements'],
  ['GET', '/api/v1/replication/summary'],
  ['POST', '/api/v1/replication/backfill'],
  ['GET', '/api/v1/namespace/{x}/replication'],
  ['PUT', '/api/v1/namespace/{ns}/replication'],
  ['POST', '/api/v1/scrub/{x}'],
  ['GET', '/api/v1/scrub/{x}'],
  ['POST', '/api/v1/orphans'],
  ['GET', '/api/v1/orphans'],
  ['GET', '/api/v1/{x}'],
  ['GET', '/{x}'],
];

/** encodeURIComponent, with a lone surrogate written as its (invalid) UTF-8 bytes. */
function encodeLoosely(v: string): string {
  try {
    return encodeURIComponent(v);
  } catch {
    return '%ED%A0%80';
  }
}

/** A path segment: percent-encoded, or written raw with its malformed escapes (printable ASCII only). */
function segment(r: () => number): string {
  const v = pick(r, HOSTILE_STRINGS);
  if (r() < 0.5 && /^[\x21-\x7e]*$/.test(v)) return v;
  if (r() < 0.2) return `${encodeURIComponent('ok')}${pick(r, ['%', '%0', '%zz', '%00', '%ff', '%E0%A4%A'])}`;
  return encodeLoosely(v);
}

function queryString(r: () => number): string {
  const parts: string[] = [];
  const n = Math.floor(r() * 3);
  for (let i = 0; i < n; i++) {
    const key = pick(r, QUERY_KEYS);
    const raw = r() < 0.5 ? pick(r, HOSTILE_NUMBERS) : pick(r, HOSTILE_STRINGS);
    const value = r() < 0.3 && /^[\x21-\x7e]*$/.test(raw) && !/[#&]/.test(raw) ? raw : encodeLoosely(raw);
    parts.push(`${key}=${value}`);
  }
  return parts.length ? `?${parts.join('&')}` : '';
}

function authorization(r: () => number, t: FuzzTarget): string | undefined {
  const b64 = (s: string) => Buffer.from(s, 'utf8').toString('base64');
  const k = r();
  if (k < 0.35) return `Basic ${b64(`${t.username}:${t.password}`)}`;
  if (k < 0.45) return undefined;
  return pick(r, [
    `Basic ${b64(`${t.username}\u0000:${t.password}`)}`,
    `Basic ${b64(`\u0000:\u0000`)}`,
    `Basic ${b64(`${pick(r, HOSTILE_STRINGS)}:${pick(r, HOSTILE_STRINGS)}`)}`,
    `Basic ${b64('no-colon')}`,
    `Basic ${b64(':')}`,
    'Basic !!!',
    'Basic ' + 'A'.repeat(9000),
    'Basic',
    'Bearer',
    'Bearer not.a.jwt',
    'Bearer eyJhbGciOiJub25lIn0.eyJzdWIiOiJhZG1pbiJ9.',
    'Bearer ' + 'e'.repeat(5000),
    'Digest username="x"',
    `basic ${b64(`${t.username}:${t.password}`)}`,
  ]);
}

const CONTENT_TYPES = [
  'application/json',
  'application/json; charset=utf-16',
  'text/plain',
  'application/x-www-form-urlencoded',
  'multipart/form-data; boundary=x',
  'application/vnd.oci.image.manifest.v1+json',
  'application/vnd.oci.image.index.v1+json',
  'application/vnd.docker.distribution.manifest.v2+json',
  'application/octet-stream',
  '*/*',
  'nonsense',
];

function body(r: () => number, method: string): string | undefined {
  if (method === 'GET' || method === 'HEAD' || method === 'DELETE') return r() < 0.1 ? jsonValue(r) : undefined;
  const k = r();
  if (k < 0.08) return '['.repeat(10_000) + ']'.repeat(10_000);
  if (k < 0.12) return '{"a":'.repeat(5_000) + '1' + '}'.repeat(5_000);
  if (k < 0.15) return '{"name": "x", "description": "' + 'd'.repeat(200_000) + '"}';
  if (k < 0.2) return pick(r, ['{', '{"a":1,}', 'nul', '"\\ud800"', '\u0000', '{"a":"\\u0000"}', '1e999', '', '[]', 'null']);
  if (k < 0.25) return `grant_type=${encodeLoosely(pick(r, HOSTILE_STRINGS))}&username=%00&password=${pick(r, ['%', '%zz', 'x'])}&scope=repository:${pick(r, HOSTILE_STRINGS)}:pull`;
  if (k < 0.35) {
    // A manifest-shaped document with hostile fields.
    return `{"schemaVersion":${pick(r, ['2', '1', '-1', '1e400', '"2"'])},"mediaType":${jsonValue(r)},"config":{"mediaType":${jsonValue(r)},"digest":${jsonValue(r)},"size":${pick(r, HOSTILE_NUMBERS)}},"layers":[${jsonValue(r)}],"subject":${jsonValue(r)}}`;
  }
  const n = 1 + Math.floor(r() * 6);
  const fields: string[] = [];
  for (let i = 0; i < n; i++) fields.push(`${JSON.stringify(pick(r, FIELDS))}:${jsonValue(r)}`);
  return `{${fields.join(',')}}`;
}

/** The `index`-th request of the run seeded with `seed` (the same seed, the same requests). */
export function* malformedRequests(seed: number, count: number, t: FuzzTarget): Generator<FuzzRequest> {
  const r = rng(seed);
  const ns = t.repository.split('/')[0]!;
  for (let i = 0; i < count; i++) {
    const [method, template] = pick(r, ROUTES);
    const path =
      template
        .replace('{repo}', t.repository)
        .replace('{ns}', ns)
        .replace(/\{x\}/g, () => segment(r)) + queryString(r);
    const headers: Record<string, string> = {};
    const auth = authorization(r, t);
    if (auth) headers.authorization = auth;
    const b = body(r, method);
    if (b !== undefined) headers['content-type'] = pick(r, CONTENT_TYPES);
    if (r() < 0.1) headers['content-range'] = pick(r, ['0-', 'bytes=0-10', '99999999999999999999-1', '5-2', 'x']);
    if (r() < 0.05) headers.range = pick(r, ['bytes=0-', 'bytes=-1', 'bytes=99999999999999999999-', 'lines=1-2']);
    if (r() < 0.05) headers.accept = pick(r, ['*/*', '', 'application/vnd.oci.image.index.v1+json;q=abc', 'x'.repeat(5000)]);
    yield { method, path, headers, ...(b !== undefined ? { body: b } : {}) };
  }
}

/** Sends `count` generated requests to `baseUrl`, `concurrency` at a time. */
export async function fuzz(
  baseUrl: string,
  t: FuzzTarget,
  opts: { count: number; seed: number; concurrency?: number; onProgress?: (sent: number) => void; signal?: AbortSignal },
): Promise<FuzzReport> {
  const report: FuzzReport = { sent: 0, byStatus: {}, serverErrors: [], transportErrors: [] };
  const gen = malformedRequests(opts.seed, opts.count, t);
  // A pool rather than request(url): the path goes out as generated, dot segments and bad escapes included.
  const pool = new Pool(new URL(baseUrl).origin, { connections: opts.concurrency ?? 8 });
  const worker = async () => {
    for (;;) {
      // Interrupted (Ctrl-C on the command line): stop sending, report what was sent.
      if (opts.signal?.aborted) return;
      const next = gen.next();
      if (next.done) return;
      const req = next.value;
      report.sent++;
      if (opts.onProgress && report.sent % 10_000 === 0) opts.onProgress(report.sent);
      try {
        const res = await pool.request({
          path: req.path,
          method: req.method as 'GET',
          headers: req.headers,
          body: req.body,
          headersTimeout: 30_000,
          bodyTimeout: 30_000,
        });
        const text = req.method === 'HEAD' ? '' : (await res.body.text()).slice(0, 300);
        if (req.method === 'HEAD') await res.body.dump();
        report.byStatus[res.statusCode] = (report.byStatus[res.statusCode] ?? 0) + 1;
        if (res.statusCode >= 500) report.serverErrors.push({ request: { ...req, body: req.body?.slice(0, 200) }, status: res.statusCode, body: text });
      } catch (e) {
        const err = e as { code?: string; message: string };
        // undici refuses some generated requests itself (invalid header or path characters): not sent.
        if (err.code === 'UND_ERR_INVALID_ARG') {
          report.sent--;
          report.byStatus['not sent'] = (report.byStatus['not sent'] ?? 0) + 1;
          continue;
        }
        report.transportErrors.push({ request: { ...req, body: req.body?.slice(0, 200) }, error: `${err.code ?? ''} ${err.message}` });
      }
    }
  };
  try {
    await Promise.all(Array.from({ length: opts.concurrency ?? 8 }, worker));
  } finally {
    await pool.close();
  }
  return report;
}

async function main(): Promise<void> {
  const arg = (name: string, dflt: number) => {
    const i = process.argv.indexOf(`--${name}`);
    return i > 0 ? Number(process.argv[i + 1]) : dflt;
  };
  const count = arg('requests', 100_000);
  const seed = arg('seed', 1);
  const concurrency = arg('concurrency', 8);
  const [{ startEphemeralStack }, { loadConfig }, { startApi }, { createUser }, { createRepository }] = await Promise.all([
    import('../devstack/ephemeral.ts'),
    import('../config.ts'),
    import('../api/server.ts'),
    import('../auth/accounts.ts'),
    import('../registry/repositories.ts'),
  ]);
  const eph = await startEphemeralStack({ name: 'fuzz' });
  const target: FuzzTarget = { username: 'fuzzer', password: 'fuzz-password-1', repository: 'fuzzer/target' };
  try {
    // Junk credentials from one address would soon throttle every login (429) and hide the
    // handlers behind it: the per-address limit is off here (test/security-throttle.test.ts
    // covers it).
    const config = loadConfig(eph.env({ PORT: '0', HOST: '127.0.0.1', LOG_LEVEL: 'fatal', MERIDIAN_SUPERUSERS: 'fuzzer', MERIDIAN_LOGIN_MAX_FAILURES_PER_ADDRESS: '0' }));
    const api = await startApi(config);
    try {
      await api.services.db.transaction((tx) => createUser(tx, { username: target.username, password: target.password }));
      await createRepository(api.services.db, { fullName: target.repository });
      const started = Date.now();
      const interrupted = new AbortController();
      process.once('SIGINT', () => {
        console.error('fuzz: interrupted; reporting what was sent');
        interrupted.abort();
      });
      const report = await fuzz(api.url, target, { count, seed, concurrency, signal: interrupted.signal, onProgress: (n) => console.error(`fuzz: ${n} sent`) });
      const alive = await request(`${api.url}/v2/`).then(
        async (r) => (await r.body.dump(), r.statusCode === 401),
        () => false,
      );
      console.log(`requests sent: ${report.sent} in ${((Date.now() - started) / 1000).toFixed(1)} s (seed ${seed})${interrupted.signal.aborted ? ` — interrupted before ${count}` : ''}`);
      console.log('answers by status:');
      for (const [status, n] of Object.entries(report.byStatus).sort()) console.log(`  ${status}: ${n}`);
      console.log(`5xx: ${report.serverErrors.length}`);
      for (const e of report.serverErrors) console.log(`  ${e.status} ${e.request.method} ${e.request.path} ${JSON.stringify(e.request.headers)} ${e.request.body ?? ''} → ${e.body}`);
      console.log(`transport errors: ${report.transportErrors.length}`);
      for (const e of report.transportErrors.slice(0, 50)) console.log(`  ${e.request.method} ${e.request.path}: ${e.error}`);
      console.log(`server alive afterwards: ${alive ? 'yes' : 'NO'}`);
      process.exitCode = report.serverErrors.length === 0 && report.transportErrors.length === 0 && alive && !interrupted.signal.aborted ? 0 : 1;
    } finally {
      await api.close();
    }
  } finally {
    await eph.destroy();
  }
}

if (import.meta.url === `file://${process.argv[1]}`) {
  main().catch((e: unknown) => {
    console.error(e);
    process.exit(1);
  });
}
