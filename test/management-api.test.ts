// The management API under /api/v1, in the shapes of Quay's API.
import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createUser } from '../auth/accounts.ts';
import { basic, createTestUser, startTestApi } from './support/harness.ts';
import { OciClient, sha256 } from './support/oci-client.ts';

type Api = Awaited<ReturnType<typeof startTestApi>>;
type Problem = { type: string; title: string; status: number; detail: string; error_message: string };

describe('management API', () => {
  let api: Api;
  let alice: Awaited<ReturnType<typeof createTestUser>>;
  let bob: Awaited<ReturnType<typeof createTestUser>>;
  const rootName = `root-${randomBytes(3).toString('hex')}`;
  const rootPassword = `pw-${randomBytes(8).toString('hex')}`;
  const org = `acme-${randomBytes(3).toString('hex')}`;

  beforeAll(async () => {
    api = await startTestApi({ MERIDIAN_SUPERUSERS: rootName });
    await api.services.db.transaction((tx) => createUser(tx, { username: rootName, password: rootPassword }));
    alice = await createTestUser('alice');
    bob = await createTestUser('bob');
  });
  afterAll(async () => api?.close());

  async function call(method: string, path: string, auth: string | undefined, body?: unknown): Promise<{ status: number; json: any; type: string | null }> {
    const r = await fetch(`${api.url}/api/v1${path}`, {
      method,
      headers: { ...(auth ? { Authorization: auth } : {}), ...(body === undefined ? {} : { 'Content-Type': 'application/json' }) },
      body: body === undefined ? undefined : typeof body === 'string' ? body : JSON.stringify(body),
    });
    const text = await r.text();
    return { status: r.status, json: text ? JSON.parse(text) : undefined, type: r.headers.get('content-type') };
  }

  it('creates organizations, refusing duplicates and bad names with problem details', async () => {
    expect((await call('POST', '/organization/', alice.authorization, { name: org })).status).toBe(201);
    const dup = await call('POST', '/organization/', bob.authorization, { name: org });
    expect(dup.status).toBe(409);
    expect(dup.type).toContain('application/problem+json');
    expect((dup.json as Problem).error_message).toMatch(/already exists/);
    const bad = await call('POST', '/organization/', alice.authorization, { name: 'Not Valid!' });
    expect(bad.status).toBe(400);
    expect((bad.json as Problem).detail).toMatch(/not a valid name/);
    expect((await call('POST', '/organization/', undefined, { name: 'x1' })).status).toBe(401);
    expect((await call('POST', '/organization/', alice.authorization, '{broken')).status).toBe(400);
    expect((await call('GET', `/organization/${org}`, alice.authorization)).json).toMatchObject({ name: org, is_admin: true });
  });

  it('creates robots as Quay does: name org+short and a token, once', async () => {
    const created = await call('PUT', `/organization/${org}/robots/builder`, alice.authorization, { description: 'CI' });
    expect(created.status).toBe(201);
    expect(created.json).toMatchObject({ name: `${org}+builder`, description: 'CI' });
    expect(created.json.token).toMatch(/^[A-Za-z0-9_-]{40,}$/);
    expect((await call('PUT', `/organization/${org}/robots/builder`, alice.authorization)).json.error_message).toMatch(/Existing robot/);
    expect((await call('PUT', `/organization/${org}/robots/other`, bob.authorization)).status).toBe(403);
    const listed = await call('GET', `/organization/${org}/robots`, alice.authorization);
    expect(listed.json.robots.map((r: { name: string }) => r.name)).toEqual([`${org}+builder`]);
    expect(listed.json.robots[0].token).toBeUndefined();
    // Regenerating the token retires the old one.
    const fresh = await call('POST', `/organization/${org}/robots/builder/regenerate`, alice.authorization);
    expect(fresh.json.token).not.toBe(created.json.token);
    expect((await call('GET', '/user/', basic(`${org}+builder`, created.json.token))).status).toBe(401);
    expect((await call('GET', '/user/', basic(`${org}+builder`, fresh.json.token))).json).toMatchObject({ username: `${org}+builder`, is_robot: true });
    expect((await call('PUT', '/user/robots/mine', alice.authorization)).json.name).toBe(`${alice.username}+mine`);
  });

  it('creates, shows and deletes repositories with Quay field names', async () => {
    const created = await call('POST', '/repository', alice.authorization, { namespace: org, repository: 'web', visibility: 'private', description: 'the site', repo_kind: 'image' });
    expect(created.status).toBe(201);
    expect(created.json).toEqual({ namespace: org, name: 'web', kind: 'image' });
    expect((await call('POST', '/repository', alice.authorization, { namespace: org, repository: 'web', visibility: 'private' })).status).toBe(409);
    expect((await call('POST', '/repository', bob.authorization, { namespace: org, repository: 'nope' })).status).toBe(403);
    expect((await call('POST', '/repository', alice.authorization, { namespace: org, repository: 'x', visibility: 'secret' })).status).toBe(400);
    const shown = await call('GET', `/repository/${org}/web`, alice.authorization);
    expect(shown.json).toMatchObject({ namespace: org, name: 'web', description: 'the site', is_public: false, state: 'NORMAL', can_admin: true, can_write: true });
    expect((await call('GET', `/repository/${org}/web`, bob.authorization)).status).toBe(404);
    expect((await call('POST', '/repository', alice.authorization, { namespace: org, repository: 'team/nested', visibility: 'public' })).status).toBe(201);
    expect((await call('GET', `/repository/${org}/team/nested`, bob.authorization)).json.is_public).toBe(true);
    expect((await call('DELETE', `/repository/${org}/team/nested`, alice.authorization)).status).toBe(204);
    expect((await call('GET', `/repository/${org}/team/nested`, alice.authorization)).status).toBe(404);
  });

  it('grants and revokes permissions to users and robots, which /v2 honours at once', async () => {
    const path = `/repository/${org}/web/permissions/user`;
    expect((await call('PUT', `${path}/${bob.username}`, alice.authorization, { role: 'write' })).json).toEqual({ name: bob.username, role: 'write', is_robot: false });
    expect((await call('PUT', `${path}/${org}+builder`, alice.authorization, { role: 'read' })).json).toEqual({ name: `${org}+builder`, role: 'read', is_robot: true });
    expect((await call('PUT', `${path}/${bob.username}`, alice.authorization, { role: 'owner' })).status).toBe(400);
    expect((await call('PUT', `${path}/nobody-${randomBytes(3).toString('hex')}`, alice.authorization, { role: 'read' })).status).toBe(404);
    expect((await call('PUT', `${path}/${bob.username}`, bob.authorization, { role: 'admin' })).status).toBe(403);
    const listed = await call('GET', `${path}/`, alice.authorization);
    expect(Object.keys(listed.json.permissions).sort()).toEqual([`${org}+builder`, bob.username].sort());

    const bytes = randomBytes(64);
    const bobClient = new OciClient({ baseUrl: api.url, authorization: bob.authorization });
    expect((await bobClient.fetch(`/v2/${org}/web/blobs/uploads/?digest=${sha256(bytes)}`, { method: 'POST', body: bytes })).status).toBe(201);
    expect((await call('DELETE', `${path}/${bob.username}`, alice.authorization)).status).toBe(204);
    expect((await bobClient.fetch(`/v2/${org}/web/blobs/${sha256(bytes)}`, { method: 'HEAD' })).status).toBe(403);
  });

  it('changes a repository to MIRROR state, which refuses pushes with a message saying so', async () => {
    expect((await call('PUT', `/repository/${org}/web/changestate`, bob.authorization, { state: 'MIRROR' })).status).toBe(403);
    expect((await call('PUT', `/repository/${org}/web/changestate`, alice.authorization, { state: 'SIDEWAYS' })).status).toBe(400);
    expect((await call('PUT', `/repository/${org}/web/changestate`, alice.authorization, { state: 'MIRROR' })).status).toBe(200);
    expect((await call('GET', `/repository/${org}/web`, alice.authorization)).json.state).toBe('MIRROR');
    const bytes = randomBytes(64);
    const r = await new OciClient({ baseUrl: api.url, authorization: alice.authorization }).fetch(`/v2/${org}/web/blobs/uploads/?digest=${sha256(bytes)}`, { method: 'POST', body: bytes });
    expect(r.status).toBe(403);
    expect(((await r.json()) as { errors: { code: string; message: string }[] }).errors[0]).toMatchObject({ code: 'DENIED', message: expect.stringMatching(/mirror/) });
    await call('PUT', `/repository/${org}/web/changestate`, alice.authorization, { state: 'NORMAL' });
  });

  it('lets superusers create users, with a generated password when none is given', async () => {
    const root = basic(rootName, rootPassword);
    const name = `made-${randomBytes(3).toString('hex')}`;
    const made = await call('POST', '/superuser/users/', root, { username: name, email: `${name}@example.com` });
    expect(made.status).toBe(201);
    expect(made.json.password).toMatch(/.{16,}/);
    expect((await call('GET', '/user/', basic(name, made.json.password))).json.username).toBe(name);
    expect((await call('POST', '/superuser/users/', alice.authorization, { username: 'x-nope' })).status).toBe(403);
    expect((await call('POST', '/superuser/users/', root, { username: name })).status).toBe(409);
  });

  it('mints API tokens usable as Bearer credentials', async () => {
    const minted = await call('POST', '/user/apptoken', alice.authorization, { title: 'automation' });
    expect(minted.status).toBe(201);
    const bearer = `Bearer ${minted.json.token.token_code}`;
    expect((await call('GET', '/user/', bearer)).json.username).toBe(alice.username);
    expect((await call('GET', '/user/', 'Bearer not-a-token')).status).toBe(401);
  });
});
