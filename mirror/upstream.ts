// A client for the upstream registry a mirror copies from: the OCI Distribution API as docker,
// skopeo and crane speak it.
//
// Authentication follows the distribution token spec, as Docker Hub and most registries do it: a
// request answered `401` with `WWW-Authenticate: Bearer realm=…,service=…,scope=…` is retried
// with a token fetched from the realm (with Basic credentials when the mirror has them, else
// anonymously); a `Basic` challenge is answered with the credentials; no challenge means
// anonymous access. Tokens are cached per scope until they expire.
//
// TLS is verified unless the mirror says `verify_tls: false`, in which case (as skopeo's
// --src-tls-verify=false) an unverified HTTPS connection is tried first and plain HTTP after it
// when the upstream does not speak TLS. Proxies come from the mirror's own proxy settings, with
// no_proxy honoured. Every connection is checked against the SSRF policy after DNS resolution.
//
// Bytes stream: a blob body is handed to the caller as a stream, never buffered whole.
import type { Readable } from 'node:stream';
import { type Dispatcher, request } from 'undici';
import { bypassesProxy, checkedAgent, checkedProxyAgent, EgressRefused } from '../security/egress.ts';
import { createHash } from 'node:crypto';
import type { ProxySettings } from './config.ts';
import type { UpstreamHostPolicy, UpstreamReference } from './reference.ts';

export const MANIFEST_ACCEPT = [
  'application/vnd.oci.image.index.v1+json',
  'application/vnd.oci.image.manifest.v1+json',
  'application/vnd.docker.distribution.manifest.list.v2+json',
  'application/vnd.docker.distribution.manifest.v2+json',
].join(', ');

/** Manifests are small; anything larger is refused before it is read whole (as on push). */
const MAX_MANIFEST_BYTES = 4 * 1024 * 1024;
const MAX_JSON_BYTES = 16 * 1024 * 1024;
const MAX_REDIRECTS = 5;

export type UpstreamErrorKind =
  /** Credentials missing or refused: retrying will not help. */
  | 'auth'
  /** The tag, manifest or blob is not there. */
  | 'not_found'
  /** 429 or 503: come back after `retryAfterSeconds`. */
  | 'throttled'
  /** Connection refused, reset, timed out, 5xx: may work on a retry. */
  | 'unavailable'
  /** The upstream answered something that breaks the protocol (bad digest, bad JSON). */
  | 'protocol'
  /** The SSRF policy refused the address. */
  | 'refused';

export class UpstreamError extends Error {
  constructor(
    readonly kind: UpstreamErrorKind,
    message: string,
    readonly status?: number,
    readonly retryAfterSeconds?: number,
  ) {
    super(message);
    this.name = 'UpstreamError';
  }
}

/** Holds one of the upstream host's request slots (see semaphore.ts) until released. */
export interface UpstreamLimiter {
  acquire(signal?: AbortSignal): Promise<() => void>;
}

export interface UpstreamClientOptions {
  reference: UpstreamReference;
  username?: string | null;
  password?: string | null;
  verifyTls: boolean;
  proxy?: ProxySettings | null;
  policy: UpstreamHostPolicy;
  limiter?: UpstreamLimiter;
  userAgent?: string;
  /** Tags asked for per page (the upstream may answer fewer and link to the next page). */
  tagPageSize?: number;
}

export interface FetchedManifest {
  bytes: Buffer;
  mediaType: string;
  digest: string;
}

export interface BlobStream {
  body: Readable;
  /** From Content-Length, when sent. */
  size: number | undefined;
}

interface Challenge {
  scheme: 'bearer' | 'basic';
  params: Record<string, string>;
}

/** Parses `Bearer realm="…",service="…",scope="…"` (quoted values may contain commas). */
export function parseChallenge(header: string | undefined): Challenge | undefined {
  if (!header) return undefined;
  const m = /^\s*(\w+)\s*(.*)$/s.exec(header);
  if (!m) return undefined;
  const scheme = m[1]!.toLowerCase();
  if (scheme !== 'bearer' && scheme !== 'basic') return undefined;
  const params: Record<string, string> = {};
  const re = /([A-Za-z_][\w-]*)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]*))/g;
  for (let p = re.exec(m[2]!); p; p = re.exec(m[2]!)) params[p[1]!.toLowerCase()] = p[2] !== undefined ? p[2].replace(/\\(.)/g, '$1') : p[3]!;
  return { scheme, params };
}

