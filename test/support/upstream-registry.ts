// A real upstream registry for the mirror tests and the mirror benchmark: the CNCF distribution
// registry (.tools/bin/registry, pinned in scripts/tools.env) with htpasswd (bcrypt) auth, on a
// free loopback port, with its own storage folder. In front of it sits a small counting proxy,
// which is the address mirrors are pointed at. The proxy
//   - counts requests by method and path (to prove a shared layer is fetched once),
//   - can emulate Docker Hub's token auth (401 Bearer challenge → /token with Basic credentials),
//   - can slow blob downloads down (so a test can act "mid-run"),
//   - drops the connection when the registry is stopped, as a dead upstream would.
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, request as httpRequest, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { tmpdir } from 'node:os';
import path from 'node:path';
import bcrypt from 'bcryptjs';
import { freePort } from '../../devstack/ports.ts';
import { ManagedProcess } from '../../devstack/process.ts';
import { toolPath } from '../../devstack/tools.ts';
import { OciClient, sha256 } from './oci-client.ts';

export interface UpstreamOptions {
  username?: string;
  password?: string;
  /** Emulate Docker Hub: Bearer challenge and a token endpoint on the proxy. */
  tokenAuth?: boolean;
}

export interface RequestRecord {
  method: string;
  path: string;
  status: number;
}

export class UpstreamRegistry {
  readonly username: string;
  readonly password: string;
  readonly dir: string;
  registryPort = 0;
  proxyPort = 0;
  /** Requests the proxy forwarded (with the registry's status). */
  readonly requests: RequestRecord[] = [];
  /** Milliseconds each blob GET is held back before it is forwarded. */
  blobDelayMs = 0;
  /** Called for each request before it is forwarded. */
  onRequest: ((req: IncomingMessage) => void) | undefined;
  /** Answers a request instead of the registry when it returns a response (e.g. a 429). */
  intercept: ((method: string, path: string) => { status: number; headers?: Record<string, string> } | undefined) | undefined;
  /** Requests being served right now, and the most there ever were at once (registry API only). */
  inFlight = 0;
  maxInFlight = 0;
  private process: ManagedProcess | undefined;
  private proxy: Server | undefined;
  private readonly tokens = new Set<string>();

  constructor(readonly opts: UpstreamOptions = {}) {
    this.username = opts.username ?? 'mirror-reader';
    this.password = opts.password ?? `pw-${randomBytes(6).toString('hex')}`;
    this.dir = mkdtempSync(path.join(tmpdir(), 'meridian-upstream-'));
  }

  /** `127.0.0.1:<proxy port>`: what an external_reference starts with. */
  get authority(): string {
    return `127.0.0.1:${this.proxyPort}`;
  }

  /** Basic credentials straight to the registry (for filling it). */
  get directClient(): OciClient {
    return new OciClient({
      baseUrl: `http://127.0.0.1:${this.registryPort}`,
      authorization: `Basic ${Buffer.from(`${this.username}:${this.password}`).toString('base64')}`,
    });
  }

  get running(): boolean {
    return this.process?.running ?? false;
  }

  async start(): Promise<void> {
    this.registryPort = await freePort();
    const hash = bcrypt.hashSync(this.password, 10);
    writeFileSync(path.join(this.dir, 'htpasswd'), `${this.username}:${hash}\n`);
    writeFileSync(
      path.join(this.dir, 'config.yml'),
      [
        'version: 0.1',
        'log:',
        '  level: warn',
        '  accesslog:',
        '    disabled: true',
        'storage:',
        '  filesystem:',
        `    rootdirectory: ${path.join(this.dir, 'data')}`,
        '  delete:',
        '    enabled: true',
        'http:',
        `  addr: 127.0.0.1:${this.registryPort}`,
        'auth:',
        '  htpasswd:',
        '    realm: upstream-test',
        `    path: ${path.join(this.dir, 'htpasswd')}`,
        '',
      ].join('\n'),
    );
    const port = this.registryPort;
    this.process = new ManagedProcess({
      name: 'upstream registry',
      command: toolPath('registry'),
      args: ['serve', path.join(this.dir, 'config.yml')],
      logFile: path.join(this.dir, 'registry.log'),
      ready: async () => {
        const r = await fetch(`http://127.0.0.1:${port}/v2/`).catch(() => undefined);
        return r?.status === 401;
      },
      readyTimeoutMs: 30_000,
    });
    await this.process.start();
    await this.startProxy();
  }

