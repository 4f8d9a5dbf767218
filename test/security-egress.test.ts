// Issue 10 items 1–3 and the egress module: every spelling of a private address is refused for
// mirror upstreams, proxies and webhooks when saved (over HTTP), IP literals are refused when
// dialled (they never pass through a DNS lookup), proxies are checked when dialled, and pointing a
// mirror at another registry drops the stored credentials unless they are given again.
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { eq } from 'drizzle-orm';
import { request } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { RunningApi } from '../api/server.ts';
import { createRobot, namespaceByName } from '../auth/accounts.ts';
import { mirrorConfigs } from '../db/schema.ts';
import { passwordContext } from '../mirror/config.ts';
import { parseReference } from '../mirror/reference.ts';
import { UpstreamClient } from '../mirror/upstream.ts';
import { createRepository, type Repository } from '../registry/repositories.ts';
import { canonicalHost, checkedAgent, checkedProxyAgent, EgressPolicy, EgressRefused } from '../security/egress.ts';
import { createTestUser, startTestApi } from './support/harness.ts';

/** 169.254.169.254, 127.0.0.1 and other private addresses, written every way a URL parser accepts. */
const PRIVATE_HOSTS = [
  '2852039166', // 169.254.169.254 as one decimal number
  '0xa9fea9fe', // hex
  '0xA9.0xFE.0xA9.0xFE',
  '0251.0376.0251.0376', // octal
  '169.254.43518', // short forms
  '10.1',
  '127.1',
  '0',
  '0x7f000001',
  '017700000001',
  '[::ffff:a9fe:a9fe]', // IPv4-mapped IPv6
  '[::ffff:127.0.0.1]',
  '[::1]',
  '[::]',
  '[0:0:0:0:0:0:0:1]',
  '[fe80::1]',
  '[fd00::1]',
  '[64:ff9b::a9fe:a9fe]', // NAT64
  '[2002:a9fe:a9fe::1]', // 6to4
  '127.0.0.1.', // trailing dot
  'localhost',
  'localhost.',
  'LOCALHOST',
  'metadata.google.internal.',
];

describe('egress policy over HTTP', () => {
  let api: RunningApi;
  let owner: Awaited<ReturnType<typeof createTestUser>>;
  let robotName: string;
  let repo: Repository;

  const call = (path: string, init: { method?: string; body?: unknown } = {}) =>
    fetch(`${api.url}/api/v1/repository/${repo.fullName}${path}`, {
      method: init.method ?? 'GET',
      headers: { 'Content-Type': 'application/json', Authorization: owner.authorization },
      body: init.body === undefined ? undefined : JSON.stringify(init.body),
    });
  const mirrorBody = (overrides: Record<string, unknown> = {}) => ({
    is_enabled: true,
    external_reference: 'registry.example.com/library/nginx',
    external_registry_username: 'puller',
    external_registry_password: 'typed-for-registry-example',
    sync_interval: 86400,
    sync_start_date: '2030-01-02T03:04:05Z',
    root_rule: { rule_kind: 'tag_glob_csv', rule_value: ['latest'] },
    robot_username: robotName,
    ...overrides,
  });

  beforeAll(async () => {
    api = await startTestApi({ MERIDIAN_MIRROR_ALLOWED_HOSTS: '' });
    owner = await createTestUser('egress');
    const s = api.services;
    const ns = (await namespaceByName(s.db, owner.username))!;
    robotName = (await s.db.transaction((tx) => createRobot(tx, { namespace: ns, shortName: 'mirror' }))).name;
    repo = await createRepository(s.db, { fullName: `${owner.username}/egress` });
  });

  afterAll(async () => {
    await api?.close();
  });

  it.each(PRIVATE_HOSTS)('refuses the mirror upstream %s (400)', async (host) => {
    const r = await call('/mirror', { method: 'POST', body: mirrorBody({ external_reference: `${host}/a/b` }) });
    expect(r.status).toBe(400);
  });

  it.each(PRIVATE_HOSTS)('refuses the proxy http://%s:6379 (400)', async (host) => {
    const proxy = { http_proxy: `http://${host}:6379`, https_proxy: null, no_proxy: null };
    const r = await call('/mirror', { method: 'POST', body: mirrorBody({ external_registry_config: { proxy } }) });
    expect(r.status).toBe(400);
  });

  it.each(PRIVATE_HOSTS)('refuses the webhook http://%s/latest (400)', async (host) => {
    const r = await call('/notification/', { method: 'POST', body: { event: 'repo_mirror_sync_failed', method: 'webhook', config: { url: `http://${host}/latest` } } });
    expect(r.status).toBe(400);
  });

  it('changing the upstream registry drops the stored credentials unless they are given again', async () => {
    const row = async () => (await api.services.db.select().from(mirrorConfigs).where(eq(mirrorConfigs.repositoryId, repo.id)))[0]!;
    const password = async () => {
      const r = await row();
      return r.passwordEnc ? api.services.secrets.open(r.passwordEnc, passwordContext(repo.id)) : null;
    };
    expect((await call('/mirror', { method: 'POST', body: mirrorBody() })).status).toBe(201);
    expect(await password()).toBe('typed-for-registry-example');
    // Another repository on the same registry: the credentials stay.
    expect((await call('/mirror', { method: 'PUT', body: { external_reference: 'registry.example.com/library/redis' } })).status).toBe(201);
    expect(await password()).toBe('typed-for-registry-example');
    // Another registry: they are dropped (the repository admin may not be who typed them).
    expect((await call('/mirror', { method: 'PUT', body: { external_reference: 'attacker.example.net/library/redis' } })).status).toBe(201);
    expect(await password()).toBeNull();
    const view = (await (await call('/mirror')).json()) as { external_registry_username: string | null };
    expect(view.external_registry_username).toBeNull();
    // Given again with the new registry, they are kept.
    const both = { external_reference: 'registry.example.com/library/nginx', external_registry_username: 'puller', external_registry_password: 'typed-again' };
    expect((await call('/mirror', { method: 'PUT', body: both })).status).toBe(201);
    expect(await password()).toBe('typed-again');
    expect((await row()).username).toBe('puller');
    // A different port is a different registry.
    expect((await call('/mirror', { method: 'PUT', body: { external_reference: 'registry.example.com:5000/library/nginx' } })).status).toBe(201);
    expect(await password()).toBeNull();
  });
});

