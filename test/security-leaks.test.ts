// Issue 10 item 7: smaller leaks. Admin-only endpoints answer 404 to those who may not see the
// repository; proxy credentials are masked and sealed at rest; failed queries are logged without
// their parameters; /metrics behind a bearer token or on a listener of its own; a client trickling
// a body does not keep its socket.
import { connect } from 'node:net';
import { Writable } from 'node:stream';
import { eq, sql } from 'drizzle-orm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createRobot, namespaceByName, userByName } from '../auth/accounts.ts';
import { mirrorConfigs, repositoryPermissions } from '../db/schema.ts';
import { openProxySettings } from '../mirror/proxy-secrets.ts';
import { createLogger } from '../platform/logger.ts';
import { createRepository, type Repository } from '../registry/repositories.ts';
import { createTestUser, startTestApi } from './support/harness.ts';
import { mirrorConfig } from './support/mirror-config.ts';

type Api = Awaited<ReturnType<typeof startTestApi>>;
type User = Awaited<ReturnType<typeof createTestUser>>;

describe('leaks', () => {
  let api: Api;
  let owner: User;
  let reader: User;
  let stranger: User;
  let repo: Repository;
  let robotName: string;

  beforeAll(async () => {
    api = await startTestApi({ MERIDIAN_REQUEST_TIMEOUT: '2' });
    [owner, reader, stranger] = await Promise.all([createTestUser('leak-owner'), createTestUser('leak-reader'), createTestUser('leak-stranger')]);
    const s = api.services;
    repo = await createRepository(s.db, { fullName: `${owner.username}/private` });
    const readerRow = (await userByName(s.db, reader.username))!;
    await s.db.insert(repositoryPermissions).values({ repositoryId: repo.id, userId: readerRow.id, role: 'read' });
    const ns = (await namespaceByName(s.db, owner.username))!;
    robotName = (await s.db.transaction((tx) => createRobot(tx, { namespace: ns, shortName: 'mirror' }))).name;
  });
  afterAll(async () => api?.close());

  const call = (method: string, path: string, authorization: string, body?: unknown) =>
    fetch(`${api.url}/api/v1${path}`, {
      method,
      headers: { authorization, 'content-type': 'application/json' },
      body: body === undefined ? undefined : JSON.stringify(body),
    });

  it("admin-only endpoints answer an outsider 404 for a private repository, as for a missing one; a reader gets 403", async () => {
    const r = repo.fullName;
    const missing = `${owner.username}/no-such-repo`;
    const endpoints: [string, (name: string) => string, unknown?][] = [
      ['GET', (n) => `/repository/${n}/mirror`],
      ['POST', (n) => `/repository/${n}/mirror/sync-now`],
      ['GET', (n) => `/repository/${n}/permissions/user/`],
      ['PUT', (n) => `/repository/${n}/permissions/user/${stranger.username}`, { role: 'admin' }],
      ['POST', (n) => `/repository/${n}/changevisibility`, { visibility: 'public' }],
      ['PUT', (n) => `/repository/${n}/changestate`, { state: 'READ_ONLY' }],
      ['GET', (n) => `/repository/${n}/notification/`],
      ['DELETE', (n) => `/repository/${n}`],
    ];
    for (const [method, path, body] of endpoints) {
      const outsider = await call(method, path(r), stranger.authorization, body);
      const absent = await call(method, path(missing), stranger.authorization, body);
      expect([method, path(r), outsider.status]).toEqual([method, path(r), 404]);
      expect(absent.status).toBe(404);
      const [a, b] = [(await outsider.json()) as { error_type: string; detail: string }, (await absent.json()) as { error_type: string; detail: string }];
      expect(a.error_type).toBe(b.error_type);
      expect(a.detail.replace(r, 'X')).toBe(b.detail.replace(missing, 'X'));
      expect((await call(method, path(r), reader.authorization, body)).status).toBe(403);
    }
    // Nothing was changed by the refusals.
    expect(((await (await call('GET', `/repository/${r}`, owner.authorization)).json()) as { is_public: boolean }).is_public).toBe(false);
  });

  it('proxy credentials are masked in GET …/mirror, sealed at rest, kept by a GET → PUT round trip, and dropped when the proxy changes', async () => {
    const mirror = `/repository/${repo.fullName}/mirror`;
    const created = await call(
      'POST',
      mirror,
      owner.authorization,
      mirrorConfig(robotName, 'registry.example.com/library/nginx', {
        external_registry_config: { proxy: { https_proxy: 'http://puser:proxy-pw-9f3@proxy.example.com:3128', http_proxy: 'http://open.example.com:8080' } },
      }),
    );
    expect(created.status).toBe(201);
    const shown = await call('GET', mirror, owner.authorization);
    const text = await shown.text();
    expect(text).not.toContain('proxy-pw-9f3');
    const view = JSON.parse(text) as { external_registry_config: { proxy: Record<string, string | null> } } & Record<string, unknown>;
    expect(view.external_registry_config.proxy).toEqual({ https_proxy: 'http://puser:***@proxy.example.com:3128/', http_proxy: 'http://open.example.com:8080', no_proxy: null });

    const stored = async () => (await api.services.db.select().from(mirrorConfigs).where(eq(mirrorConfigs.repositoryId, repo.id)))[0]!;
    const row = await stored();
    expect(JSON.stringify(row.proxy)).not.toContain('proxy-pw-9f3');
    expect(openProxySettings(api.services.secrets, repo.id, row.proxy)?.https_proxy).toBe('http://puser:proxy-pw-9f3@proxy.example.com:3128/');
    // Sealed for this repository: it does not open as another's.
    expect(() => openProxySettings(api.services.secrets, repo.id + 1, row.proxy)).toThrow();

    // The GET view sent back unchanged keeps the password.
    expect((await call('PUT', mirror, owner.authorization, view)).status).toBe(201);
    expect(openProxySettings(api.services.secrets, repo.id, (await stored()).proxy)?.https_proxy).toBe('http://puser:proxy-pw-9f3@proxy.example.com:3128/');
    // The mask sent for another proxy: the password is not carried over there.
    const moved = await call('PUT', mirror, owner.authorization, { external_registry_config: { proxy: { https_proxy: 'http://puser:***@elsewhere.example.com:3128' } } });
    expect(moved.status).toBe(400);
    expect(((await moved.json()) as { detail: string }).detail).toMatch(/https_proxy.*password must be given again/);
    // A new proxy without credentials clears the old sealed password.
    expect((await call('PUT', mirror, owner.authorization, { external_registry_config: { proxy: { https_proxy: 'http://elsewhere.example.com:3128' } } })).status).toBe(201);
    expect((await stored()).proxy).toMatchObject({ https_proxy: 'http://elsewhere.example.com:3128', https_proxy_password_enc: null });
  });

  it('proxy passwords a mirror saved in plain before sealing are sealed when an API starts, once', async () => {
    const legacy = await createRepository(api.services.db, { fullName: `${owner.username}/legacy-proxy` });
    const created = await call('POST', `/repository/${legacy.fullName}/mirror`, owner.authorization, mirrorConfig(robotName, 'registry.example.com/library/redis'));
    expect(created.status).toBe(201);
    // The row as the release before sealing wrote it: the passwords inside the URLs.
    const plain = { https_proxy: 'http://puser:old-pw%40x@proxy.example.com:3128', http_proxy: 'http://u2:old-pw-2@proxy2.example.com:8080', no_proxy: '.internal' };
    await api.services.db.update(mirrorConfigs).set({ proxy: plain }).where(eq(mirrorConfigs.repositoryId, legacy.id));
    const stored = async () => (await api.services.db.select().from(mirrorConfigs).where(eq(mirrorConfigs.repositoryId, legacy.id)))[0]!;

    const second = await startTestApi();
    await second.close();
    const sealed = (await stored()).proxy;
    expect(JSON.stringify(sealed)).not.toContain('old-pw');
    expect(sealed).toMatchObject({ https_proxy: 'http://puser@proxy.example.com:3128/', http_proxy: 'http://u2@proxy2.example.com:8080/', no_proxy: '.internal' });
    // The worker opens them as they were typed.
    expect(openProxySettings(api.services.secrets, legacy.id, sealed)).toEqual({
      https_proxy: 'http://puser:old-pw%40x@proxy.example.com:3128/',
      http_proxy: 'http://u2:old-pw-2@proxy2.example.com:8080/',
      no_proxy: '.internal',
    });
    const shown = await (await call('GET', `/repository/${legacy.fullName}/mirror`, owner.authorization)).text();
    expect(shown).not.toContain('old-pw');
    expect(shown).toContain('http://puser:***@proxy.example.com:3128/');

    // Idempotent: the next start leaves the sealed row as it is.
    const third = await startTestApi();
    await third.close();
    expect((await stored()).proxy).toEqual(sealed);
  });

  it('a failed query is logged with its statement, never its parameters', async () => {
    const lines: string[] = [];
    const logger = createLogger('leak-test', 'info', new Writable({ write: (chunk, _e, done) => (lines.push(String(chunk)), done()) }));
    const secret = 'argon2-hash-or-sealed-secret-4b1d';
    const e = await api.services.db.execute(sql`select ${secret}::int as n`).catch((err: unknown) => err);
    expect(e).toBeInstanceOf(Error);
    expect(String((e as Error).message)).toContain(secret); // what Drizzle would have had logged
    logger.error({ err: e }, 'request failed');
    logger.warn({ err: (e as Error).message }, 'round failed');
    const out = lines.join('');
    expect(out).toContain('Failed query: select $1::int as n');
    expect(out).toContain('invalid input syntax for type integer'); // PostgreSQL's reason, in the cause
    expect(out).not.toContain(secret);
  });

  it('/metrics: a bearer token, or a listener of its own (and then not on the API port)', async () => {
    const token = 'metrics-token-0123456789abcdef';
    const [guarded, separate] = await Promise.all([
      startTestApi({ MERIDIAN_METRICS_TOKEN: token }),
      startTestApi({ MERIDIAN_METRICS_ADDRESS: '127.0.0.1:0' }),
    ]);
    try {
      const open = await fetch(`${guarded.url}/metrics`);
      expect(open.status).toBe(401);
      expect(open.headers.get('www-authenticate')).toMatch(/^Bearer/);
      expect((await fetch(`${guarded.url}/metrics`, { headers: { authorization: 'Bearer metrics-token-0123456789abcdeX' } })).status).toBe(401);
      const scraped = await fetch(`${guarded.url}/metrics`, { headers: { authorization: `Bearer ${token}` } });
      expect(scraped.status).toBe(200);
      expect(await scraped.text()).toContain('meridian_outbox_pending');

      expect(separate.metricsUrl).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
      expect((await fetch(`${separate.url}/metrics`)).status).toBe(404);
      expect(await (await fetch(`${separate.metricsUrl}/metrics`)).text()).toContain('meridian_outbox_pending');
      expect((await fetch(`${separate.metricsUrl}/v2/`)).status).toBe(404);
    } finally {
      await Promise.all([guarded.close(), separate.close()]);
    }
  });

  it('a client trickling a body loses its socket after MERIDIAN_REQUEST_TIMEOUT', async () => {
    const url = new URL(api.url);
    const started = Date.now();
    const answer = await new Promise<string>((resolve, reject) => {
      const socket = connect(Number(url.port), url.hostname);
      let received = '';
      let timer: NodeJS.Timeout | undefined;
      socket.on('connect', () => {
        socket.write(`POST /api/v1/repository HTTP/1.1\r\nHost: ${url.host}\r\nAuthorization: ${owner.authorization}\r\nContent-Type: application/json\r\nContent-Length: 60000\r\n\r\n{`);
        timer = setInterval(() => socket.write(' '), 300);
      });
      socket.on('data', (d) => (received += String(d)));
      socket.on('error', () => {});
      socket.on('close', () => {
        clearInterval(timer);
        resolve(received);
      });
      setTimeout(() => {
        socket.destroy();
        reject(new Error(`socket still open after 20 s (received ${JSON.stringify(received)})`));
      }, 20_000).unref();
    });
    const seconds = (Date.now() - started) / 1000;
    expect(answer).toMatch(/^HTTP\/1\.1 408/);
    expect(seconds).toBeGreaterThanOrEqual(1.5);
    expect(seconds).toBeLessThan(15);
  });
});
