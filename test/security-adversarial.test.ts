// The adversarial suite (issue 10, Done when), beyond test/security-egress.test.ts's host
// spellings: names that resolve to private addresses and redirects to them; the authorization
// matrix extended with cross-repository mounts, other repositories' upload sessions, tampered and
// cross-service tokens, and the management API's IDOR cases (another user's ids in your paths).
import { randomBytes } from 'node:crypto';
import { lookup } from 'node:dns/promises';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { hostname } from 'node:os';
import { BlockList } from 'node:net';
import { SignJWT } from 'jose';
import { request } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createOrganization, createRobot, namespaceByName, userByName } from '../auth/accounts.ts';
import { setPermission } from '../auth/grants.ts';
import { ISSUER } from '../auth/tokens.ts';
import { parseReference } from '../mirror/reference.ts';
import { UpstreamClient } from '../mirror/upstream.ts';
import { createRepository } from '../registry/repositories.ts';
import { checkedAgent, EgressPolicy, EgressRefused } from '../security/egress.ts';
import { basic, createTestUser, startTestApi } from './support/harness.ts';
import { OciClient, pushRandomImage, sha256 } from './support/oci-client.ts';

type Api = Awaited<ReturnType<typeof startTestApi>>;
type User = Awaited<ReturnType<typeof createTestUser>>;

const PRIVATE = new BlockList();
for (const [net, prefix] of [['10.0.0.0', 8], ['127.0.0.0', 8], ['172.16.0.0', 12], ['192.168.0.0', 16], ['169.254.0.0', 16]] as const) PRIVATE.addSubnet(net, prefix);

describe('SSRF: names resolving to private addresses, redirects to them', () => {
  let server: Server;
  let port: number;
  const hits: string[] = [];
  // This machine's own name: not refused by name (it is no "localhost"), resolving to loopback or
  // a private address — what an attacker's DNS name pointing at 127.0.0.1 looks like.
  const localName = hostname();
  let localNameIsPrivate = false;

  beforeAll(async () => {
    server = createServer((req, res) => {
      hits.push(req.url ?? '');
      if (req.url === '/v2/') return res.writeHead(200, { 'content-type': 'application/json' }).end('{}');
      if (req.url?.startsWith('/v2/library/app/tags/list')) {
        // The upstream redirects its tag list into the registry's own network.
        return res.writeHead(302, { location: `http://2130706433:${port}/private/tags` }).end();
      }
      res.writeHead(200, { 'content-type': 'application/json' }).end('{"tags":["leaked"]}');
    });
    await new Promise<void>((r) => server.listen(0, '0.0.0.0', r));
    port = (server.address() as AddressInfo).port;
    const addresses = await lookup(localName, { all: true }).catch(() => []);
    localNameIsPrivate = addresses.length > 0 && addresses.every((a) => a.family === 4 && PRIVATE.check(a.address));
  });
  afterAll(async () => {
    server.closeAllConnections();
    await new Promise((r) => server.close(r));
  });

  it('a public-looking name resolving to a private address is refused when dialled (mirrors, webhooks)', async (ctx) => {
    if (!localNameIsPrivate) return ctx.skip();
    new EgressPolicy().checkHost(localName); // accepted by name when saved…
    const agent = checkedAgent(new EgressPolicy());
    const before = hits.length;
    try {
      // …refused on the address actually dialled; with a trailing dot it is refused too (or does
      // not resolve at all, as /etc/hosts names do not): either way nothing is reached.
      await expect(request(`http://${localName}:${port}/v2/`, { dispatcher: agent })).rejects.toBeInstanceOf(EgressRefused);
      await expect(request(`http://${localName}.:${port}/v2/`, { dispatcher: agent })).rejects.toThrow();
    } finally {
      await agent.close();
    }
    const client = new UpstreamClient({ reference: parseReference(`${localName}:${port}/library/app`), username: 'u', password: 'p', verifyTls: false, policy: new EgressPolicy() });
    try {
      await expect(client.listTags()).rejects.toMatchObject({ kind: 'refused' });
    } finally {
      await client.close();
    }
    expect(hits.length).toBe(before);
  });

  it('an allowed upstream redirecting into the private network is not followed', async (ctx) => {
    if (!localNameIsPrivate) return ctx.skip();
    // The operator allowed this upstream by name; its redirect to 127.0.0.1 (spelled as a number)
    // is checked on its own and refused, with the credentials never sent there.
    const client = new UpstreamClient({ reference: parseReference(`${localName}:${port}/library/app`), username: 'u', password: 'p', verifyTls: false, policy: new EgressPolicy([localName]) });
    try {
      await expect(client.listTags()).rejects.toThrow(/private or reserved|not allowed/);
    } finally {
      await client.close();
    }
    expect(hits.filter((h) => h.startsWith('/private'))).toEqual([]);
    expect(hits.some((h) => h.startsWith('/v2/library/app/tags/list'))).toBe(true);
  });
});

