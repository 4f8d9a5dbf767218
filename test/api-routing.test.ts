// One routing style for all of api/ (api/router.ts): the most specific route wins whatever the
// order tables are declared in, a path matched with another method is a 405 naming the allowed
// ones, path parameters are decoded in one guarded place, and every answer — errors included —
// is in its API's style (problem details on /api/v1, OCI errors on /v2).
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createRobot, namespaceByName } from '../auth/accounts.ts';
import { createRepository } from '../registry/repositories.ts';
import { createTestUser, startTestApi } from './support/harness.ts';

type Api = Awaited<ReturnType<typeof startTestApi>>;

describe('routing', () => {
  let api: Api;
  let owner: Awaited<ReturnType<typeof createTestUser>>;

  beforeAll(async () => {
    api = await startTestApi({ MERIDIAN_MIRROR_ALLOWED_HOSTS: '127.0.0.1' });
    owner = await createTestUser('router');
    const ns = (await namespaceByName(api.services.db, owner.username))!;
    await api.services.db.transaction((tx) => createRobot(tx, { namespace: ns, shortName: 'bot' }));
    await createRepository(api.services.db, { fullName: `${owner.username}/app` });
    // Repositories whose names end in words the API uses as sub-resources.
    await createRepository(api.services.db, { fullName: `${owner.username}/mirror` });
    await createRepository(api.services.db, { fullName: `${owner.username}/notification` });
  });
  afterAll(async () => api?.close());

  const get = (path: string, init: RequestInit = {}) =>
    fetch(`${api.url}${path}`, { ...init, headers: { Authorization: owner.authorization, ...(init.headers as Record<string, string>) } });

  it('a repository named like a sub-resource is reachable; the sub-resource of another repository too', async () => {
    const named = await get(`/api/v1/repository/${owner.username}/mirror`);
    expect(named.status).toBe(200);
    expect((await named.json()) as any).toMatchObject({ namespace: owner.username, name: 'mirror' });
    expect((await get(`/api/v1/repository/${owner.username}/notification/`)).status).toBe(200);
    // …and `<ns>/app/mirror` is app's mirror configuration (none yet).
    const sub = await get(`/api/v1/repository/${owner.username}/app/mirror`);
    expect(sub.status).toBe(404);
    expect(((await sub.json()) as any).detail).toMatch(/has no mirror configuration/);
  });

  it('405 with Allow for a path served with other methods, whichever table declares it', async () => {
    const r = await get(`/api/v1/repository/${owner.username}/app/mirror/sync-now`);
    expect(r.status).toBe(405);
    expect(r.headers.get('allow')).toBe('POST');
    expect(r.headers.get('content-type')).toMatch(/application\/problem\+json/);
    const v2 = await get(`/v2/${owner.username}/app/tags/list`, { method: 'DELETE' });
    expect(v2.status).toBe(405);
    expect((await v2.json()) as any).toMatchObject({ errors: [{ code: 'UNSUPPORTED' }] });
  });

  it('malformed percent-escapes and control characters in any path segment are a 400, never a 5xx', async () => {
    for (const path of [
      `/api/v1/repository/%E0%A4%A/x/mirror`,
      `/api/v1/repository/${owner.username}/app/notification/%E0%A4%A`,
      `/api/v1/repository/${owner.username}/app/notification/%00`,
      `/api/v1/repository/${owner.username}/app/permissions/user/%00`,
      `/api/v1/organization/%00/robots`,
      `/api/v1/user/robots/%ZZ`,
    ]) {
      for (const method of ['GET', 'PUT', 'DELETE']) {
        const r = await get(path, { method, headers: { 'Content-Type': 'application/json' }, body: method === 'PUT' ? '{"role":"read"}' : undefined });
        expect([400, 405], `${method} ${path}`).toContain(r.status);
        if (r.status === 400) expect(r.headers.get('content-type'), path).toMatch(/application\/problem\+json/);
      }
    }
    const v2 = await get(`/v2/${owner.username}/app/manifests/%E0%A4%A`);
    expect(v2.status).toBe(400);
    expect(((await v2.json()) as any).errors[0].code).toBe('MANIFEST_INVALID');
    expect(((await (await get(`/v2/${owner.username}/a%00pp/tags/list`)).json()) as any).errors[0].code).toBe('NAME_INVALID');
  });

  it('every schema runs before the handler: query strings and bodies get 400s naming the field', async () => {
    const runs = await get(`/api/v1/repository/${owner.username}/app/mirror/runs?limit=1&limit=2`);
    expect(runs.status).toBe(400);
    expect(((await runs.json()) as any).detail).toMatch(/limit may be given only once/);
    const perm = await get(`/api/v1/repository/${owner.username}/app/permissions/user/${owner.username}+bot`, {
      method: 'PUT',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ role: 7 }),
    });
    expect(perm.status).toBe(400);
    expect(((await perm.json()) as any).detail).toBe('role must be a string');
  });

  it('unknown endpoints answer in their API\'s error style', async () => {
    const v1 = await get('/api/v1/no/such/thing');
    expect(v1.status).toBe(404);
    expect(v1.headers.get('content-type')).toMatch(/application\/problem\+json/);
    const v2 = await get('/v2/_nothing');
    expect(v2.status).toBe(404);
    expect(((await v2.json()) as any).errors[0].code).toBe('NAME_UNKNOWN');
    expect((await get('/health/nothing')).status).toBe(404);
    expect((await get('/metrics', { method: 'POST' })).status).toBe(405);
  });
});
