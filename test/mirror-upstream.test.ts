// The mirror's building blocks: fnmatch globs (Quay's semantics), external references and the
// SSRF policy, challenge/Link/Retry-After/no_proxy parsing, webhook signatures — and the upstream
// client against a real distribution registry: Basic auth, token auth, pagination, proxies,
// Retry-After.
import { createServer as createHttpServer, type Server } from 'node:http';
import net from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { globToRegExp, TagFilter } from '../mirror/globs.ts';
import { parseReference, UpstreamHostPolicy } from '../mirror/reference.ts';
import { bypassesProxy, nextLink, parseChallenge, parseRetryAfter, UpstreamClient, UpstreamError } from '../mirror/upstream.ts';
import { signBody, verifySignature } from '../mirror/webhooks.ts';
import { fillRepository, startUpstreamRegistry, type UpstreamRegistry } from './support/upstream-registry.ts';

describe('tag globs (fnmatch)', () => {
  const tags = ['v1.0', 'v1.10', 'v1', 'v10', 'latest', 'latest-dev', 'a', 'b', 'c', 'd', 'ab', 'v1.x', 'v2.0', '[abc]', 'x?y'];
  const match = (glob: string) => new TagFilter([glob]).filter(tags);

  it('matches as Python fnmatch does', () => {
    expect(match('v1.*')).toEqual(['v1.0', 'v1.10', 'v1.x']);
    expect(match('latest')).toEqual(['latest']);
    expect(match('*')).toEqual(tags);
    expect(match('[abc]')).toEqual(['a', 'b', 'c']);
    expect(match('[!abc]')).toEqual(['d']);
    expect(match('?')).toEqual(['a', 'b', 'c', 'd']);
    expect(match('v1.?')).toEqual(['v1.0', 'v1.x']);
    expect(match('v[0-9]*')).toEqual(['v1.0', 'v1.10', 'v1', 'v10', 'v1.x', 'v2.0']);
    // A `[` without `]` is literal; regex characters are literal.
    expect(match('[abc')).toEqual([]);
    expect(globToRegExp('[abc').test('[abc')).toBe(true);
    expect(match('x?y')).toEqual(['x?y']);
    expect(globToRegExp('v1.0').test('v1x0')).toBe(false);
    expect(globToRegExp('[]]').test(']')).toBe(true);
    expect(globToRegExp('[!]]').test('a')).toBe(true);
    expect(globToRegExp('[!]]').test(']')).toBe(false);
    // Case-sensitive, as fnmatch on POSIX.
    expect(match('LATEST')).toEqual([]);
    expect(new TagFilter(['v1.*', 'latest']).filter(tags)).toEqual(['v1.0', 'v1.10', 'latest', 'v1.x']);
  });
});

describe('external references and the SSRF policy', () => {
  it('parses Quay-style references', () => {
    expect(parseReference('registry.example.com/library/nginx')).toMatchObject({ hostname: 'registry.example.com', port: undefined, repository: 'library/nginx', apiAuthority: 'registry.example.com' });
    expect(parseReference('quay.io:443/org/team/app')).toMatchObject({ hostname: 'quay.io', port: 443, repository: 'org/team/app' });
    expect(parseReference('docker.io/nginx')).toMatchObject({ apiAuthority: 'registry-1.docker.io', repository: 'library/nginx' });
    expect(parseReference('[::1]:5000/a/b')).toMatchObject({ hostname: '::1', port: 5000 });
    for (const bad of ['', 'nginx', 'https://x.io/a', 'x.io/a:latest', 'x.io/A', 'x.io:0/a', 'x.io:99999/a', 'x .io/a', 'user@x.io/a', 'x.io/']) {
      expect(() => parseReference(bad), bad).toThrow();
    }
  });

  it('refuses private and loopback hosts unless allowed, by name and by resolved address', () => {
    const p = new UpstreamHostPolicy();
    expect(() => p.checkHost('registry.example.com')).not.toThrow();
    for (const h of ['127.0.0.1', '10.0.0.1', '169.254.169.254', '192.168.1.1', '::1', 'fd00::1', 'localhost', 'metadata.google.internal', 'foo.local']) {
      expect(() => p.checkHost(h), h).toThrow();
    }
    expect(() => p.checkResolved('evil.example.com', '127.0.0.1')).toThrow(/private or reserved/);
    const allowed = new UpstreamHostPolicy(['127.0.0.1', '10.0.0.0/8', 'registry.internal']);
    expect(() => allowed.checkHost('127.0.0.1')).not.toThrow();
    expect(() => allowed.checkHost('10.9.8.7')).not.toThrow();
    expect(() => allowed.checkHost('registry.internal')).not.toThrow();
    expect(() => allowed.checkHost('192.168.0.1')).toThrow();
  });
});

