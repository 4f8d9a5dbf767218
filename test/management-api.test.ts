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
    // Quay's answer to a taken name, word for word: scripts compare it to be idempotent.
    const dup = await call('POST', '/organization/', bob.authorization, { name: org });
    expect(dup.status).toBe(400);
    expect(dup.type).toContain('application/problem+json');
    expect(dup.json).toMatchObject({
      status: 400,
      title: 'invalid_request',
      detail: 'A user or organization with this name already exists',
      error_message: 'A user or organization with this name already exists',
      message: 'A user or organization with this name already exists',
    });
    expect((dup.json as Problem).type).toMatch(/^http/);
    expect((await call('POST', '/organization/', alice.authorization, { name: bob.username })).json.error_message).toBe('A user or organization with this name already exists');
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
    const again = await call('PUT', `/organization/${org}/robots/builder`, alice.authorization);
    expect(again.status).toBe(400);
    expect(again.json.message).toBe(`Existing robot with name: ${org}+builder`);
    expect(again.json.token).toBeUndefined();
    expect((await call('GET', `/organization/${org}/robots/builder`, alice.authorization)).json).toMatchObject({ name: `${org}+builder`, description: 'CI' });
    expect((await call('PUT', `/organization/${org}/robots/Bad-Name`, alice.authorization)).status).toBe(400);
    expect((await call('PUT', `/organization/${org}/robots/other`, bob.authorization)).status).toBe(403);
    const listed = await call('GET', `/organization/${org}/robots`, alice.authorization);
    expect(listed.json.robots.map((r: { name: string }) => r.name)).toEqual([`${org}+builder`]);
    expect(listed.json.robots[0].token).toBeUndefined();
    // Regenerating the token retires the old one.
    const fresh = await call('POST', `/organization/${org}/robots/builder/regenerate`, alice.authorization);
    expect(fresh.json.token).not.toBe(created.json.token);
    expect((await call('GET', '/user/', basic(`${org}+builder`, created.json.token))).status).toBe(401);
    expect((await call('GET', '/user/', basic(`${org}+builder`, fresh.json.token))).json).toMatchObject({ username: `${org}+builder`, is_robot: true });
    const mine = await call('PUT', '/user/robots/mine', alice.authorization);
    expect(mine.status).toBe(201);
    expect(mine.json.name).toBe(`${alice.username}+mine`);
    expect((await call('GET', '/user/robots/mine', alice.authorization)).json.name).toBe(`${alice.username}+mine`);
    const mineAgain = await call('POST', '/user/robots/mine/regenerate', alice.authorization);
    expect((await call('GET', '/user/', basic(`${alice.username}+mine`, mine.json.token))).status).toBe(401);
    expect((await call('GET', '/user/', basic(`${alice.username}+mine`, mineAgain.json.token))).status).toBe(200);
    expect((await call('DELETE', '/user/robots/mine', alice.authorization)).status).toBe(204);
    expect((await call('GET', '/user/robots/mine', alice.authorization)).status).toBe(404);
    expect((await call('DELETE', `/organization/${org}/robots/builder`, bob.authorization)).status).toBe(403);
  });

  it('creates, shows and deletes repositories with Quay field names', async () => {
    const created = await call('POST', '/repository', alice.authorization, { namespace: org, repository: 'web', visibility: 'private', description: 'the site', repo_kind: 'image' });
    expect(created.status).toBe(201);
    expect(created.json).toEqual({ namespace: org, name: 'web', kind: 'image' });
    const dup = await call('POST', '/repository', alice.authorization, { namespace: org, repository: 'web', visibility: 'private' });
    expect(dup.status).toBe(400);
    expect(dup.json.error_message).toBe('Repository already exists');
    expect((await call('POST', '/repository', alice.authorization, { namespace: org, repository: 'Bad Name', visibility: 'private' })).status).toBe(400);
    expect((await call('POST', '/repository', alice.authorization, { namespace: org })).json.detail).toBe('repository is required');
    // The namespace defaults to the caller's own, as in Quay.
    expect((await call('POST', '/repository', alice.authorization, { repository: 'mine', visibility: 'private', description: '' })).json).toEqual({ namespace: alice.username, name: 'mine', kind: 'image' });
    expect((await call('POST', '/repository', bob.authorization, { namespace: org, repository: 'nope' })).status).toBe(403);
    expect((await call('POST', '/repository', alice.authorization, { namespace: org, repository: 'x', visibility: 'secret' })).status).toBe(400);
    const shown = await call('GET', `/repository/${org}/web`, alice.authorization);
    expect(shown.json).toMatchObject({ namespace: org, name: 'web', kind: 'image', description: 'the site', is_public: false, is_organization: true, state: 'NORMAL', can_admin: true, can_write: true, tags: {} });
    expect((await call('GET', `/repository/${org}/web`, bob.authorization)).status).toBe(404);
    expect((await call('GET', `/repository/${org}/web`, undefined)).status).toBe(401);
    expect((await call('GET', `/repository/${org}/web`, basic(alice.username, 'wrong'))).status).toBe(401);
    expect((await call('POST', '/repository', alice.authorization, { namespace: org, repository: 'team/nested', visibility: 'public' })).status).toBe(201);
    expect((await call('GET', `/repository/${org}/team/nested`, bob.authorization)).json).toMatchObject({ is_public: true, can_write: false, can_admin: false });
    // Anyone may read a public repository, as in Quay; nobody else may delete it.
    expect((await call('GET', `/repository/${org}/team/nested`, undefined)).json.is_public).toBe(true);
    expect((await call('DELETE', `/repository/${org}/team/nested`, bob.authorization)).status).toBe(403);
    expect((await call('DELETE', `/repository/${org}/team/nested`, undefined)).status).toBe(401);
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
    // A body-less HEAD: 401 insufficient_scope (not 403), so that clients fetch a token and say why.
    const head = await bobClient.fetch(`/v2/${org}/web/blobs/${sha256(bytes)}`, { method: 'HEAD' });
    expect(head.status).toBe(401);
    expect(head.headers.get('www-authenticate')).toMatch(/error="insufficient_scope"/);
  });

  it('changes a repository to MIRROR state, which refuses pushes with a message saying so', async () => {
    // Bob lost his permission above: he may not even see the private repository (404, not 403).
    expect((await call('PUT', `/repository/${org}/web/changestate`, bob.authorization, { state: 'MIRROR' })).status).toBe(404);
    expect((await call('PUT', `/repository/${org}/web/changestate`, alice.authorization, { state: 'SIDEWAYS' })).status).toBe(400);
    expect((await call('PUT', `/repository/${org}/web/changestate`, alice.authorization, { state: 'MIRROR' })).status).toBe(200);
    // Quay: can_write is false for anything but a NORMAL repository, even for its admins.
    expect((await call('GET', `/repository/${org}/web`, alice.authorization)).json).toMatchObject({ state: 'MIRROR', can_write: false, can_admin: true });
    const bytes = randomBytes(64);
    const r = await new OciClient({ baseUrl: api.url, authorization: alice.authorization }).fetch(`/v2/${org}/web/blobs/uploads/?digest=${sha256(bytes)}`, { method: 'POST', body: bytes });
    expect(r.status).toBe(403);
    expect(((await r.json()) as { errors: { code: string; message: string }[] }).errors[0]).toEqual({ code: 'DENIED', message: `${org}/web is a mirrored repository; only its mirror robot may write` });
    await call('PUT', `/repository/${org}/web/changestate`, alice.authorization, { state: 'READ_ONLY' });
    expect((await call('GET', `/repository/${org}/web`, alice.authorization)).json.state).toBe('READ_ONLY');
    await call('PUT', `/repository/${org}/web/changestate`, alice.authorization, { state: 'NORMAL' });
    expect((await new OciClient({ baseUrl: api.url, authorization: alice.authorization }).fetch(`/v2/${org}/web/blobs/uploads/?digest=${sha256(bytes)}`, { method: 'POST', body: bytes })).status).toBe(201);
  });

  it('lets superusers create users, with a generated password when none is given', async () => {
    const root = basic(rootName, rootPassword);
    const name = `made-${randomBytes(3).toString('hex')}`;
    const made = await call('POST', '/superuser/users/', root, { username: name, email: `${name}@example.com` });
    // 200 with username, email and the generated password, as Quay answers.
    expect(made.status).toBe(200);
    expect(made.json).toMatchObject({ username: name, email: `${name}@example.com` });
    expect(made.json.password).toMatch(/.{16,}/);
    expect((await call('GET', '/user/', basic(name, made.json.password))).json.username).toBe(name);
    // A given password is used and never echoed.
    const chosen = await call('POST', '/superuser/users/', root, { username: `${name}-b`, password: 'chosen-password-1' });
    expect(chosen.json.password).toBeUndefined();
    expect((await call('GET', '/user/', basic(`${name}-b`, 'chosen-password-1'))).status).toBe(200);
    expect((await call('POST', '/superuser/users/', alice.authorization, { username: 'x-nope' })).status).toBe(403);
    expect((await call('POST', '/superuser/users/', undefined, { username: 'x-nope' })).status).toBe(401);
    const dup = await call('POST', '/superuser/users/', root, { username: name });
    expect(dup.status).toBe(400);
    expect(dup.json.error_message).toBe('A user or organization with this name already exists');
    expect((await call('POST', '/superuser/users/', root, { username: 'UPPER case' })).status).toBe(400);
  });

  it('makes an organization member with role creator the admin of the repositories they create, and of no other', async () => {
    const carol = await createTestUser('carol');
    const { namespaceMembers } = await import('../db/schema.ts');
    const { namespaceByName, userByName } = await import('../auth/accounts.ts');
    const ns = (await namespaceByName(api.services.db, org))!;
    await api.services.db.insert(namespaceMembers).values({ namespaceId: ns.id, userId: (await userByName(api.services.db, carol.username))!.id, role: 'creator' });
    expect((await call('POST', '/repository', carol.authorization, { namespace: org, repository: 'carols', visibility: 'private', description: '' })).status).toBe(201);
    expect((await call('GET', `/repository/${org}/carols`, carol.authorization)).json).toMatchObject({ can_admin: true, can_write: true });
    expect((await call('GET', `/repository/${org}/carols/permissions/user/${carol.username}`, carol.authorization)).json).toEqual({ name: carol.username, role: 'admin', is_robot: false });
    expect((await call('GET', `/repository/${org}/web`, carol.authorization)).status).toBe(404);
    // Organization admins get no extra row: they administer every repository anyway.
    expect((await call('POST', '/repository', alice.authorization, { namespace: org, repository: 'alices', visibility: 'private', description: '' })).status).toBe(201);
    expect((await call('GET', `/repository/${org}/alices/permissions/user/`, alice.authorization)).json).toEqual({ permissions: {} });
  });

  it('answers malformed requests with 4xx problems, never a 5xx', async () => {
    const huge = await call('POST', '/organization/', alice.authorization, JSON.stringify({ name: 'x'.repeat(70 * 1024) }));
    expect(huge.status).toBe(413);
    expect((await call('POST', '/organization/', alice.authorization, '[1,2]')).status).toBe(400);
    expect((await call('POST', '/organization/', alice.authorization, { name: 42 })).json.detail).toBe('name must be a string');
    expect((await call('GET', '/repository/%E0%A4%A/x', alice.authorization)).status).toBe(400);
    expect((await call('PATCH', `/repository/${org}/web`, alice.authorization)).status).toBe(405);
    expect((await call('GET', '/user/', 'Basic %%%')).status).toBe(401);
    expect((await call('GET', '/user/', 'Bearer ' + 'x'.repeat(9000))).status).toBe(401);
  });

  it('mints API tokens usable as Bearer credentials', async () => {
    const minted = await call('POST', '/user/apptoken', alice.authorization, { title: 'automation' });
    expect(minted.status).toBe(201);
    const bearer = `Bearer ${minted.json.token.token_code}`;
    expect((await call('GET', '/user/', bearer)).json.username).toBe(alice.username);
    expect((await call('GET', '/user/', 'Bearer not-a-token')).status).toBe(401);
  });
});
