// Who may do what through /v2: anonymous, no permission, read, write, admin, robot and superuser
// against pull, push, delete and the catalog — over Basic auth and over the token flow.
import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createOrganization, createRobot, createUser, namespaceByName, userByName } from '../auth/accounts.ts';
import { deletePermission, setPermission } from '../auth/grants.ts';
import { and, eq } from 'drizzle-orm';
import { mirrorConfigs, namespaceMembers, repositoryPermissions } from '../db/schema.ts';
import { createRepository, setRepositoryState, setRepositoryVisibility } from '../registry/repositories.ts';
import { basic, createTestUser, startTestApi } from './support/harness.ts';
import { OciClient, pushRandomImage, sha256 } from './support/oci-client.ts';

type Who = 'anonymous' | 'none' | 'read' | 'write' | 'admin' | 'robot' | 'superuser' | 'orgadmin';

describe('permissions on /v2', () => {
  let api: Awaited<ReturnType<typeof startTestApi>>;
  const creds = new Map<Who, string | undefined>();
  let repo: string;
  let publicRepo: string;
  let manifest: Record<string, unknown>;
  const superName = `root-${randomBytes(3).toString('hex')}`;

  beforeAll(async () => {
    api = await startTestApi({ MERIDIAN_SUPERUSERS: superName });
    const orgAdmin = await createTestUser('orgadmin');
    const org = `perm-${randomBytes(3).toString('hex')}`;
    const db = api.services.db;
    await db.transaction(async (tx) => createOrganization(tx, { name: org, creatorUserId: (await userByName(tx, orgAdmin.username))!.id }));
    repo = `${org}/app`;
    publicRepo = `${org}/open`;
    const r = await createRepository(db, { fullName: repo });
    const pub = await createRepository(db, { fullName: publicRepo });
    await setRepositoryVisibility(db, pub, 'public');
    creds.set('anonymous', undefined);
    creds.set('orgadmin', orgAdmin.authorization);
    for (const who of ['none', 'read', 'write', 'admin'] as const) {
      const u = await createTestUser(`p-${who}`);
      creds.set(who, u.authorization);
      if (who !== 'none') await setPermission(db, r, u.username, who);
    }
    const su = await createTestUser('x');
    // The superuser is named in MERIDIAN_SUPERUSERS: create a user with exactly that name.
    await db.transaction((tx) => createUser(tx, { username: superName, password: su.password }));
    creds.set('superuser', basic(superName, su.password));
    const ns = (await namespaceByName(db, org))!;
    const bot = await db.transaction((tx) => createRobot(tx, { namespace: ns, shortName: 'deployer' }));
    await setPermission(db, r, bot.name, 'write');
    creds.set('robot', basic(bot.name, bot.token));
    const seeded = await pushRandomImage(new OciClient({ baseUrl: api.url, authorization: orgAdmin.authorization }), repo, 'base');
    manifest = seeded.manifest;
    await pushRandomImage(new OciClient({ baseUrl: api.url, authorization: orgAdmin.authorization }), publicRepo, 'base');
  });
  afterAll(async () => api?.close());

  const client = (who: Who) => new OciClient({ baseUrl: api.url, authorization: creds.get(who) });

  async function pull(who: Who, r = repo): Promise<number> {
    return (await client(who).fetch(`/v2/${r}/manifests/base`)).status;
  }
  async function push(who: Who): Promise<number> {
    const bytes = randomBytes(100);
    const r = await client(who).fetch(`/v2/${repo}/blobs/uploads/?digest=${sha256(bytes)}`, { method: 'POST', body: bytes });
    return r.status;
  }
  async function del(who: Who): Promise<number> {
    // A tag of our own to delete, so that each case deletes something real.
    const tag = `del-${randomBytes(3).toString('hex')}`;
    await client('orgadmin').pushManifest(repo, tag, manifest, 'application/vnd.oci.image.manifest.v1+json');
    return (await client(who).fetch(`/v2/${repo}/manifests/${tag}`, { method: 'DELETE' })).status;
  }
  async function catalog(who: Who): Promise<number | string[]> {
    const r = await client(who).fetch('/v2/_catalog?n=10000');
    if (r.status !== 200) return r.status;
    return ((await r.json()) as { repositories: string[] }).repositories;
  }

  const expected: [Who, number, number, number, 'listed' | 'unlisted' | number][] = [
    ['anonymous', 401, 401, 401, 401],
    // Refusals of an authenticated principal are 401 insufficient_scope (code DENIED), as the
    // distribution registry answers, so that clients fetch a token and report the denial.
    ['none', 401, 401, 401, 'unlisted'],
    ['read', 200, 401, 401, 'listed'],
    // Write may delete tags and manifests, as in Quay.
    ['write', 200, 201, 202, 'listed'],
    ['admin', 200, 201, 202, 'listed'],
    ['robot', 200, 201, 202, 'listed'],
    ['orgadmin', 200, 201, 202, 'listed'],
    ['superuser', 200, 201, 202, 'listed'],
  ];

  it.each(expected)('%s: pull %i, push %i, delete %i, catalog %s', async (who, pullStatus, pushStatus, deleteStatus, inCatalog) => {
    expect(await pull(who)).toBe(pullStatus);
    expect(await push(who)).toBe(pushStatus);
    expect(await del(who)).toBe(deleteStatus);
    const listing = await catalog(who);
    if (who === 'anonymous') {
      const r = await client(who).fetch('/v2/_catalog');
      expect(r.headers.get('www-authenticate')).toBe(`Bearer realm="${api.url}/v2/auth",service="${new URL(api.url).host}",scope="registry:catalog:*"`);
    }
    if (typeof inCatalog === 'number') expect(listing).toBe(inCatalog);
    else if (inCatalog === 'listed') expect(listing).toContain(repo);
    else expect(listing).not.toContain(repo);
  });

  it('lets anyone pull a public repository, and nobody without rights push to it', async () => {
    expect(await pull('anonymous', publicRepo)).toBe(200);
    expect(await pull('none', publicRepo)).toBe(200);
    const bytes = randomBytes(10);
    expect((await client('none').fetch(`/v2/${publicRepo}/blobs/uploads/?digest=${sha256(bytes)}`, { method: 'POST', body: bytes })).status).toBe(401);
    expect(await catalog('none')).toContain(publicRepo);
  });

  it('creates a repository on first push only where the pusher may create', async () => {
    const own = (await createTestUser('creator'));
    const c = new OciClient({ baseUrl: api.url, authorization: own.authorization });
    await pushRandomImage(c, `${own.username}/brand-new`, 'v1');
    expect((await c.fetch(`/v2/${own.username}/brand-new/manifests/v1`)).status).toBe(200);
    const bytes = randomBytes(10);
    expect((await c.fetch(`/v2/${repo.split('/')[0]}/not-mine/blobs/uploads/?digest=${sha256(bytes)}`, { method: 'POST', body: bytes })).status).toBe(401);
  });

  it('applies the same rules through the token flow', async () => {
    const service = new URL(api.url).host;
    for (const [who, actions] of [
      ['read', ['pull']],
      ['write', ['pull', 'push', 'delete']],
      ['admin', ['pull', 'push', 'delete']],
      ['none', []],
    ] as const) {
      const r = await fetch(`${api.url}/v2/auth?service=${service}&scope=repository:${repo}:pull,push,delete`, { headers: { Authorization: creds.get(who)! } });
      const token = ((await r.json()) as { token: string }).token;
      const access = JSON.parse(Buffer.from(token.split('.')[1]!, 'base64url').toString()).access;
      expect(access[0].actions, who).toEqual(actions);
    }
  });

  // ------------------------------------------------------------------ beyond the matrix

  const service = () => new URL(api.url).host;
  async function tokenFor(authorization: string | undefined, scope: string): Promise<string> {
    const r = await fetch(`${api.url}/v2/auth?service=${service()}&scope=${encodeURIComponent(scope)}`, { headers: authorization ? { Authorization: authorization } : {} });
    expect(r.status).toBe(200);
    return ((await r.json()) as { token: string }).token;
  }
  async function blobPost(repository: string, authorization: string | undefined): Promise<Response> {
    const bytes = randomBytes(32);
    return new OciClient({ baseUrl: api.url, authorization }).fetch(`/v2/${repository}/blobs/uploads/?digest=${sha256(bytes)}`, { method: 'POST', body: bytes });
  }

  it('refuses a still-valid token at once when its permission is revoked', async () => {
    const db = api.services.db;
    const u = await createTestUser('revoked');
    const r = (await createRepository(db, { fullName: repo }, 'return'))!;
    await setPermission(db, r, u.username, 'write');
    const bearer = `Bearer ${await tokenFor(u.authorization, `repository:${repo}:pull,push`)}`;
    expect((await client('anonymous').fetch(`/v2/${repo}/manifests/base`, { headers: { Authorization: bearer } })).status).toBe(200);
    expect((await blobPost(repo, bearer)).status).toBe(201);
    await setPermission(db, r, u.username, 'read');
    expect((await blobPost(repo, bearer)).status).toBe(401);
    await deletePermission(db, r, u.username);
    const pulled = await client('anonymous').fetch(`/v2/${repo}/manifests/base`, { headers: { Authorization: bearer } });
    expect(pulled.status).toBe(401);
    expect(((await pulled.json()) as { errors: { code: string }[] }).errors[0]!.code).toBe('DENIED');
  });

  it('makes a mirror read-only for everyone, superusers and existing tokens included, except its robot', async () => {
    const db = api.services.db;
    const org = repo.split('/')[0]!;
    const mirrored = `${org}/mirrored-${randomBytes(3).toString('hex')}`;
    const r = await createRepository(db, { fullName: mirrored });
    const ns = (await namespaceByName(db, org))!;
    const bot = await db.transaction((tx) => createRobot(tx, { namespace: ns, shortName: `mirror_${randomBytes(3).toString('hex')}` }));
    const adminToken = `Bearer ${await tokenFor(creds.get('orgadmin'), `repository:${mirrored}:pull,push`)}`;
    expect((await blobPost(mirrored, adminToken)).status).toBe(201);

    await db.insert(mirrorConfigs).values({
      repositoryId: r.id,
      externalReference: 'registry.example.com/library/app',
      syncInterval: 3600,
      syncStartDate: new Date(Date.now() + 3600_000),
      tagGlobs: ['*'],
      robotId: bot.robot.id,
      rollbackOnFailure: false,
    });
    await setRepositoryState(db, r, 'mirror');
    const message = `${mirrored} is a mirrored repository; only its mirror robot may write`;
    for (const authorization of [adminToken, creds.get('orgadmin'), creds.get('superuser')]) {
      const denied = await blobPost(mirrored, authorization);
      expect(denied.status).toBe(403);
      expect(((await denied.json()) as { errors: { code: string; message: string }[] }).errors[0]).toEqual({ code: 'DENIED', message });
    }
    // Deletes too; pulls follow the usual permissions.
    expect((await client('superuser').fetch(`/v2/${mirrored}/manifests/sha256:${'0'.repeat(64)}`, { method: 'DELETE' })).status).toBe(403);
    expect((await client('orgadmin').fetch(`/v2/${mirrored}/tags/list`)).status).toBe(200);
    // Someone who cannot even see the repository is not told it is a mirror.
    const stranger = await blobPost(mirrored, creds.get('none'));
    expect(stranger.status).toBe(401);
    expect(await stranger.text()).not.toMatch(/mirrored repository|mirror robot/);
    // The mirror's robot writes, with no permission row of its own, over Basic and with a token.
    expect((await blobPost(mirrored, basic(bot.name, bot.token))).status).toBe(201);
    const robotToken = await tokenFor(basic(bot.name, bot.token), `repository:${mirrored}:pull,push`);
    expect((await blobPost(mirrored, `Bearer ${robotToken}`)).status).toBe(201);
    // Back to normal, the admin writes again.
    await setRepositoryState(db, r, 'normal');
    expect((await blobPost(mirrored, creds.get('orgadmin'))).status).toBe(201);
  });

  it('keeps READ_ONLY repositories read-only for everyone', async () => {
    const db = api.services.db;
    const frozen = `${repo.split('/')[0]}/frozen-${randomBytes(3).toString('hex')}`;
    const r = await createRepository(db, { fullName: frozen });
    await setRepositoryState(db, r, 'readonly');
    expect((await blobPost(frozen, creds.get('superuser'))).status).toBe(403);
    expect((await client('superuser').fetch(`/v2/${frozen}/tags/list`)).status).toBe(200);
  });

  it('lets an organization member with role creator create a repository by pushing, and only that', async () => {
    const db = api.services.db;
    const org = repo.split('/')[0]!;
    const creator = await createTestUser('creator');
    const ns = (await namespaceByName(db, org))!;
    await db.insert(namespaceMembers).values({ namespaceId: ns.id, userId: (await userByName(db, creator.username))!.id, role: 'creator' });
    // No rights on the organization's existing repositories…
    expect((await client('anonymous').fetch(`/v2/${repo}/manifests/base`, { headers: { Authorization: creator.authorization } })).status).toBe(401);
    // …but a new one may be created (push and pull granted for it, delete not).
    const fresh = `${org}/by-creator-${randomBytes(3).toString('hex')}`;
    const token = await tokenFor(creator.authorization, `repository:${fresh}:pull,push,delete`);
    expect(JSON.parse(Buffer.from(token.split('.')[1]!, 'base64url').toString()).access[0].actions).toEqual(['pull', 'push']);
    expect((await blobPost(fresh, creator.authorization)).status).toBe(201);
    // A robot may never create repositories, whatever it was granted elsewhere.
    expect((await blobPost(`${org}/by-robot-${randomBytes(3).toString('hex')}`, creds.get('robot'))).status).toBe(401);
  });

  it('makes the creator of a repository created by a push its admin, so the rest of the push goes through', async () => {
    const db = api.services.db;
    const org = repo.split('/')[0]!;
    const creator = await createTestUser('creator2');
    const creatorRow = (await userByName(db, creator.username))!;
    const ns = (await namespaceByName(db, org))!;
    await db.insert(namespaceMembers).values({ namespaceId: ns.id, userId: creatorRow.id, role: 'creator' });
    const fresh = `${org}/pushed-${randomBytes(3).toString('hex')}`;
    expect((await blobPost(fresh, creator.authorization)).status).toBe(201);
    // The /v2 router created the repository and made the creator its admin.
    const created = (await createRepository(db, { fullName: fresh }, 'return'))!;
    const [grant] = await db.select().from(repositoryPermissions).where(and(eq(repositoryPermissions.repositoryId, created.id), eq(repositoryPermissions.userId, creatorRow.id)));
    expect(grant?.role).toBe('admin');
    await pushRandomImage(new OciClient({ baseUrl: api.url, authorization: creator.authorization }), fresh, 'v1');
    expect((await client('anonymous').fetch(`/v2/${fresh}/manifests/v1`, { method: 'DELETE', headers: { Authorization: creator.authorization } })).status).toBe(202);
  });

  it('answers the ping 401 with a challenge, and 200 for any valid credentials including an anonymous token', async () => {
    const ping = await fetch(`${api.url}/v2/`);
    expect(ping.status).toBe(401);
    expect(ping.headers.get('www-authenticate')).toBe(`Bearer realm="${api.url}/v2/auth",service="${service()}"`);
    for (const who of ['none', 'robot', 'superuser'] as const) expect((await client(who).fetch('/v2/')).status, who).toBe(200);
    const anonymousToken = await tokenFor(undefined, `repository:${publicRepo}:pull`);
    expect((await fetch(`${api.url}/v2/`, { headers: { Authorization: `Bearer ${anonymousToken}` } })).status).toBe(200);
    // The anonymous token pulls the public repository and nothing else.
    expect((await fetch(`${api.url}/v2/${publicRepo}/manifests/base`, { headers: { Authorization: `Bearer ${anonymousToken}` } })).status).toBe(200);
    expect((await fetch(`${api.url}/v2/${repo}/manifests/base`, { headers: { Authorization: `Bearer ${anonymousToken}` } })).status).toBe(401);
    expect((await fetch(`${api.url}/v2/`, { headers: { Authorization: basic('nobody-at-all', 'x') } })).status).toBe(401);
  });
});
