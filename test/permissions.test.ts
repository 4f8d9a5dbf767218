// Who may do what through /v2: anonymous, no permission, read, write, admin, robot and superuser
// against pull, push, delete and the catalog — over Basic auth and over the token flow.
import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createOrganization, createRobot, namespaceByName, userByName } from '../auth/accounts.ts';
import { setPermission } from '../auth/grants.ts';
import { createRepository, setRepositoryVisibility } from '../registry/repositories.ts';
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
    const { createUser } = await import('../auth/accounts.ts');
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
    ['none', 403, 403, 403, 'unlisted'],
    ['read', 200, 403, 403, 'listed'],
    ['write', 200, 201, 403, 'listed'],
    ['admin', 200, 201, 202, 'listed'],
    ['robot', 200, 201, 403, 'listed'],
    ['orgadmin', 200, 201, 202, 'listed'],
    ['superuser', 200, 201, 202, 'listed'],
  ];

  it.each(expected)('%s: pull %i, push %i, delete %i, catalog %s', async (who, pullStatus, pushStatus, deleteStatus, inCatalog) => {
    expect(await pull(who)).toBe(pullStatus);
    expect(await push(who)).toBe(pushStatus);
    expect(await del(who)).toBe(deleteStatus);
    const listing = await catalog(who);
    if (typeof inCatalog === 'number') expect(listing).toBe(inCatalog);
    else if (inCatalog === 'listed') expect(listing).toContain(repo);
    else expect(listing).not.toContain(repo);
  });

  it('lets anyone pull a public repository, and nobody without rights push to it', async () => {
    expect(await pull('anonymous', publicRepo)).toBe(200);
    expect(await pull('none', publicRepo)).toBe(200);
    const bytes = randomBytes(10);
    expect((await client('none').fetch(`/v2/${publicRepo}/blobs/uploads/?digest=${sha256(bytes)}`, { method: 'POST', body: bytes })).status).toBe(403);
    expect(await catalog('none')).toContain(publicRepo);
  });

  it('creates a repository on first push only where the pusher may create', async () => {
    const own = (await createTestUser('creator'));
    const c = new OciClient({ baseUrl: api.url, authorization: own.authorization });
    await pushRandomImage(c, `${own.username}/brand-new`, 'v1');
    expect((await c.fetch(`/v2/${own.username}/brand-new/manifests/v1`)).status).toBe(200);
    const bytes = randomBytes(10);
    expect((await c.fetch(`/v2/${repo.split('/')[0]}/not-mine/blobs/uploads/?digest=${sha256(bytes)}`, { method: 'POST', body: bytes })).status).toBe(403);
  });

  it('applies the same rules through the token flow', async () => {
    const service = new URL(api.url).host;
    for (const [who, actions] of [
      ['read', ['pull']],
      ['write', ['pull', 'push']],
      ['admin', ['pull', 'push', 'delete']],
      ['none', []],
    ] as const) {
      const r = await fetch(`${api.url}/v2/auth?service=${service}&scope=repository:${repo}:pull,push,delete`, { headers: { Authorization: creds.get(who)! } });
      const token = ((await r.json()) as { token: string }).token;
      const access = JSON.parse(Buffer.from(token.split('.')[1]!, 'base64url').toString()).access;
      expect(access[0].actions, who).toEqual(actions);
    }
  });
});