describe('egress checks when dialling', () => {
  let server: Server;
  let port: number;
  let hits = 0;

  beforeAll(async () => {
    server = createServer((req, res) => {
      hits++;
      res.writeHead(200, { 'content-type': 'application/json' }).end('{}');
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    port = (server.address() as AddressInfo).port;
  });

  afterAll(async () => {
    server.closeAllConnections();
    await new Promise((r) => server.close(r));
  });

  it('canonicalises every IPv4 spelling the URL parser accepts', () => {
    expect(canonicalHost('2852039166')).toBe('169.254.169.254');
    expect(canonicalHost('0251.0376.0251.0376')).toBe('169.254.169.254');
    expect(canonicalHost('169.254.43518')).toBe('169.254.169.254');
    expect(canonicalHost('0')).toBe('0.0.0.0');
    expect(canonicalHost('[::FFFF:A9FE:A9FE]')).toBe('::ffff:a9fe:a9fe');
    expect(canonicalHost('Registry.Example.COM.')).toBe('registry.example.com');
  });

  it('refuses an IP literal at connection time, in any spelling (no DNS lookup happens for it)', async () => {
    const before = hits;
    for (const host of ['127.0.0.1', '0x7f000001', '2130706433', '127.1', '[::ffff:127.0.0.1]']) {
      const agent = checkedAgent(new EgressPolicy());
      try {
        await expect(request(`http://${host}:${port}/`, { dispatcher: agent }), host).rejects.toBeInstanceOf(EgressRefused);
      } finally {
        await agent.close();
      }
    }
    expect(hits).toBe(before);
    // Allowed by the operator, the same connection goes through (the check is what refused it).
    const allowed = checkedAgent(new EgressPolicy(['127.0.0.1']));
    try {
      const r = await request(`http://0x7f000001:${port}/`, { dispatcher: allowed });
      await r.body.dump();
      expect(r.statusCode).toBe(200);
    } finally {
      await allowed.close();
    }
  });

  it('refuses a proxy in the registry network at connection time, and never connects to it', async () => {
    expect(() => checkedProxyAgent(new EgressPolicy(), `http://0x7f000001:${port}`)).toThrow(EgressRefused);
    expect(() => checkedProxyAgent(new EgressPolicy(), `http://localhost.:${port}`)).toThrow(EgressRefused);
    const before = hits;
    // A mirror whose stored proxy points at a loopback port (saved before the check, or by SQL).
    const client = new UpstreamClient({
      reference: parseReference('registry.example.com/library/nginx'),
      username: 'u',
      password: 'p',
      verifyTls: true,
      policy: new EgressPolicy(),
      proxy: { http_proxy: `http://2130706433:${port}`, https_proxy: `http://2130706433:${port}`, no_proxy: null },
    });
    try {
      await expect(client.listTags()).rejects.toMatchObject({ kind: 'refused' });
    } finally {
      await client.close();
    }
    expect(hits).toBe(before);
  });
});