  /** Stops the registry process (the proxy stays and drops connections). */
  async stopRegistry(): Promise<void> {
    await this.process?.stop(5000);
  }

  async startRegistry(): Promise<void> {
    if (!this.running) await this.process?.start();
  }

  async close(): Promise<void> {
    await new Promise<void>((r) => (this.proxy ? this.proxy.close(() => r()) : r()));
    this.proxy?.closeAllConnections();
    await this.process?.stop(5000);
    rmSync(this.dir, { recursive: true, force: true });
  }

  count(predicate: (r: RequestRecord) => boolean): number {
    return this.requests.filter(predicate).length;
  }

  blobGets(digest: string): number {
    return this.count((r) => r.method === 'GET' && r.path.endsWith(`/blobs/${digest}`));
  }

  private async startProxy(): Promise<void> {
    this.proxyPort = await freePort();
    const basic = `Basic ${Buffer.from(`${this.username}:${this.password}`).toString('base64')}`;
    const server = createServer((req, res) => void this.handle(req, res, basic));
    await new Promise<void>((r) => server.listen(this.proxyPort, '127.0.0.1', r));
    this.proxy = server;
  }

  private async handle(req: IncomingMessage, res: ServerResponse, basic: string): Promise<void> {
    const url = new URL(req.url ?? '/', `http://${this.authority}`);
    if (this.opts.tokenAuth && url.pathname === '/token') {
      if (req.headers.authorization !== basic) {
        res.writeHead(401, { 'content-type': 'application/json' }).end('{"details":"bad credentials"}');
        return;
      }
      const token = randomBytes(16).toString('hex');
      this.tokens.add(token);
      res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ token, expires_in: 300 }));
      return;
    }
    const headers = { ...req.headers, host: `127.0.0.1:${this.registryPort}` };
    if (this.opts.tokenAuth) {
      const bearer = /^Bearer (.+)$/.exec(req.headers.authorization ?? '')?.[1];
      if (!bearer || !this.tokens.has(bearer)) {
        const repo = /^\/v2\/(.+?)\/(?:manifests|blobs|tags|referrers)\//.exec(url.pathname)?.[1] ?? 'catalog';
        res
          .writeHead(401, {
            'content-type': 'application/json',
            'www-authenticate': `Bearer realm="http://${this.authority}/token",service="upstream-test",scope="repository:${repo}:pull"`,
          })
          .end('{"errors":[{"code":"UNAUTHORIZED"}]}');
        return;
      }
      headers.authorization = basic;
    }
    this.onRequest?.(req);
    const canned = this.intercept?.(req.method ?? 'GET', url.pathname);
    if (canned) {
      this.requests.push({ method: req.method ?? 'GET', path: url.pathname, status: canned.status });
      res.writeHead(canned.status, { 'content-type': 'application/json', ...canned.headers }).end('{"errors":[{"code":"TOOMANYREQUESTS"}]}');
      return;
    }
    this.inFlight++;
    this.maxInFlight = Math.max(this.maxInFlight, this.inFlight);
    let counted = true;
    const done = () => {
      if (counted) {
        counted = false;
        this.inFlight--;
      }
    };
    res.once('close', done);
    if (this.blobDelayMs > 0 && req.method === 'GET' && url.pathname.includes('/blobs/')) {
      await new Promise((r) => setTimeout(r, this.blobDelayMs));
    }
    if (!this.running) {
      // A dead upstream: the connection goes away.
      req.socket.destroy();
      this.requests.push({ method: req.method ?? 'GET', path: url.pathname, status: 0 });
      return;
    }
    const upstream = httpRequest(
      { host: '127.0.0.1', port: this.registryPort, method: req.method, path: req.url, headers },
      (ur) => {
        this.requests.push({ method: req.method ?? 'GET', path: url.pathname, status: ur.statusCode ?? 0 });
        const out = { ...ur.headers };
        // The registry's own challenge names its own address; keep it pointing at the proxy.
        res.writeHead(ur.statusCode ?? 502, out);
        ur.pipe(res);
      },
    );
    upstream.on('error', () => {
      this.requests.push({ method: req.method ?? 'GET', path: url.pathname, status: 0 });
      req.socket.destroy();
    });
    req.pipe(upstream);
  }
}