/** `Retry-After`: seconds or an HTTP date. */
export function parseRetryAfter(value: string | undefined, now = Date.now()): number | undefined {
  if (!value) return undefined;
  if (/^\d+$/.test(value.trim())) return Number(value.trim());
  const t = Date.parse(value);
  return Number.isNaN(t) ? undefined : Math.max(0, Math.ceil((t - now) / 1000));
}

/** The `rel="next"` target of a Link header, if any. */
export function nextLink(header: string | undefined): string | undefined {
  if (!header) return undefined;
  for (const part of header.split(/,(?=\s*<)/)) {
    const m = /<([^>]*)>\s*;(.*)$/.exec(part.trim());
    if (m && /\brel="?next"?/i.test(m[2]!)) return m[1];
  }
  return undefined;
}

export { bypassesProxy, checkedAgent } from '../security/egress.ts';

function isTlsMismatch(e: unknown): boolean {
  for (let cur: unknown = e, i = 0; cur && i < 5; cur = (cur as { cause?: unknown }).cause, i++) {
    const code = (cur as { code?: string }).code ?? '';
    const msg = cur instanceof Error ? cur.message : '';
    if (code === 'EPROTO' || code.startsWith('ERR_SSL') || /wrong version number|packet length too long|unknown protocol|ssl3_get_record/i.test(msg)) return true;
  }
  return false;
}

function networkError(e: unknown, what: string): UpstreamError {
  if (e instanceof UpstreamError) return e;
  if ((e as Error)?.name === 'AbortError') throw e;
  const causes: string[] = [];
  for (let cur: unknown = e, i = 0; cur && i < 4; cur = (cur as { cause?: unknown }).cause, i++) {
    if (cur instanceof UpstreamError) return cur;
    if (cur instanceof EgressRefused) return new UpstreamError('refused', cur.message);
    const code = (cur as { code?: string }).code;
    causes.push(code ? `${code}` : (cur as Error).message);
  }
  return new UpstreamError('unavailable', `${what}: ${[...new Set(causes)].join(': ')}`);
}

async function readLimited(body: Readable, limit: number, what: string): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const c of body) {
    size += (c as Buffer).length;
    if (size > limit) {
      body.destroy();
      throw new UpstreamError('protocol', `${what} is larger than ${limit} bytes`);
    }
    chunks.push(c as Buffer);
  }
  return Buffer.concat(chunks);
}

function header(h: Record<string, string | string[] | undefined>, name: string): string | undefined {
  const v = h[name];
  return Array.isArray(v) ? v[0] : v;
}

function digestOf(bytes: Buffer, algorithm: string): string {
  return `${algorithm}:${createHash(algorithm).update(bytes).digest('hex')}`;
}

interface CachedToken {
  value: string;
  expiresAt: number;
}

interface Response {
  statusCode: number;
  headers: Record<string, string | string[] | undefined>;
  body: Readable & { dump(): Promise<void> };
  url: string;
}

export class UpstreamClient {
  readonly reference: UpstreamReference;
  private scheme: 'https' | 'http' | undefined;
  private readonly dispatchers = new Map<string, Dispatcher>();
  /** Hosts reached through a proxy whose resolved addresses have been checked here. */
  private readonly proxiedTargetsChecked = new Set<string>();
  private readonly tokens = new Map<string, CachedToken>();
  /** The kind of authentication the upstream asked for last, so later requests send it up front. */
  private challenge: Challenge | undefined;
  private readonly pullScope: string;
  private referrersSupported: boolean | undefined;
  /** Requests made, by kind, for tests and run statistics. */
  readonly requests = { manifest: 0, blob: 0, tags: 0, token: 0, referrers: 0 };

  constructor(private readonly opts: UpstreamClientOptions) {
    this.reference = opts.reference;
    this.pullScope = `repository:${opts.reference.repository}:pull`;
    opts.policy.checkHost(opts.reference.hostname);
  }

