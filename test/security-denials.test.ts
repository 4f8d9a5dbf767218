// Issue 10 item 8: denials a client can explain, and deletes as Quay grants them. A principal
// refused an action gets 401 with `error="insufficient_scope"` (so that a client probing with a
// body-less HEAD fetches a token and reports the denial) and a DENIED message naming the
// repository and the permission; outsiders cannot tell a hidden repository from a missing one; a
// user pushing into a typo of their own namespace is told where they may push; write deletes
// tags and manifests.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createRobot, namespaceByName } from '../auth/accounts.ts';
import { setPermission } from '../auth/grants.ts';
import { createRepository } from '../registry/repositories.ts';
import { basic, createTestUser, startTestApi } from './support/harness.ts';
import { OciClient, pushRandomImage, sha256 } from './support/oci-client.ts';

type Api = Awaited<ReturnType<typeof startTestApi>>;
type User = Awaited<ReturnType<typeof createTestUser>>;
type Errors = { errors: { code: string; message: string }[] };

describe('denials and deletes', () => {
  let api: Api;
  let owner: User;
  let reader: User;
  let stranger: User;
  let repo: string;
  let robot: string;

  beforeAll(async () => {
    api = await startTestApi();
    [owner, reader, stranger] = await Promise.all([createTestUser('den-owner'), createTestUser('den-reader'), createTestUser('den-stranger')]);
    repo = `${owner.username}/app`;
    await pushRandomImage(new OciClient({ baseUrl: api.url, authorization: owner.authorization }), repo, 'v1');
    const db = api.services.db;
    const r = (await createRepository(db, { fullName: repo }, 'return'))!;
    await setPermission(db, r, reader.username, 'read');
    const bot = await db.transaction(async (tx) => createRobot(tx, { namespace: (await namespaceByName(tx, owner.username))!, shortName: 'ci' }));
    await setPermission(db, r, bot.name, 'write');
    robot = basic(bot.name, bot.token);
  });
  afterAll(async () => api?.close());

  const v2 = (path: string, authorization: string, init: RequestInit = {}) => fetch(`${api.url}/v2/${path}`, { ...init, headers: { authorization, ...(init.headers ?? {}) } });
  const blob = Buffer.from('denied-blob');

  it('a reader pushing gets 401 insufficient_scope naming the repository, its role and the permission needed; HEAD too', async () => {
    const r = await v2(`${repo}/blobs/uploads/?digest=${sha256(blob)}`, reader.authorization, { method: 'POST', body: blob });
    expect(r.status).toBe(401);
    const challenge = r.headers.get('www-authenticate')!;
    expect(challenge).toContain(`scope="repository:${repo}:pull,push"`);
    expect(challenge).toContain('error="insufficient_scope"');
    const e = ((await r.json()) as Errors).errors[0]!;
    expect(e.code).toBe('DENIED');
    expect(e.message).toBe(`push access to repository ${repo} is denied: ${reader.username} has read permission there, push needs write`);

    const del = await v2(`${repo}/manifests/v1`, reader.authorization, { method: 'DELETE' });
    expect(del.status).toBe(401);
    expect(((await del.json()) as Errors).errors[0]!.message).toMatch(/delete access .* needs write/);
    const head = await v2(`${repo}/blobs/${sha256(blob)}`, stranger.authorization, { method: 'HEAD' });
    expect(head.status).toBe(401);
    expect(head.headers.get('www-authenticate')).toContain('error="insufficient_scope"');

    // The token flow: the token holds only pull, and using it for a push says the same.
    const t = await fetch(`${api.url}/v2/auth?service=x&scope=repository:${repo}:pull,push`, { headers: { authorization: reader.authorization } });
    const token = ((await t.json()) as { token: string }).token;
    const withToken = await v2(`${repo}/blobs/uploads/`, `Bearer ${token}`, { method: 'POST' });
    expect(withToken.status).toBe(401);
    expect(((await withToken.json()) as Errors).errors[0]!.message).toContain(`${reader.username} has read permission`);
  });

  it('an outsider cannot tell a hidden repository from a missing one, over GET, HEAD and push', async () => {
    const missing = `${owner.username}/no-such-app`;
    for (const [path, init] of [
      [(n: string) => `${n}/manifests/v1`, {}],
      [(n: string) => `${n}/blobs/${sha256(blob)}`, { method: 'HEAD' }],
      [(n: string) => `${n}/blobs/uploads/`, { method: 'POST' }],
      [(n: string) => `${n}/tags/list`, {}],
    ] as const) {
      const hidden = await v2(path(repo), stranger.authorization, init);
      const absent = await v2(path(missing), stranger.authorization, init);
      expect([path(repo), hidden.status]).toEqual([path(repo), 401]);
      expect(absent.status).toBe(401);
      expect(hidden.headers.get('www-authenticate')!.replace(repo, 'X')).toBe(absent.headers.get('www-authenticate')!.replace(missing, 'X'));
      expect((await hidden.text()).replace(repo, 'X')).toBe((await absent.text()).replace(missing, 'X'));
    }
  });

  it("a user pushing into a typo of their own namespace is told where they may push (and the answer is the same whether the typo exists)", async () => {
    const name = stranger.username;
    const typo = name.slice(0, -1); // the last character forgotten
    const r = await v2(`${typo}/tool/blobs/uploads/`, stranger.authorization, { method: 'POST' });
    expect(r.status).toBe(401);
    const message = ((await r.json()) as Errors).errors[0]!.message;
    expect(message).toBe(`pull and push access to repository ${typo}/tool is denied for ${name}: you may create repositories in ${name} (did you mean ${name}/tool?)`);
    // Into someone else's existing namespace: no suggestion (too far), the same list.
    const other = ((await (await v2(`${owner.username}/tool/blobs/uploads/`, stranger.authorization, { method: 'POST' })).json()) as Errors).errors[0]!.message;
    expect(other).toBe(`pull and push access to repository ${owner.username}/tool is denied for ${name}: you may create repositories in ${name}`);
  });

  it('write deletes tags and manifests, as in Quay (a CI robot retags and cleans up)', async () => {
    const c = new OciClient({ baseUrl: api.url, authorization: robot });
    const pushed = await pushRandomImage(c, repo, 'ci-1');
    expect((await c.fetch(`/v2/${repo}/manifests/ci-1`, { method: 'DELETE' })).status).toBe(202);
    expect((await c.fetch(`/v2/${repo}/manifests/ci-1`)).status).toBe(404);
    expect((await c.fetch(`/v2/${repo}/manifests/${pushed.manifestDigest}`, { method: 'DELETE' })).status).toBe(202);
    expect((await c.fetch(`/v2/${repo}/manifests/${pushed.manifestDigest}`)).status).toBe(404);
    // The reader still may not.
    expect((await v2(`${repo}/manifests/v1`, reader.authorization, { method: 'DELETE' })).status).toBe(401);
    expect((await v2(`${repo}/manifests/v1`, owner.authorization)).status).toBe(200);
  });
});