export async function startUpstreamRegistry(opts: UpstreamOptions = {}): Promise<UpstreamRegistry> {
  const u = new UpstreamRegistry(opts);
  await u.start();
  return u;
}

// ------------------------------------------------------------------ filling it

const OCI_MANIFEST = 'application/vnd.oci.image.manifest.v1+json';
const OCI_INDEX = 'application/vnd.oci.image.index.v1+json';

export interface PushedTag {
  tag: string;
  digest: string;
  kind: 'image' | 'index';
}

export interface FilledRepository {
  repository: string;
  tags: PushedTag[];
  /** The layer every image shares. */
  sharedLayer: string;
  digestOf(tag: string): string;
}

/** Pushes an image under `tag`, or by digest only when `tag` is undefined. */
async function pushImage(c: OciClient, repo: string, tag: string | undefined, layers: Buffer[], platform: { os: string; architecture: string }): Promise<{ digest: string; size: number }> {
  const config = Buffer.from(JSON.stringify({ ...platform, rootfs: { type: 'layers', diff_ids: [] }, nonce: randomBytes(8).toString('hex') }));
  for (const b of [config, ...layers]) {
    const head = await c.fetch(`/v2/${repo}/blobs/${sha256(b)}`, { method: 'HEAD' });
    if (head.status !== 200) await c.pushBlob(repo, b);
  }
  const manifest = {
    schemaVersion: 2,
    mediaType: OCI_MANIFEST,
    config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: sha256(config), size: config.length },
    layers: layers.map((b) => ({ mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', digest: sha256(b), size: b.length })),
  };
  const reference = tag ?? sha256(Buffer.from(JSON.stringify(manifest)));
  const { digest, response } = await c.pushManifest(repo, reference, manifest, OCI_MANIFEST);
  if (response.status !== 201) throw new Error(`push ${repo}:${reference}: ${response.status} ${await response.text()}`);
  return { digest, size: Buffer.byteLength(JSON.stringify(manifest)) };
}

/**
 * Fills `repository` with the given tags: every image has a shared base layer plus one layer of
 * its own; tags in `multiArch` are two-platform indexes (amd64, arm64) whose images share the base
 * layer too.
 */
export async function fillRepository(
  u: UpstreamRegistry,
  repository: string,
  opts: { tags: string[]; multiArch?: string[]; sharedLayerSize?: number; layerSize?: number },
): Promise<FilledRepository> {
  const c = u.directClient;
  const shared = randomBytes(opts.sharedLayerSize ?? 64 * 1024);
  const multi = new Set(opts.multiArch ?? []);
  const pushed: PushedTag[] = [];
  for (const tag of opts.tags) {
    const own = () => randomBytes(opts.layerSize ?? 8 * 1024);
    if (!multi.has(tag)) {
      const { digest } = await pushImage(c, repository, tag, [shared, own()], { os: 'linux', architecture: 'amd64' });
      pushed.push({ tag, digest, kind: 'image' });
      continue;
    }
    const children = [];
    for (const architecture of ['amd64', 'arm64']) {
      const m = await pushImage(c, repository, undefined, [shared, own()], { os: 'linux', architecture });
      children.push({ mediaType: OCI_MANIFEST, digest: m.digest, size: m.size, platform: { os: 'linux', architecture } });
    }
    const index = { schemaVersion: 2, mediaType: OCI_INDEX, manifests: children };
    const { digest, response } = await c.pushManifest(repository, tag, index, OCI_INDEX);
    if (response.status !== 201) throw new Error(`push index ${tag}: ${response.status} ${await response.text()}`);
    pushed.push({ tag, digest, kind: 'index' });
  }
  const byTag = new Map(pushed.map((p) => [p.tag, p.digest]));
  return {
    repository,
    tags: pushed,
    sharedLayer: sha256(shared),
    digestOf: (tag) => {
      const d = byTag.get(tag);
      if (!d) throw new Error(`no tag ${tag}`);
      return d;
    },
  };
}

/** Re-points an existing tag at a new single-arch image (a new upstream release). */
export async function retag(u: UpstreamRegistry, repository: string, tag: string): Promise<string> {
  const { digest } = await pushImage(u.directClient, repository, tag, [randomBytes(4096)], { os: 'linux', architecture: 'amd64' });
  return digest;
}