  /** The upstream's identity for logs, search attributes and the semaphore key. */
  get host(): string {
    return this.reference.apiAuthority.toLowerCase();
  }

  async close(): Promise<void> {
    await Promise.allSettled([...this.dispatchers.values()].map((d) => d.close()));
    this.dispatchers.clear();
  }

  /** The proxy URL for this request, if one applies. */
  private proxyFor(url: URL): string | undefined {
    const port = Number(url.port || (url.protocol === 'https:' ? 443 : 80));
    const proxy = this.opts.proxy;
    const proxyUri = url.protocol === 'https:' ? proxy?.https_proxy : proxy?.http_proxy;
    return proxyUri && !bypassesProxy(proxy?.no_proxy, url.hostname, port) ? proxyUri : undefined;
  }

  private dispatcherFor(url: URL): Dispatcher {
    const proxyUri = this.proxyFor(url);
    const useProxy = !!proxyUri;
    const key = useProxy ? `proxy:${proxyUri}` : 'direct';
    let d = this.dispatchers.get(key);
    if (d) return d;
    const tls = { rejectUnauthorized: this.opts.verifyTls };
    if (useProxy) {
      // The proxy's own address is checked here; the target's, which the proxy resolves, in raw().
      try {
        d = checkedProxyAgent(this.opts.policy, proxyUri!, tls.rejectUnauthorized);
      } catch (e) {
        throw new UpstreamError('refused', `proxy ${proxyUri!.replace(/\/\/[^@/]*@/, '//')}: ${(e as Error).message.replace('external_reference', 'the proxy')}`);
      }
    } else {
      d = checkedAgent(this.opts.policy, this.opts.verifyTls);
    }
    this.dispatchers.set(key, d);
    return d;
  }

  private async baseUrl(signal?: AbortSignal): Promise<string> {
    if (!this.scheme) {
      if (this.opts.verifyTls) this.scheme = 'https';
      else {
        // Probe once: unverified TLS first, plain HTTP when the upstream does not speak TLS.
        try {
          const r = await this.raw('GET', `https://${this.reference.apiAuthority}/v2/`, {}, signal);
          await r.body.dump();
          this.scheme = 'https';
        } catch (e) {
          if (!isTlsMismatch(e)) throw networkError(e, `cannot reach ${this.reference.apiAuthority}`);
          this.scheme = 'http';
        }
      }
    }
    return `${this.scheme}://${this.reference.apiAuthority}`;
  }

  private async raw(method: string, url: string, headers: Record<string, string>, signal?: AbortSignal): Promise<Response> {
    const u = new URL(url);
    const dispatcher = this.dispatcherFor(u);
    if (this.proxyFor(u) && !this.proxiedTargetsChecked.has(u.hostname)) {
      // The proxy resolves the target itself; resolve it here too, so a name pointing into the
      // registry's network is refused before the proxy is asked to connect to it. A name only
      // the proxy can resolve (no DNS here) is left to the proxy: it passed the check by name.
      await this.opts.policy.checkResolvable(u.hostname).catch((e: unknown) => {
        if (e instanceof EgressRefused) throw new UpstreamError('refused', e.message);
      });
      this.proxiedTargetsChecked.add(u.hostname);
    }
    const r = await request(u, {
      method: method as Dispatcher.HttpMethod,
      headers: { 'user-agent': this.opts.userAgent ?? 'meridian-mirror', ...headers },
      dispatcher,
      signal,
      headersTimeout: 60_000,
      bodyTimeout: 120_000,
    });
    return { statusCode: r.statusCode, headers: r.headers, body: r.body as unknown as Response['body'], url };
  }

  private basic(): string | undefined {
    if (!this.opts.username) return undefined;
    return `Basic ${Buffer.from(`${this.opts.username}:${this.opts.password ?? ''}`).toString('base64')}`;
  }

