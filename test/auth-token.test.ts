// The Docker token flow: challenges, the token endpoint, scopes, refresh tokens.
import { randomBytes } from 'node:crypto';
import { SignJWT } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { eq } from 'drizzle-orm';
import { createRobot, namespaceByName, regenerateRobotToken, setPassword, userByName } from '../auth/accounts.ts';
import { users } from '../db/schema.ts';
import { setPermission } from '../auth/grants.ts';
import { createRepository } from '../registry/repositories.ts';
import { basic, createTestUser, startTestApi } from './support/harness.ts';
import { OciClient, pushRandomImage } from './support/oci-client.ts';

type Api = Awaited<ReturnType<typeof startTestApi>>;

function claims(token: string): { access: { type: string; name: string; actions: string[] }[]; sub: string; exp: number; iat: number } {
  return JSON.parse(Buffer.from(token.split('.')[1]!, 'base64url').toString());
}

describe('registry token authentication', () => {
  let api: Api;
  let owner: Awaited<ReturnType<typeof createTestUser>>;
  let reader: Awaited<ReturnType<typeof createTestUser>>;
  let repo: string;
  let robot: { name: string; token: string };

  beforeAll(async () => {
    api = await startTestApi();
    owner = await createTestUser('tok-owner');
    reader = await createTestUser('tok-reader');
    repo = `${owner.username}/private`;
    await pushRandomImage(new OciClient({ baseUrl: api.url, authorization: owner.authorization }), repo, 'v1');
    const r = await createRepository(api.services.db, { fullName: repo }, 'return');
    await setPermission(api.services.db, r, reader.username, 'read');
    const ns = (await namespaceByName(api.services.db, owner.username))!;
    robot = await api.services.db.transaction((tx) => createRobot(tx, { namespace: ns, shortName: 'ci' }));
    await setPermission(api.services.db, r, robot.name, 'write');
  });
  afterAll(async () => api?.close());

  const service = () => new URL(api.url).host;
  const token = async (scopes: string[], authorization?: string, extra = '') => {
    const q = scopes.map((s) => `scope=${encodeURIComponent(s)}`).join('&');
    return fetch(`${api.url}/v2/auth?service=${service()}&${q}${extra}`, { headers: authorization ? { Authorization: authorization } : {} });
  };

  it('challenges clients without credentials with realm, service and scope', async () => {
    const ping = await fetch(`${api.url}/v2/`);
    expect(ping.status).toBe(401);
    expect(ping.headers.get('www-authenticate')).toBe(`Bearer realm="${api.url}/v2/auth",service="${service()}"`);
    const tags = await fetch(`${api.url}/v2/${repo}/tags/list`);
    expect(tags.status).toBe(401);
    expect(tags.headers.get('www-authenticate')).toBe(`Bearer realm="${api.url}/v2/auth",service="${service()}",scope="repository:${repo}:pull"`);
    expect(((await tags.json()) as { errors: { code: string }[] }).errors[0]!.code).toBe('UNAUTHORIZED');
  });

  it('issues a signed, short-lived token with only the actions the principal may have', async () => {
    const r = await token([`repository:${repo}:pull,push,delete`], reader.authorization);
    expect(r.status).toBe(200);
    const body = (await r.json()) as { token: string; access_token: string; expires_in: number; issued_at: string };
    expect(body.access_token).toBe(body.token);
    expect(body.expires_in).toBe(300);
    const c = claims(body.token);
    expect(c.sub).toBe(reader.username);
    expect(c.exp - c.iat).toBe(300);
    expect(c.access).toEqual([{ type: 'repository', name: repo, actions: ['pull'] }]);
    // The token pulls; it does not push.
    const pull = await fetch(`${api.url}/v2/${repo}/manifests/v1`, { headers: { Authorization: `Bearer ${body.token}` } });
    expect(pull.status).toBe(200);
    const push = await fetch(`${api.url}/v2/${repo}/blobs/uploads/`, { method: 'POST', headers: { Authorization: `Bearer ${body.token}` } });
    expect(push.status).toBe(401);
    expect(((await push.json()) as { errors: { code: string }[] }).errors[0]!.code).toBe('DENIED');
  });

  it('asks for a new token when a token lacks a scope the principal has', async () => {
    const onlyPull = ((await (await token([`repository:${repo}:pull`], owner.authorization)).json()) as { token: string }).token;
    const push = await fetch(`${api.url}/v2/${repo}/blobs/uploads/`, { method: 'POST', headers: { Authorization: `Bearer ${onlyPull}` } });
    expect(push.status).toBe(401);
    expect(push.headers.get('www-authenticate')).toContain(`scope="repository:${repo}:pull,push",error="insufficient_scope"`);
  });

  it('asks for a token covering the source repository of a cross-repository mount', async () => {
    const target = `${owner.username}/mount-target`;
    const manifest = await (await fetch(`${api.url}/v2/${repo}/manifests/v1`, { headers: { Authorization: owner.authorization } })).json() as { layers: { digest: string }[] };
    const layer = manifest.layers[0]!.digest;
    const onlyTarget = ((await (await token([`repository:${target}:pull,push`], owner.authorization)).json()) as { token: string }).token;
    const first = await fetch(`${api.url}/v2/${target}/blobs/uploads/?mount=${layer}&from=${repo}`, { method: 'POST', headers: { Authorization: `Bearer ${onlyTarget}` } });
    expect(first.status).toBe(401);
    expect(first.headers.get('www-authenticate')).toContain(`scope="repository:${target}:pull,push repository:${repo}:pull",error="insufficient_scope"`);
    const both = ((await (await token([`repository:${target}:pull,push`, `repository:${repo}:pull`], owner.authorization)).json()) as { token: string }).token;
    const mounted = await fetch(`${api.url}/v2/${target}/blobs/uploads/?mount=${layer}&from=${repo}`, { method: 'POST', headers: { Authorization: `Bearer ${both}` } });
    expect(mounted.status).toBe(201);
    // Someone who may not read the source gets an ordinary upload, and learns nothing.
    const stranger = await createTestUser('tok-stranger');
    const strangerToken = ((await (await token([`repository:${stranger.username}/x:pull,push`, `repository:${repo}:pull`], stranger.authorization)).json()) as { token: string }).token;
    const fallback = await fetch(`${api.url}/v2/${stranger.username}/x/blobs/uploads/?mount=${layer}&from=${repo}`, { method: 'POST', headers: { Authorization: `Bearer ${strangerToken}` } });
    expect(fallback.status).toBe(202);
  });

  it('accepts robots by name and token, granting what the robot was granted', async () => {
    const r = await token([`repository:${repo}:pull,push,delete`], basic(robot.name, robot.token));
    expect(claims(((await r.json()) as { token: string }).token).access[0]!.actions).toEqual(['pull', 'push', 'delete']);
    expect((await token([`repository:${repo}:pull`], basic(robot.name, 'wrong'))).status).toBe(401);
  });

  it('gives anonymous clients tokens with nothing on private repositories', async () => {
    const r = await token([`repository:${repo}:pull`]);
    expect(r.status).toBe(200);
    expect(claims(((await r.json()) as { token: string }).token).access).toEqual([{ type: 'repository', name: repo, actions: [] }]);
  });

  it('refuses wrong passwords at the token endpoint', async () => {
    const r = await token([`repository:${repo}:pull`], basic(owner.username, 'not-the-password'));
    expect(r.status).toBe(401);
  });

  it('hands out refresh tokens (offline_token, access_type=offline) and trades them for access tokens', async () => {
    const first = (await (await token([`repository:${repo}:pull`], owner.authorization, '&offline_token=true')).json()) as { refresh_token: string };
    expect(first.refresh_token).toMatch(/^[A-Za-z0-9_-]{40,}$/);
    const form = (params: Record<string, string>) =>
      fetch(`${api.url}/v2/auth`, { method: 'POST', headers: { 'Content-Type': 'application/x-www-form-urlencoded' }, body: new URLSearchParams(params).toString() });
    const refreshed = await form({ grant_type: 'refresh_token', refresh_token: first.refresh_token, service: service(), scope: `repository:${repo}:pull,push`, client_id: 'docker' });
    expect(refreshed.status).toBe(200);
    const body = (await refreshed.json()) as { access_token: string; scope: string };
    expect(claims(body.access_token).access[0]!.actions).toEqual(['pull', 'push']);
    expect(body.scope).toBe(`repository:${repo}:pull,push`);
    const pw = await form({ grant_type: 'password', username: owner.username, password: owner.password, service: service(), scope: `repository:${repo}:pull`, access_type: 'offline', client_id: 'podman' });
    expect(((await pw.json()) as { refresh_token?: string }).refresh_token).toBeTruthy();
    expect((await form({ grant_type: 'refresh_token', refresh_token: 'nope', service: service() })).status).toBe(401);
    expect((await form({ grant_type: 'client_credentials' })).status).toBe(400);
  });

  it('refuses expired, forged and malformed tokens with a challenge, never a 5xx', async () => {
    const now = Math.floor(Date.now() / 1000);
    const forged = await new SignJWT({ access: [{ type: 'repository', name: repo, actions: ['pull'] }], mp: { k: 'u', id: 1, n: 'x' } })
      .setProtectedHeader({ alg: 'HS256' })
      .setIssuer('meridian')
      .setAudience(service())
      .setIssuedAt(now)
      .setExpirationTime(now + 60)
      .sign(randomBytes(32));
    const expired = await new SignJWT({ access: [{ type: 'repository', name: repo, actions: ['pull'] }], mp: { k: 'a' } })
      .setProtectedHeader({ alg: 'HS256' })
      .setIssuer('meridian')
      .setAudience(service())
      .setIssuedAt(now - 1000)
      .setExpirationTime(now - 500)
      .sign(api.config.tokenSigningKey);
    for (const header of [`Bearer ${forged}`, `Bearer ${expired}`, 'Bearer not.a.jwt', 'Basic !!!', 'Basic ' + 'A'.repeat(9000), 'Digest x']) {
      const r = await fetch(`${api.url}/v2/${repo}/tags/list`, { headers: { Authorization: header } });
      expect(r.status, header.slice(0, 30)).toBe(401);
    }
    const bad = await token(['repository:UPPER:pull', 'nonsense', `repository:${repo}:`, 'registry:catalog:*'], owner.authorization);
    expect(bad.status).toBe(200);
    expect(claims(((await bad.json()) as { token: string }).token).access).toEqual([{ type: 'registry', name: 'catalog', actions: ['*'] }]);
  });

  const form = (params: Record<string, string>) =>
    fetch(`${api.url}/v2/auth`, { method: 'POST', headers: { 'Content-Type': 'application/x-www-form-urlencoded' }, body: new URLSearchParams(params).toString() });

  it('takes Basic credentials or none at the token endpoint, not a bearer token renewing itself', async () => {
    const issued = ((await (await token([`repository:${repo}:pull`], owner.authorization)).json()) as { token: string }).token;
    const r = await token([`repository:${repo}:pull`], `Bearer ${issued}`);
    expect(r.status).toBe(401);
    expect(await r.json()).toMatchObject({ errors: [{ code: 'UNAUTHORIZED' }] });
  });

  it('applies a password change at once, although successful Basic verifications are cached', async () => {
    const u = await createTestUser('pwchange');
    const url = `${api.url}/v2/${u.username}/x/tags/list`;
    // Twice, so that the second answer comes from the cache.
    for (let i = 0; i < 2; i++) expect((await fetch(url, { headers: { Authorization: u.authorization } })).status).toBe(404);
    const row = (await userByName(api.services.db, u.username))!;
    await setPassword(api.services.db, row.id, 'a-brand-new-password');
    expect((await fetch(url, { headers: { Authorization: u.authorization } })).status).toBe(401);
    expect((await fetch(url, { headers: { Authorization: basic(u.username, 'a-brand-new-password') } })).status).toBe(404);
  });

  it('stops a disabled user at once: Basic, issued tokens and refresh tokens', async () => {
    const u = await createTestUser('disabled');
    const own = `${u.username}/thing`;
    const got = (await (await token([`repository:${own}:pull,push`], u.authorization, '&offline_token=true')).json()) as { token: string; refresh_token: string };
    const bearer = { Authorization: `Bearer ${got.token}` };
    expect((await fetch(`${api.url}/v2/${own}/tags/list`, { headers: bearer })).status).toBe(404);
    await api.services.db.update(users).set({ enabled: false }).where(eq(users.username, u.username));
    expect((await fetch(`${api.url}/v2/${own}/tags/list`, { headers: bearer })).status).toBe(401);
    expect((await fetch(`${api.url}/v2/${own}/tags/list`, { headers: { Authorization: u.authorization } })).status).toBe(401);
    expect((await form({ grant_type: 'refresh_token', refresh_token: got.refresh_token, service: service() })).status).toBe(401);
  });

  it("retires a robot's old token, and the refresh tokens obtained with it, when the token is regenerated", async () => {
    const ns = (await namespaceByName(api.services.db, owner.username))!;
    const bot = await api.services.db.transaction((tx) => createRobot(tx, { namespace: ns, shortName: `regen_${randomBytes(3).toString('hex')}` }));
    const first = (await (await token([], basic(bot.name, bot.token), '&offline_token=true')).json()) as { refresh_token: string };
    expect((await form({ grant_type: 'refresh_token', refresh_token: first.refresh_token, service: service() })).status).toBe(200);
    const fresh = await api.services.db.transaction((tx) => regenerateRobotToken(tx, bot.robot.id));
    expect((await form({ grant_type: 'refresh_token', refresh_token: first.refresh_token, service: service() })).status).toBe(401);
    expect((await token([], basic(bot.name, bot.token))).status).toBe(401);
    expect((await token([], basic(bot.name, fresh))).status).toBe(200);
  });

  it('answers malformed token requests with 4xx, never a 5xx', async () => {
    const many = Array.from({ length: 200 }, (_, i) => `repository:${repo}-${i}:pull`);
    expect((await token(many, owner.authorization)).status).toBe(200);
    expect((await form({ grant_type: 'password', username: owner.username, password: 'x'.repeat(5000) })).status).toBe(401);
    const huge = await fetch(`${api.url}/v2/auth`, { method: 'POST', headers: { 'Content-Type': 'application/x-www-form-urlencoded' }, body: 'scope=' + 'a'.repeat(100_000) });
    expect(huge.status).toBe(400);
    expect((await fetch(`${api.url}/v2/auth`, { method: 'DELETE' })).status).toBe(405);
    expect((await token([`repository:${repo}:pull`], 'Basic ' + Buffer.from('no-colon-here').toString('base64'))).status).toBe(401);
  });
});
