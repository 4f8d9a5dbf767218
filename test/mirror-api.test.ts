// The Quay-compatible mirror API and repository notifications over HTTP: field shapes, validation
// (400 with a reason), conflicts, permissions (only repository admins), the write-only password
// sealed at rest, and read-only mirror repositories on /v2.
import { randomBytes } from 'node:crypto';
import { eq } from 'drizzle-orm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { RunningApi } from '../api/server.ts';
import { createRobot, namespaceByName, userByName } from '../auth/accounts.ts';
import { mirrorConfigs, repositories, repositoryPermissions, webhookSubscriptions } from '../db/schema.ts';
import { createMirrorConfig, passwordContext } from '../mirror/config.ts';
import { resealMirrorSecrets } from '../mirror/secrets.ts';
import { secretContext } from '../mirror/webhooks.ts';
import { SecretBox } from '../security/secretbox.ts';
import { createRepository, type Repository } from '../registry/repositories.ts';
import { createTestUser, startTestApi } from './support/harness.ts';
import { OciClient, sha256 } from './support/oci-client.ts';

type User = Awaited<ReturnType<typeof createTestUser>>;

describe('mirror API (Quay-compatible)', () => {
  let api: RunningApi;
  let owner: User;
  let stranger: User;
  let robotName: string;
  let robotToken: string;
  let repo: Repository;

  const call = (path: string, init: { method?: string; body?: unknown; auth?: string } = {}) =>
    fetch(`${api.url}/api/v1/repository/${repo.fullName}${path}`, {
      method: init.method ?? 'GET',
      headers: { 'Content-Type': 'application/json', ...(init.auth === '' ? {} : { Authorization: init.auth ?? owner.authorization }) },
      body: init.body === undefined ? undefined : typeof init.body === 'string' ? init.body : JSON.stringify(init.body),
    });

  const valid = () => ({
    is_enabled: true,
    external_reference: 'registry.example.com/library/nginx',
    external_registry_username: 'puller',
    external_registry_password: 's3cret-upstream-pw',
    sync_interval: 86400,
    sync_start_date: '2030-01-02T03:04:05Z',
    root_rule: { rule_kind: 'tag_glob_csv', rule_value: ['v1.*', 'latest'] },
    robot_username: robotName,
    external_registry_config: { verify_tls: true, unsigned_images: false, proxy: { http_proxy: null, https_proxy: 'http://proxy.example.com:3128', no_proxy: 'internal.example.com' } },
  });

  beforeAll(async () => {
    api = await startTestApi({ MERIDIAN_MIRROR_ALLOWED_HOSTS: '127.0.0.1' });
    owner = await createTestUser('owner');
    stranger = await createTestUser('stranger');
    const s = api.services;
    const ns = (await namespaceByName(s.db, owner.username))!;
    const robot = await s.db.transaction((tx) => createRobot(tx, { namespace: ns, shortName: 'mirror' }));
    robotName = robot.name;
    robotToken = robot.token;
    repo = await createRepository(s.db, { fullName: `${owner.username}/nginx` });
  });

  afterAll(async () => {
    await api?.close();
  });

  it('refuses anonymous callers (401), and answers 404 to those who may not see the private repository, as for a missing one', async () => {
    const anon = await call('/mirror', { auth: '' });
    expect(anon.status).toBe(401);
    expect(anon.headers.get('content-type')).toMatch(/application\/problem\+json/);
    const other = await call('/mirror', { auth: stranger.authorization });
    expect(other.status).toBe(404);
    const body = await other.json();
    expect(body).toMatchObject({ status: 404, error_type: 'not_found' });
    const missing = await fetch(`${api.url}/api/v1/repository/${owner.username}/nope/mirror`, { headers: { Authorization: owner.authorization } });
    expect(missing.status).toBe(404);
  });

  it.each([
    ['external_reference is required', (b: Record<string, unknown>) => delete b.external_reference],
    ['robot_username is required', (b: Record<string, unknown>) => delete b.robot_username],
    ['YYYY-MM-DDTHH:MM:SSZ', (b: Record<string, unknown>) => (b.sync_start_date = '2030-01-02 03:04:05')],
    ['sync_interval', (b: Record<string, unknown>) => (b.sync_interval = 0)],
    ['rule_kind must be "tag_glob_csv"', (b: Record<string, unknown>) => (b.root_rule = { rule_kind: 'regex', rule_value: ['.*'] })],
    ['at least one tag pattern', (b: Record<string, unknown>) => (b.root_rule = { rule_kind: 'tag_glob_csv', rule_value: [] })],
    ['Invalid robot', (b: Record<string, unknown>) => (b.robot_username = 'someoneelse+mirror')],
    ['does not exist', (b: Record<string, unknown>) => (b.robot_username = `${owner.username}+ghost`)],
    ['URL scheme', (b: Record<string, unknown>) => (b.external_reference = 'https://registry.example.com/library/nginx')],
    ['private or reserved address', (b: Record<string, unknown>) => (b.external_reference = '10.1.2.3:5000/library/nginx')],
    ['not allowed', (b: Record<string, unknown>) => (b.external_reference = 'localhost:5000/library/nginx')],
    ['unknown field "colour"', (b: Record<string, unknown>) => (b.colour = 'blue')],
    ['https_proxy must be', (b: Record<string, unknown>) => (b.external_registry_config = { proxy: { https_proxy: 'ftp://x' } })],
    ['without also specifying a username', (b: Record<string, unknown>) => delete b.external_registry_username],
  ])('POST answers 400 with a reason: %s', async (reason, mutate) => {
    const body = valid();
    mutate(body as unknown as Record<string, unknown>);
    const r = await call('/mirror', { method: 'POST', body });
    expect(r.status).toBe(400);
    const problem = (await r.json()) as any;
    expect(problem.detail).toContain(reason);
    expect(problem.error_type).toBe('invalid_request');
  });

  it('POST creates (201, repository set to MIRROR, robot granted write), GET shows Quay\'s fields, a second POST is 409', async () => {
    const bad = await call('/mirror', { method: 'POST', body: '{not json' });
    expect(bad.status).toBe(400);
    const r = await call('/mirror', { method: 'POST', body: valid() });
    expect(r.status).toBe(201);
    const again = await call('/mirror', { method: 'POST', body: valid() });
    expect(again.status).toBe(409);

    const got = await call('/mirror');
    expect(got.status).toBe(200);
    const text = await got.text();
    expect(text).not.toContain('s3cret-upstream-pw');
    const view = JSON.parse(text);
    expect(Object.keys(view).sort()).toEqual(
      [
        'is_enabled', 'mirror_type', 'external_reference', 'external_registry_username', 'external_registry_config', 'sync_interval',
        'sync_start_date', 'sync_expiration_date', 'sync_retries_remaining', 'sync_status', 'root_rule', 'robot_username', 'rollback_on_failure',
      ].sort(),
    );
    expect(view).toEqual({
      is_enabled: true,
      mirror_type: 'PULL',
      external_reference: 'registry.example.com/library/nginx',
      external_registry_username: 'puller',
      external_registry_config: { verify_tls: true, unsigned_images: false, proxy: { http_proxy: null, https_proxy: 'http://proxy.example.com:3128', no_proxy: 'internal.example.com' } },
      sync_interval: 86400,
      sync_start_date: '2030-01-02T03:04:05Z',
      sync_expiration_date: null,
      sync_retries_remaining: 3,
      sync_status: 'NEVER_RUN',
      root_rule: { rule_kind: 'tag_glob_csv', rule_value: ['v1.*', 'latest'] },
      robot_username: robotName,
      rollback_on_failure: false,
    });

    const s = api.services;
    const [row] = await s.db.select().from(mirrorConfigs).where(eq(mirrorConfigs.repositoryId, repo.id));
    // Sealed at rest, bound to its row: it opens with its own context only.
    expect(row!.passwordEnc!.toString('latin1')).not.toContain('s3cret-upstream-pw');
    expect(s.secrets.open(row!.passwordEnc!, passwordContext(repo.id))).toBe('s3cret-upstream-pw');
    expect(() => s.secrets.open(row!.passwordEnc!, passwordContext(repo.id + 1))).toThrow();
    const [state] = await s.db.select({ state: repositories.state }).from(repositories).where(eq(repositories.id, repo.id));
    expect(state!.state).toBe('mirror');
    const [perm] = await s.db.select().from(repositoryPermissions).where(eq(repositoryPermissions.repositoryId, repo.id));
    expect(perm).toMatchObject({ role: 'write' });
  });

  it('PUT changes fields (201 as in Quay), ignores read-only ones, keeps the password unless both are sent', async () => {
    const r = await call('/mirror', {
      method: 'PUT',
      body: { sync_interval: 600, root_rule: { rule_kind: 'tag_glob_csv', rule_value: ['v2.*'] }, sync_status: 'SUCCESS', rollback_on_failure: true, external_registry_config: { verify_tls: false } },
    });
    expect(r.status).toBe(201);
    const view = (await (await call("/mirror")).json()) as any;
    expect(view).toMatchObject({ sync_interval: 600, sync_status: 'NEVER_RUN', rollback_on_failure: true, root_rule: { rule_value: ['v2.*'] } });
    // verify_tls changed, the proxy settings kept.
    expect(view.external_registry_config).toMatchObject({ verify_tls: false, proxy: { https_proxy: 'http://proxy.example.com:3128' } });

    const pwOnly = await call('/mirror', { method: 'PUT', body: { external_registry_password: 'x' } });
    expect(pwOnly.status).toBe(400);
    expect(((await pwOnly.json()) as any).detail).toMatch(/without also specifying a username/);
    const userOnly = await call('/mirror', { method: 'PUT', body: { external_registry_username: 'other' } });
    expect(userOnly.status).toBe(201);
    const [row] = await api.services.db.select().from(mirrorConfigs).where(eq(mirrorConfigs.repositoryId, repo.id));
    expect(api.services.secrets.open(row!.passwordEnc!, passwordContext(repo.id))).toBe('s3cret-upstream-pw');
    const both = await call('/mirror', { method: 'PUT', body: { external_registry_username: 'other', external_registry_password: null } });
    expect(both.status).toBe(201);
    const [cleared] = await api.services.db.select().from(mirrorConfigs).where(eq(mirrorConfigs.repositoryId, repo.id));
    expect(cleared!.passwordEnc).toBeNull();
    const empty = await call('/mirror', { method: 'PUT', body: { external_reference: '' } });
    expect(empty.status).toBe(400);
  });

  it('sync-now (204; 404 while syncing), sync-cancel (404 when nothing runs), run history', async () => {
    expect((await call('/mirror/sync-cancel', { method: 'POST' })).status).toBe(404);
    expect((await call('/mirror/sync-now', { method: 'POST' })).status).toBe(204);
    expect(((await (await call('/mirror')).json()) as any).sync_status).toBe('SYNC_NOW');
    expect((await call('/mirror/sync-cancel', { method: 'POST' })).status).toBe(204);
    const cancelled = await (await call('/mirror')).json();
    expect(cancelled).toMatchObject({ sync_status: 'CANCEL', sync_retries_remaining: 0 });
    await api.services.db.update(mirrorConfigs).set({ syncStatus: 'SYNCING' }).where(eq(mirrorConfigs.repositoryId, repo.id));
    expect((await call('/mirror/sync-now', { method: 'POST' })).status).toBe(404);
    const runs = await call('/mirror/runs');
    expect(runs.status).toBe(200);
    expect(await runs.json()).toEqual({ runs: [] });
    expect((await call('/mirror/runs?limit=0')).status).toBe(400);
    expect((await call('/mirror/sync-now')).status).toBe(405);
    expect((await call('/mirror', { auth: stranger.authorization, method: 'POST', body: {} })).status).toBe(404);
  });

  it('the rollback default comes from configuration (MERIDIAN_REPO_MIRROR_ROLLBACK)', async () => {
    const s = api.services;
    const other = await createRepository(s.db, { fullName: `${owner.username}/rollback-default` });
    const { external_registry_password: _p, external_registry_username: _u, ...body } = valid();
    await createMirrorConfig({ db: s.db, secrets: s.secrets, config: { mirrorRollbackDefault: true, mirrorAllowedHosts: [] } }, other, body);
    const [row] = await s.db.select().from(mirrorConfigs).where(eq(mirrorConfigs.repositoryId, other.id));
    expect(row!.rollbackOnFailure).toBe(true);
  });

  it('notifications: create returns the signing secret once, list and get never do, delete', async () => {
    const bad = await call('/notification/', { method: 'POST', body: { event: 'repo_push', method: 'webhook', config: { url: 'http://127.0.0.1:9/x' } } });
    expect(bad.status).toBe(400);
    const badUrl = await call('/notification/', { method: 'POST', body: { event: 'repo_mirror_sync_failed', method: 'webhook', config: { url: 'http://169.254.169.254/latest' } } });
    expect(badUrl.status).toBe(400);
    const created = await call('/notification/', {
      method: 'POST',
      body: { event: 'repo_mirror_sync_failed', method: 'webhook', config: { url: 'http://127.0.0.1:9/hook' }, title: 'failures' },
    });
    expect(created.status).toBe(201);
    const n = (await created.json()) as any;
    expect(n).toMatchObject({ event: 'repo_mirror_sync_failed', method: 'webhook', config: { url: 'http://127.0.0.1:9/hook' }, title: 'failures', number_of_failures: 0 });
    expect(n.signing_secret).toMatch(/^mwhsec_/);
    const list = await (await call('/notification/')).text();
    expect(list).not.toContain(n.signing_secret);
    expect(JSON.parse(list).notifications).toHaveLength(1);
    const one = await call(`/notification/${n.uuid}`);
    expect(await one.json()).not.toHaveProperty('signing_secret');
    const [row] = await api.services.db.select().from(webhookSubscriptions).where(eq(webhookSubscriptions.id, n.uuid));
    expect(row!.secretEnc.toString('latin1')).not.toContain(n.signing_secret);
    expect((await call(`/notification/${n.uuid}`, { auth: stranger.authorization })).status).toBe(404);
    expect((await call(`/notification/${n.uuid}`, { method: 'DELETE' })).status).toBe(204);
    expect((await call(`/notification/${n.uuid}`)).status).toBe(404);
  });

  it('a mirrored repository refuses pushes from a user with write permission; its robot may push', async () => {
    const s = api.services;
    const writer = await createTestUser('writer');
    const writerRow = (await userByName(s.db, writer.username))!;
    await s.db.insert(repositoryPermissions).values({ repositoryId: repo.id, userId: writerRow.id, role: 'write' });
    const blob = randomBytes(512);
    const asWriter = new OciClient({ baseUrl: api.url, authorization: writer.authorization });
    const denied = await asWriter.fetch(`/v2/${repo.fullName}/blobs/uploads/?digest=${sha256(blob)}`, { method: 'POST', body: blob });
    expect(denied.status).toBe(403);
    const err = (await denied.json()) as any;
    expect(err.errors[0].code).toBe('DENIED');
    expect(err.errors[0].message).toMatch(/mirror/i);
    const asRobot = new OciClient({ baseUrl: api.url, authorization: `Basic ${Buffer.from(`${robotName}:${robotToken}`).toString('base64')}` });
    const allowed = await asRobot.fetch(`/v2/${repo.fullName}/blobs/uploads/?digest=${sha256(blob)}`, { method: 'POST', body: blob });
    expect(allowed.status).toBe(201);
    // Pulls follow normal permissions: the writer can read.
    const pulled = await asWriter.pullBlob(repo.fullName, sha256(blob));
    expect(pulled.status).toBe(200);
  });

  it('re-seals upstream passwords and webhook secrets with a new key (secrets rotate)', async () => {
    const s = api.services;
    const fresh = await createRepository(s.db, { fullName: `${owner.username}/rotate-${randomBytes(3).toString('hex')}` });
    const oldKey = randomBytes(32);
    const newKey = randomBytes(32);
    const oldBox = new SecretBox(oldKey);
    await createMirrorConfig({ db: s.db, secrets: oldBox, config: { mirrorRollbackDefault: false, mirrorAllowedHosts: [] } }, fresh, valid());
    const { createSubscription } = await import('../mirror/webhooks.ts');
    const { UpstreamHostPolicy } = await import('../mirror/reference.ts');
    const { row: sub, secret } = await createSubscription({ db: s.db, secrets: oldBox, policy: new UpstreamHostPolicy(['127.0.0.1']) }, fresh, {
      event: 'repo_mirror_sync_success',
      method: 'webhook',
      config: { url: 'http://127.0.0.1:9/x' },
    });
    const rotating = new SecretBox(newKey, oldKey);
    const result = await resealMirrorSecrets(s.db, rotating);
    expect(result.mirrorPasswords).toBeGreaterThanOrEqual(1);
    expect(result.webhookSecrets).toBeGreaterThanOrEqual(1);
    // Only the new key is needed afterwards.
    const onlyNew = new SecretBox(newKey);
    const [cfg] = await s.db.select().from(mirrorConfigs).where(eq(mirrorConfigs.repositoryId, fresh.id));
    expect(onlyNew.open(cfg!.passwordEnc!, passwordContext(fresh.id))).toBe('s3cret-upstream-pw');
    const [row] = await s.db.select().from(webhookSubscriptions).where(eq(webhookSubscriptions.id, sub.id));
    expect(onlyNew.open(row!.secretEnc, secretContext(sub.id))).toBe(secret);
    // Rows sealed with a key nobody has any more are reported, not lost.
    expect(result.failed.every((f) => /^(mirror_configs|webhook_subscriptions) /.test(f))).toBe(true);
  });
});