  private async token(challenge: Challenge, scope: string, signal?: AbortSignal): Promise<string> {
    const realm = challenge.params.realm;
    if (!realm) throw new UpstreamError('protocol', 'the upstream asked for a bearer token but named no realm');
    const cacheKey = `${realm} ${challenge.params.service ?? ''} ${scope}`;
    const cached = this.tokens.get(cacheKey);
    if (cached && cached.expiresAt > Date.now()) return cached.value;
    const url = new URL(realm);
    if (challenge.params.service) url.searchParams.set('service', challenge.params.service);
    url.searchParams.set('scope', scope);
    this.opts.policy.checkHost(url.hostname);
    const headers: Record<string, string> = {};
    const basic = this.basic();
    if (basic) headers.authorization = basic;
    this.requests.token++;
    let r: Response;
    try {
      r = await this.raw('GET', url.toString(), headers, signal);
    } catch (e) {
      throw networkError(e, `token request to ${url.host} failed`);
    }
    if (r.statusCode === 401 || r.statusCode === 403) {
      await r.body.dump();
      throw new UpstreamError('auth', `the upstream's token service refused ${basic ? 'the credentials' : 'anonymous access'} (${r.statusCode})`, r.statusCode);
    }
    if (r.statusCode === 429 || r.statusCode >= 500) {
      await r.body.dump();
      throw new UpstreamError(r.statusCode === 429 || r.statusCode === 503 ? 'throttled' : 'unavailable', `token service answered ${r.statusCode}`, r.statusCode, parseRetryAfter(header(r.headers, 'retry-after')));
    }
    if (r.statusCode !== 200) {
      await r.body.dump();
      throw new UpstreamError('protocol', `token service answered ${r.statusCode}`, r.statusCode);
    }
    let doc: { token?: string; access_token?: string; expires_in?: number };
    try {
      doc = JSON.parse((await readLimited(r.body, 1024 * 1024, 'token response')).toString('utf8'));
    } catch {
      throw new UpstreamError('protocol', 'token service answered invalid JSON');
    }
    const value = doc.token ?? doc.access_token;
    if (!value) throw new UpstreamError('protocol', 'token service answered no token');
    // The spec's default lifetime is 60 s; renew a little early.
    const lifetime = Math.max(10, (typeof doc.expires_in === 'number' ? doc.expires_in : 60) - 10);
    this.tokens.set(cacheKey, { value, expiresAt: Date.now() + lifetime * 1000 });
    return value;
  }

  private async authorization(scope: string, signal?: AbortSignal): Promise<string | undefined> {
    const c = this.challenge;
    if (!c) return undefined;
    if (c.scheme === 'basic') return this.basic();
    return `Bearer ${await this.token(c, scope, signal)}`;
  }

  /**
   * A request to the upstream's API with authentication, redirects (without credentials to
   * another origin) and error mapping. `ok` lists the statuses handed back to the caller.
   */
  private async call(
    method: 'GET' | 'HEAD',
    path: string,
    opts: { accept?: string; ok: number[]; signal?: AbortSignal; what: string },
  ): Promise<Response> {
    const base = await this.baseUrl(opts.signal);
    let url = path.startsWith('http') ? path : `${base}${path}`;
    const headers: Record<string, string> = {};
    if (opts.accept) headers.accept = opts.accept;
    let auth = await this.authorization(this.pullScope, opts.signal);
    let retriedAuth = false;
    for (let hop = 0; ; hop++) {
      const sameOrigin = new URL(url).origin === new URL(base).origin;
      let r: Response;
      try {
        r = await this.raw(method, url, { ...headers, ...(auth && sameOrigin ? { authorization: auth } : {}) }, opts.signal);
      } catch (e) {
        throw networkError(e, `${opts.what} failed`);
      }
      if (r.statusCode === 401 && sameOrigin && !retriedAuth) {
        await r.body.dump();
        const c = parseChallenge(header(r.headers, 'www-authenticate'));
        if (!c) throw new UpstreamError('auth', `${opts.what}: the upstream answered 401 without a usable challenge`, 401);
        if (c.scheme === 'basic' && !this.opts.username) throw new UpstreamError('auth', `${opts.what}: the upstream requires credentials`, 401);
        this.challenge = c;
        retriedAuth = true;
        // Docker Hub's challenge names the scope it wants; ask for exactly that.
        auth = await this.authorization(c.params.scope ?? this.pullScope, opts.signal);
        hop--;
        continue;
      }
      if ([301, 302, 303, 307, 308].includes(r.statusCode) && hop < MAX_REDIRECTS) {
        const loc = header(r.headers, 'location');
        await r.body.dump();
        if (!loc) throw new UpstreamError('protocol', `${opts.what}: redirect without a Location`);
        const next = new URL(loc, url);
        if (next.protocol !== 'https:' && next.protocol !== 'http:') throw new UpstreamError('protocol', `${opts.what}: redirect to ${next.protocol}`);
        this.opts.policy.checkHost(next.hostname);
        url = next.toString();
        continue;
      }
      if (opts.ok.includes(r.statusCode)) return r;
      await r.body.dump().catch(() => {});
      const status = r.statusCode;
      if (status === 401 || status === 403) throw new UpstreamError('auth', `${opts.what}: the upstream refused access (${status})`, status);
      if (status === 404) throw new UpstreamError('not_found', `${opts.what}: not found on the upstream`, 404);
      if (status === 429 || status === 503) {
        throw new UpstreamError('throttled', `${opts.what}: the upstream answered ${status}`, status, parseRetryAfter(header(r.headers, 'retry-after')));
      }
      if (status >= 500) throw new UpstreamError('unavailable', `${opts.what}: the upstream answered ${status}`, status);
      throw new UpstreamError('protocol', `${opts.what}: the upstream answered ${status}`, status);
    }
  }