describe('protocol details', () => {
  it('parses WWW-Authenticate challenges', () => {
    expect(parseChallenge('Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/nginx:pull"')).toEqual({
      scheme: 'bearer',
      params: { realm: 'https://auth.docker.io/token', service: 'registry.docker.io', scope: 'repository:library/nginx:pull' },
    });
    expect(parseChallenge('Bearer realm="r",scope="repository:a:pull,push"')?.params.scope).toBe('repository:a:pull,push');
    expect(parseChallenge('Basic realm="Registry Realm"')).toEqual({ scheme: 'basic', params: { realm: 'Registry Realm' } });
    expect(parseChallenge('Negotiate')).toBeUndefined();
  });

  it('follows Link rel="next", reads Retry-After, applies no_proxy', () => {
    expect(nextLink('</v2/a/tags/list?last=b&n=2>; rel="next"')).toBe('/v2/a/tags/list?last=b&n=2');
    expect(nextLink('<https://x/1>; rel="prev", <https://x/3>; rel="next"')).toBe('https://x/3');
    expect(nextLink(undefined)).toBeUndefined();
    expect(parseRetryAfter('7')).toBe(7);
    expect(parseRetryAfter(new Date(Date.now() + 10_000).toUTCString())).toBeGreaterThanOrEqual(9);
    expect(parseRetryAfter('soon')).toBeUndefined();
    expect(bypassesProxy('*', 'x.io', 443)).toBe(true);
    expect(bypassesProxy('example.com, .corp.net', 'registry.example.com', 443)).toBe(true);
    expect(bypassesProxy('example.com', 'example.com.evil.io', 443)).toBe(false);
    expect(bypassesProxy('.corp.net', 'a.corp.net', 443)).toBe(true);
    expect(bypassesProxy('10.0.0.0/8', '10.1.2.3', 443)).toBe(true);
    expect(bypassesProxy('x.io:5000', 'x.io', 443)).toBe(false);
    expect(bypassesProxy('x.io:5000', 'x.io', 5000)).toBe(true);
    expect(bypassesProxy(null, 'x.io', 443)).toBe(false);
  });

  it('signs webhook bodies with the timestamp bound in; stale or altered deliveries fail', () => {
    const body = '{"event":"repo_mirror_sync_failed"}';
    const ts = Math.floor(Date.now() / 1000);
    const signature = signBody('secret', ts, body);
    expect(signature).toMatch(/^sha256=[0-9a-f]{64}$/);
    expect(verifySignature('secret', { signature, timestamp: String(ts) }, body)).toBe(true);
    expect(verifySignature('secret', { signature, timestamp: String(ts) }, `${body} `)).toBe(false);
    expect(verifySignature('secret', { signature, timestamp: String(ts + 1) }, body)).toBe(false);
    const old = ts - 3600;
    expect(verifySignature('secret', { signature: signBody('secret', old, body), timestamp: String(old) }, body)).toBe(false);
  });
});

