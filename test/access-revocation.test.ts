// Authorization is cached in each API process (auth/access-cache.ts), keyed by the access
// version that every permission change bumps in its own transaction; so is which blobs a
// repository may use (registry/blob-server.ts), keyed by the blob version that deleting a blob or
// a link bumps. These tests run the production start with two worker processes, warm both
// processes' caches, revoke or delete, and expect the very next requests — on both processes —
// to be refused.
import http from 'node:http';
import { randomBytes } from 'node:crypto';
import { eq } from 'drizzle-orm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createOrganization, createRobot, namespaceByName, userByName } from '../auth/accounts.ts';
import { setPermission } from '../auth/grants.ts';
import { blobs } from '../db/schema.ts';
import { createRepository } from '../registry/repositories.ts';
import { type CompiledApi, startCompiledApi } from './support/compiled-api.ts';
import { basic, createTestUser, testDatabase } from './support/harness.ts';
import { OciClient, sha256 } from './support/oci-client.ts';

/** A GET on a new connection each time: node:cluster hands connections to the workers
 * round-robin, so consecutive requests alternate between the two processes. */
function status(api: CompiledApi, path: string, authorization: string, method = 'GET'): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = http.request(`${api.url}${path}`, { method, agent: false, headers: { authorization } }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode!));
    });
    req.on('error', reject);
    req.end();
  });
}

/** Statuses of `n` consecutive requests (each process serves at least n/2 - 1 of them). */
async function statuses(api: CompiledApi, path: string, authorization: string, n = 6, method = 'GET'): Promise<number[]> {
  const out: number[] = [];
  for (let i = 0; i < n; i++) out.push(await status(api, path, authorization, method));
  return out;
}

describe('revocations despite the per-process authorization cache', () => {
  let api: CompiledApi;
  const org = `rev-${randomBytes(3).toString('hex')}`;
  const repo = `${org}/app`;
  let admin: Awaited<ReturnType<typeof createTestUser>>;
  let reader: Awaited<ReturnType<typeof createTestUser>>;
  let robot: { name: string; token: string };

  beforeAll(async () => {
    admin = await createTestUser('revadmin');
    reader = await createTestUser('revreader');
    const { db, close } = testDatabase();
    try {
      await db.transaction(async (tx) => createOrganization(tx, { name: org, creatorUserId: (await userByName(tx, admin.username))!.id }));
      const r = await createRepository(db, { fullName: repo });
      await setPermission(db, r, reader.username, 'read');
      const bot = await db.transaction(async (tx) => createRobot(tx, { namespace: (await namespaceByName(tx, org))!, shortName: 'puller' }));
      await setPermission(db, r, bot.name, 'read');
      robot = { name: bot.name, token: bot.token };
    } finally {
      await close();
    }
    api = await startCompiledApi({ workers: 2 });
  }, 180_000);
  afterAll(async () => {
    await api?.stop();
  });

  it('a revoked permission is refused on the next request, on every process', async () => {
    const tags = `/v2/${repo}/tags/list`;
    expect(await statuses(api, tags, reader.authorization)).toEqual([200, 200, 200, 200, 200, 200]);
    expect(await status(api, `/api/v1/repository/${repo}/permissions/user/${reader.username}`, admin.authorization, 'DELETE')).toBe(204);
    expect(await statuses(api, tags, reader.authorization)).toEqual([401, 401, 401, 401, 401, 401]);
    // A new grant is honoured as promptly.
    const grant = await fetch(`${api.url}/api/v1/repository/${repo}/permissions/user/${reader.username}`, {
      method: 'PUT',
      headers: { authorization: admin.authorization, 'content-type': 'application/json' },
      body: JSON.stringify({ role: 'read' }),
    });
    expect(grant.status).toBe(200);
    expect(await statuses(api, tags, reader.authorization)).toEqual([200, 200, 200, 200, 200, 200]);
  });

  it("a deleted robot's bearer token is refused on the next request, on every process", async () => {
    const tokenRes = await fetch(`${api.url}/v2/auth?scope=repository:${repo}:pull`, { headers: { authorization: basic(robot.name, robot.token) } });
    expect(tokenRes.status).toBe(200);
    const { token } = (await tokenRes.json()) as { token: string };
    const bearer = `Bearer ${token}`;
    const manifest = `/v2/${repo}/manifests/latest`;
    const tags = `/v2/${repo}/tags/list`;
    // Warm every cache the pull path has: token, principal, access.
    expect(await statuses(api, tags, bearer)).toEqual([200, 200, 200, 200, 200, 200]);
    expect(await statuses(api, manifest, bearer, 4)).toEqual([404, 404, 404, 404]);
    const short = robot.name.slice(robot.name.indexOf('+') + 1);
    expect(await status(api, `/api/v1/organization/${org}/robots/${short}`, admin.authorization, 'DELETE')).toBe(204);
    expect(await statuses(api, tags, bearer)).toEqual([401, 401, 401, 401, 401, 401]);
    expect(await statuses(api, tags, basic(robot.name, robot.token))).toEqual([401, 401, 401, 401, 401, 401]);
  });

  it('a deleted blob is unknown on the next request, on every process; a pushed one is known at once', async () => {
    const client = new OciClient({ baseUrl: api.url, authorization: admin.authorization });
    const [unlinked, collected] = [randomBytes(1000), randomBytes(1000)];
    const head = (bytes: Buffer) => statuses(api, `/v2/${repo}/blobs/${sha256(bytes)}`, admin.authorization, 6, 'HEAD');
    // Unknown before the push, known right after it: a miss is never remembered.
    expect(await head(unlinked)).toEqual([404, 404, 404, 404, 404, 404]);
    await client.pushBlob(repo, unlinked);
    await client.pushBlob(repo, collected);
    expect(await head(unlinked)).toEqual([200, 200, 200, 200, 200, 200]);
    expect(await head(collected)).toEqual([200, 200, 200, 200, 200, 200]);
    // Unlinked from the repository through /v2.
    expect(await status(api, `/v2/${repo}/blobs/${sha256(unlinked)}`, admin.authorization, 'DELETE')).toBe(202);
    expect(await head(unlinked)).toEqual([404, 404, 404, 404, 404, 404]);
    // The blob row deleted, as garbage collection's last step does (its links go with it).
    const { db, close } = testDatabase();
    try {
      expect((await db.delete(blobs).where(eq(blobs.digest, sha256(collected))).returning()).length).toBe(1);
    } finally {
      await close();
    }
    expect(await head(collected)).toEqual([404, 404, 404, 404, 404, 404]);
  });
});