  /** Runs `fn` holding one of the upstream host's request slots. */
  private async limited<T>(signal: AbortSignal | undefined, fn: () => Promise<T>): Promise<T> {
    const release = this.opts.limiter ? await this.opts.limiter.acquire(signal) : () => {};
    try {
      return await fn();
    } finally {
      release();
    }
  }

  /** Every tag, following `Link: <…>; rel="next"` pages. */
  async listTags(signal?: AbortSignal): Promise<string[]> {
    const tags: string[] = [];
    let path: string | undefined = `/v2/${this.reference.repository}/tags/list?n=${this.opts.tagPageSize ?? 1000}`;
    for (let page = 0; path && page < 10_000; page++) {
      const current: string = path;
      path = await this.limited(signal, async () => {
        this.requests.tags++;
        const r = await this.call('GET', current, { ok: [200], signal, what: `listing tags of ${this.reference.raw}` });
        let doc: { tags?: unknown };
        try {
          doc = JSON.parse((await readLimited(r.body, MAX_JSON_BYTES, 'tag list')).toString('utf8'));
        } catch (e) {
          if (e instanceof UpstreamError) throw e;
          throw new UpstreamError('protocol', 'the upstream answered an invalid tag list');
        }
        if (doc.tags !== null && doc.tags !== undefined && !Array.isArray(doc.tags)) throw new UpstreamError('protocol', 'the upstream answered an invalid tag list');
        for (const t of (doc.tags as unknown[] | null | undefined) ?? []) if (typeof t === 'string') tags.push(t);
        return nextLink(header(r.headers, 'link'));
      });
    }
    return [...new Set(tags)];
  }

  /** The digest a tag points at, from a HEAD (cheap, and not counted by Docker Hub's pull limit). */
  async headManifest(reference: string, signal?: AbortSignal): Promise<{ digest: string | undefined; mediaType: string | undefined } | undefined> {
    return this.limited(signal, async () => {
      this.requests.manifest++;
      try {
        const r = await this.call('HEAD', `/v2/${this.reference.repository}/manifests/${reference}`, {
          accept: MANIFEST_ACCEPT,
          ok: [200],
          signal,
          what: `manifest ${reference}`,
        });
        await r.body.dump();
        return { digest: header(r.headers, 'docker-content-digest'), mediaType: header(r.headers, 'content-type') };
      } catch (e) {
        if (e instanceof UpstreamError && e.kind === 'not_found') return undefined;
        throw e;
      }
    });
  }