describe('upstream client against a distribution registry', () => {
  let basicUpstream: UpstreamRegistry;
  let tokenUpstream: UpstreamRegistry;
  const policy = new UpstreamHostPolicy(['127.0.0.1']);
  const tags = Array.from({ length: 25 }, (_, i) => `t${String(i).padStart(2, '0')}`);

  beforeAll(async () => {
    [basicUpstream, tokenUpstream] = await Promise.all([startUpstreamRegistry(), startUpstreamRegistry({ tokenAuth: true })]);
    await fillRepository(basicUpstream, 'lib/many', { tags, layerSize: 256, sharedLayerSize: 256 });
    await fillRepository(tokenUpstream, 'lib/few', { tags: ['a', 'b'] });
  });

  afterAll(async () => {
    await basicUpstream?.close();
    await tokenUpstream?.close();
  });

  const client = (u: UpstreamRegistry, repo: string, extra: Partial<ConstructorParameters<typeof UpstreamClient>[0]> = {}) =>
    new UpstreamClient({ reference: parseReference(`${u.authority}/${repo}`), username: u.username, password: u.password, verifyTls: false, policy, ...extra });

  it('lists every tag across pages (Basic auth, plain HTTP after the TLS probe)', async () => {
    const c = client(basicUpstream, 'lib/many', { tagPageSize: 10 });
    try {
      const before = basicUpstream.count((r) => r.path.endsWith('/tags/list') && r.status === 200);
      expect((await c.listTags()).sort()).toEqual(tags);
      // 25 tags in pages of 10, each page found through the previous one's Link header.
      expect(basicUpstream.count((r) => r.path.endsWith('/tags/list') && r.status === 200) - before).toBe(3);
      await expect(client(basicUpstream, 'lib/many', { password: 'wrong' }).listTags()).rejects.toMatchObject({ kind: 'auth' });
      await expect(client(basicUpstream, 'lib/many', { username: null, password: null }).listTags()).rejects.toMatchObject({ kind: 'auth' });
    } finally {
      await c.close();
    }
  });

  it('uses the token flow when challenged with Bearer, and caches the token', async () => {
    const c = client(tokenUpstream, 'lib/few');
    try {
      expect((await c.listTags()).sort()).toEqual(['a', 'b']);
      const head = await c.headManifest('a');
      expect(head?.digest).toMatch(/^sha256:/);
      const m = await c.getManifest('a');
      expect(m.digest).toBe(head!.digest);
      expect(c.requests.token).toBe(1);
      expect(await c.headManifest('nope')).toBeUndefined();
      await expect(client(tokenUpstream, 'lib/few', { password: 'wrong' }).listTags()).rejects.toMatchObject({ kind: 'auth' });
    } finally {
      await c.close();
    }
  });

  it('goes through the configured proxy unless no_proxy exempts the host', async () => {
    const connects: string[] = [];
    const proxy: Server = createHttpServer((_req, res) => res.writeHead(405).end());
    proxy.on('connect', (req, socket, head) => {
      connects.push(req.url ?? '');
      const [host, port] = (req.url ?? '').split(':');
      const target = net.connect(Number(port), host!, () => {
        socket.write('HTTP/1.1 200 Connection Established\r\n\r\n');
        target.write(head);
        target.pipe(socket);
        socket.pipe(target);
      });
      target.on('error', () => socket.destroy());
      socket.on('error', () => target.destroy());
    });
    await new Promise<void>((r) => proxy.listen(0, '127.0.0.1', r));
    const port = (proxy.address() as net.AddressInfo).port;
    try {
      const via = client(basicUpstream, 'lib/many', { proxy: { http_proxy: `http://127.0.0.1:${port}`, https_proxy: `http://127.0.0.1:${port}` } });
      expect((await via.listTags()).length).toBe(25);
      await via.close();
      expect(connects.some((c) => c === basicUpstream.authority)).toBe(true);
      const seen = connects.length;
      const direct = client(basicUpstream, 'lib/many', { proxy: { http_proxy: `http://127.0.0.1:${port}`, no_proxy: '127.0.0.1' } });
      expect((await direct.listTags()).length).toBe(25);
      await direct.close();
      expect(connects.length).toBe(seen);
    } finally {
      await new Promise<void>((r) => proxy.close(() => r()));
    }
  });

  it('reports 429/503 as throttled with the upstream\'s Retry-After', async () => {
    const throttle = createHttpServer((_req, res) => res.writeHead(429, { 'retry-after': '3' }).end());
    await new Promise<void>((r) => throttle.listen(0, '127.0.0.1', r));
    const port = (throttle.address() as net.AddressInfo).port;
    const c = new UpstreamClient({ reference: parseReference(`127.0.0.1:${port}/a/b`), verifyTls: false, policy });
    try {
      const e = await c.listTags().catch((x: unknown) => x);
      expect(e).toBeInstanceOf(UpstreamError);
      expect(e).toMatchObject({ kind: 'throttled', status: 429, retryAfterSeconds: 3 });
    } finally {
      await c.close();
      await new Promise<void>((r) => throttle.close(() => r()));
    }
  });

  it('refuses an upstream the policy does not allow', () => {
    expect(() => client(basicUpstream, 'lib/many', { policy: new UpstreamHostPolicy() })).toThrow(/private or reserved/);
  });
});