describe('authorization: mounts, upload sessions, tokens, management API ids', () => {
  let api: Api;
  let alice: User;
  let mallory: User;
  let aliceRepo: string;
  let malloryRepo: string;
  let secretBlob: Buffer;
  let org: string;
  let robotShort: string;
  let robotToken: string;

  beforeAll(async () => {
    api = await startTestApi();
    [alice, mallory] = await Promise.all([createTestUser('adv-alice'), createTestUser('adv-mallory')]);
    aliceRepo = `${alice.username}/private`;
    malloryRepo = `${mallory.username}/mine`;
    const pushed = await pushRandomImage(new OciClient({ baseUrl: api.url, authorization: alice.authorization }), aliceRepo, 'v1');
    secretBlob = pushed.blobs[1]!;
    await pushRandomImage(new OciClient({ baseUrl: api.url, authorization: mallory.authorization }), malloryRepo, 'v1');
    const db = api.services.db;
    org = `advorg-${randomBytes(3).toString('hex')}`;
    await db.transaction(async (tx) => createOrganization(tx, { name: org, creatorUserId: (await userByName(tx, alice.username))!.id }));
    robotShort = 'deployer';
    const bot = await db.transaction(async (tx) => createRobot(tx, { namespace: (await namespaceByName(tx, org))!, shortName: robotShort }));
    robotToken = bot.token;
    const orgRepo = await createRepository(db, { fullName: `${org}/app` });
    await setPermission(db, orgRepo, bot.name, 'read');
  });
  afterAll(async () => api?.close());

  const v2 = (path: string, authorization: string | undefined, init: RequestInit = {}) =>
    fetch(`${api.url}/v2/${path}`, { ...init, headers: { ...(authorization ? { authorization } : {}), ...(init.headers ?? {}) } });
  const v1 = (method: string, path: string, authorization: string, body?: unknown) =>
    fetch(`${api.url}/api/v1${path}`, { method, headers: { authorization, 'content-type': 'application/json' }, ...(body === undefined ? {} : { body: JSON.stringify(body) }) });

  it("a mount from a repository the caller may not pull starts an ordinary upload and links nothing", async () => {
    const digest = sha256(secretBlob);
    const mount = await v2(`${malloryRepo}/blobs/uploads/?mount=${digest}&from=${aliceRepo}`, mallory.authorization, { method: 'POST' });
    expect(mount.status).toBe(202); // not 201: nothing was mounted
    expect(mount.headers.get('location')).toContain(`/v2/${malloryRepo}/blobs/uploads/`);
    expect((await v2(`${malloryRepo}/blobs/${digest}`, mallory.authorization, { method: 'HEAD' })).status).toBe(404);
    // The same with a token: mallory's token cannot be stretched to alice's repository either.
    const t = await fetch(`${api.url}/v2/auth?service=x&scope=repository:${malloryRepo}:pull,push&scope=repository:${aliceRepo}:pull`, { headers: { authorization: mallory.authorization } });
    const { token } = (await t.json()) as { token: string };
    const claims = JSON.parse(Buffer.from(token.split('.')[1]!, 'base64url').toString()) as { access: { name: string; actions: string[] }[] };
    expect(claims.access.find((a) => a.name === aliceRepo)?.actions).toEqual([]);
    const withToken = await v2(`${malloryRepo}/blobs/uploads/?mount=${digest}&from=${aliceRepo}`, `Bearer ${token}`, { method: 'POST' });
    expect(withToken.status).toBe(202);
    expect((await v2(`${malloryRepo}/blobs/${digest}`, mallory.authorization, { method: 'HEAD' })).status).toBe(404);
  });

  it("another repository's upload session can be neither used nor seen", async () => {
    const started = await v2(`${aliceRepo}/blobs/uploads/`, alice.authorization, { method: 'POST' });
    expect(started.status).toBe(202);
    const uuid = started.headers.get('docker-upload-uuid')!;
    expect(uuid).toBeTruthy();
    const bytes = randomBytes(64);
    // Through mallory's own repository: unknown.
    for (const [method, body] of [['GET', undefined], ['PATCH', bytes], ['PUT', undefined], ['DELETE', undefined]] as const) {
      const q = method === 'PUT' ? `?digest=${sha256(bytes)}` : '';
      const r = await v2(`${malloryRepo}/blobs/uploads/${uuid}${q}`, mallory.authorization, { method, ...(body ? { body, headers: { 'content-type': 'application/octet-stream' } } : {}) });
      expect([method, r.status]).toEqual([method, 404]);
    }
    // Through alice's repository: refused.
    expect((await v2(`${aliceRepo}/blobs/uploads/${uuid}`, mallory.authorization, { method: 'PATCH', body: bytes })).status).toBe(401);
    // The session is intact: alice completes it.
    const done = await v2(`${aliceRepo}/blobs/uploads/${uuid}?digest=${sha256(bytes)}`, alice.authorization, { method: 'PUT', body: bytes });
    expect(done.status).toBe(201);
  });

  it('tampered, foreign-key, wrong-audience, alg=none and cross-service tokens are refused', async () => {
    const t = await fetch(`${api.url}/v2/auth?service=x&scope=repository:${malloryRepo}:pull`, { headers: { authorization: mallory.authorization } });
    const { token } = (await t.json()) as { token: string };
    const [h, p, sig] = token.split('.') as [string, string, string];
    const payload = JSON.parse(Buffer.from(p, 'base64url').toString()) as Record<string, unknown>;
    const aud = payload.aud as string;
    const b64 = (o: unknown) => Buffer.from(JSON.stringify(o)).toString('base64url');
    const forged = [
      // The payload widened to alice's repository, the signature kept.
      `${h}.${b64({ ...payload, access: [{ type: 'repository', name: aliceRepo, actions: ['pull', 'push'] }] })}.${sig}`,
      // alg none.
      `${b64({ alg: 'none', typ: 'JWT' })}.${b64({ ...payload, access: [{ type: 'repository', name: aliceRepo, actions: ['pull'] }] })}.`,
      // Signed with a key of our own.
      await new SignJWT({ ...payload, access: [{ type: 'repository', name: aliceRepo, actions: ['pull'] }] }).setProtectedHeader({ alg: 'HS256' }).sign(randomBytes(32)),
      // Signed with the right key for another service (audience) — as another deployment sharing the key would.
      await new SignJWT({ ...payload, aud: `other-${aud}`, access: [{ type: 'repository', name: malloryRepo, actions: ['pull'] }] }).setProtectedHeader({ alg: 'HS256' }).sign(api.services.config.tokenSigningKey),
      // The right key and audience, another issuer.
      await new SignJWT({ ...payload, iss: `${ISSUER}-other`, access: [{ type: 'repository', name: malloryRepo, actions: ['pull'] }] }).setProtectedHeader({ alg: 'HS256' }).sign(api.services.config.tokenSigningKey),
    ];
    for (const [i, f] of forged.entries()) {
      const r = await v2(`${aliceRepo}/manifests/v1`, `Bearer ${f}`);
      expect([i, r.status]).toEqual([i, 401]);
      expect(r.headers.get('www-authenticate'), String(i)).toContain('error="invalid_token"');
      expect((await v2(`${malloryRepo}/manifests/v1`, `Bearer ${f}`)).status).toBe(401);
    }
    // The genuine token works where it should, so the refusals above are the tampering's.
    expect((await v2(`${malloryRepo}/manifests/v1`, `Bearer ${token}`)).status).toBe(200);
    // Cross-service: a registry token is no API token, an API token no registry token, and the
    // token endpoint does not trade a bearer token for another.
    expect((await v1('GET', '/user/', `Bearer ${token}`)).status).toBe(401);
    const app = (await (await v1('POST', '/user/apptoken', mallory.authorization, { title: 'adv' })).json()) as { token: { token_code: string } };
    expect((await v1('GET', '/user/', `Bearer ${app.token.token_code}`)).status).toBe(200);
    expect((await v2(`${malloryRepo}/manifests/v1`, `Bearer ${app.token.token_code}`)).status).toBe(401);
    expect((await fetch(`${api.url}/v2/auth?service=x&scope=repository:${malloryRepo}:pull`, { headers: { authorization: `Bearer ${token}` } })).status).toBe(401);
  });

  it("the management API refuses another user's ids in the caller's paths (IDOR)", async () => {
    // A notification of alice's repository, addressed through mallory's.
    const created = await v1('POST', `/repository/${aliceRepo}/notification/`, alice.authorization, { event: 'repo_mirror_sync_failed', method: 'webhook', config: { url: 'https://hooks.example.com/a' } });
    expect(created.status).toBe(201);
    const { uuid } = (await created.json()) as { uuid: string };
    expect((await v1('GET', `/repository/${malloryRepo}/notification/${uuid}`, mallory.authorization)).status).toBe(404);
    expect((await v1('DELETE', `/repository/${malloryRepo}/notification/${uuid}`, mallory.authorization)).status).toBe(404);
    expect((await v1('GET', `/repository/${aliceRepo}/notification/${uuid}`, alice.authorization)).status).toBe(200);

    // Alice's organization's robot: mallory may neither read, regenerate, delete nor grant it.
    const robotPath = `/organization/${org}/robots/${robotShort}`;
    for (const [method, path] of [['GET', robotPath], ['POST', `${robotPath}/regenerate`], ['DELETE', robotPath], ['GET', `/organization/${org}/robots`], ['PUT', `/organization/${org}/robots/planted`]] as const) {
      const r = await v1(method, path, mallory.authorization, method === 'PUT' ? {} : undefined);
      expect([method, path, r.status]).toEqual([method, path, 403]);
    }
    expect((await v2(`${org}/app/tags/list`, basic(`${org}+${robotShort}`, robotToken))).status).toBe(200);
    // A user's robots are their own: mallory's /user/robots is hers, alice's robot name is not found there.
    expect((await v1('GET', `/user/robots/${robotShort}`, mallory.authorization)).status).toBe(404);
    // Granting herself on alice's repository, or alice's robot on her own.
    expect((await v1('PUT', `/repository/${aliceRepo}/permissions/user/${mallory.username}`, mallory.authorization, { role: 'admin' })).status).toBe(404);
    const grantForeignRobot = await v1('PUT', `/repository/${malloryRepo}/permissions/user/${org}+${robotShort}`, mallory.authorization, { role: 'write' });
    expect(grantForeignRobot.status).toBeGreaterThanOrEqual(400);
    expect(grantForeignRobot.status).toBeLessThan(500);
    // Namespace policy of someone else's namespace.
    expect((await v1('PUT', `/namespace/${alice.username}/replication`, mallory.authorization, { locations: null })).status).toBe(403);
    // Operator endpoints.
    expect((await v1('GET', `/blobs/${sha256(secretBlob)}/placements`, mallory.authorization)).status).toBe(403);
  });
});