  /** A manifest's exact bytes, verified: against `expectedDigest` when given (children, referrers),
   * else against the upstream's Docker-Content-Digest when it sends one. */
  async getManifest(reference: string, expectedDigest?: string, signal?: AbortSignal): Promise<FetchedManifest> {
    return this.limited(signal, async () => {
      this.requests.manifest++;
      const r = await this.call('GET', `/v2/${this.reference.repository}/manifests/${reference}`, {
        accept: MANIFEST_ACCEPT,
        ok: [200],
        signal,
        what: `manifest ${reference}`,
      });
      const declared = header(r.headers, 'content-length');
      if (declared && Number(declared) > MAX_MANIFEST_BYTES) {
        r.body.destroy();
        throw new UpstreamError('protocol', `manifest ${reference} is larger than ${MAX_MANIFEST_BYTES} bytes`);
      }
      const bytes = await readLimited(r.body, MAX_MANIFEST_BYTES, `manifest ${reference}`);
      const mediaType = (header(r.headers, 'content-type') ?? '').split(';')[0]!.trim();
      const claimed = expectedDigest ?? header(r.headers, 'docker-content-digest');
      const algorithm = claimed?.split(':')[0] === 'sha512' ? 'sha512' : 'sha256';
      const digest = digestOf(bytes, algorithm);
      if (claimed && claimed !== digest) {
        throw new UpstreamError('protocol', `manifest ${reference}: the upstream's bytes hash to ${digest}, not ${claimed}`);
      }
      return { bytes, mediaType, digest };
    });
  }

  /** A blob as a stream. The host's request slot is held until the stream ends or fails. */
  async getBlob(digest: string, signal?: AbortSignal): Promise<BlobStream> {
    const release = this.opts.limiter ? await this.opts.limiter.acquire(signal) : () => {};
    try {
      this.requests.blob++;
      const r = await this.call('GET', `/v2/${this.reference.repository}/blobs/${digest}`, { ok: [200], signal, what: `blob ${digest}` });
      let released = false;
      const done = () => {
        if (!released) {
          released = true;
          release();
        }
      };
      r.body.once('end', done).once('close', done).once('error', done);
      const length = header(r.headers, 'content-length');
      return { body: r.body, size: length !== undefined && /^\d+$/.test(length) ? Number(length) : undefined };
    } catch (e) {
      release();
      throw e;
    }
  }

  /**
   * Manifests that refer to `digest` (signatures, SBOMs, attestations), from the referrers API.
   * Undefined when the upstream does not implement it (404 on the endpoint).
   */
  async referrers(digest: string, signal?: AbortSignal): Promise<{ mediaType: string; digest: string; size: number }[] | undefined> {
    // Asked once per client: an upstream without the API does not grow one mid-run.
    if (this.referrersSupported === false) return undefined;
    const result = await this.limited(signal, async () => {
      this.requests.referrers++;
      let r: Response;
      try {
        r = await this.call('GET', `/v2/${this.reference.repository}/referrers/${digest}`, {
          accept: 'application/vnd.oci.image.index.v1+json',
          ok: [200],
          signal,
          what: `referrers of ${digest}`,
        });
      } catch (e) {
        // 404 (no API) and 400/405 (older registries that route it elsewhere) both mean: unsupported.
        if (e instanceof UpstreamError && (e.kind === 'not_found' || (e.kind === 'protocol' && (e.status === 400 || e.status === 405)))) return undefined;
        throw e;
      }
      const type = (header(r.headers, 'content-type') ?? '').split(';')[0]!.trim();
      const bytes = await readLimited(r.body, MAX_JSON_BYTES, 'referrers index');
      if (type !== 'application/vnd.oci.image.index.v1+json') return undefined;
      let doc: { manifests?: unknown };
      try {
        doc = JSON.parse(bytes.toString('utf8'));
      } catch {
        throw new UpstreamError('protocol', 'the upstream answered an invalid referrers index');
      }
      if (!Array.isArray(doc.manifests)) return [];
      return doc.manifests.filter(
        (m): m is { mediaType: string; digest: string; size: number } =>
          typeof m === 'object' && m !== null && typeof m.digest === 'string' && typeof m.mediaType === 'string' && typeof m.size === 'number',
      );
    });
    this.referrersSupported = result !== undefined;
    return result;
  }
}
