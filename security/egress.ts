// Every connection Meridian makes to a URL a user typed — mirror upstreams and their token
// realms, redirects, proxies, webhooks — goes through this module. Loopback, private, link-local
// and metadata addresses are refused unless an operator allows them (MERIDIAN_MIRROR_ALLOWED_HOSTS,
// like Quay's SSRF_ALLOWED_HOSTS). Hosts are checked twice: by name when a setting is saved (after
// canonicalising, so `2852039166`, `0xa9fea9fe`, `0251.0376.0251.0376`, `169.254.43518`, `0`,
// `[::ffff:a9fe:a9fe]` and trailing dots all count as the address they are), and on every
// connection by the address actually dialled — including IP literals, which never pass through a
// DNS lookup and so need a check of their own in the connector.
import { lookup as dnsLookup, type LookupAddress } from 'node:dns';
import { BlockList, isIP } from 'node:net';
import { Agent, buildConnector, Pool, ProxyAgent } from 'undici';

/** A host or address the policy refuses. */
export class EgressRefused extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'EgressRefused';
  }
}

const ALLOW_HINT = 'an operator can allow it with MERIDIAN_MIRROR_ALLOWED_HOSTS';

const BLOCKED_HOSTNAMES = new Set([
  'localhost',
  'metadata',
  'metadata.google.internal',
  'metadata.azure.internal',
  'kubernetes',
  'kubernetes.default',
  'kubernetes.default.svc',
  'kubernetes.default.svc.cluster.local',
]);

const BLOCKED_NETWORKS: [string, number, 'ipv4' | 'ipv6'][] = [
  ['0.0.0.0', 8, 'ipv4'],
  ['10.0.0.0', 8, 'ipv4'],
  ['100.64.0.0', 10, 'ipv4'],
  ['127.0.0.0', 8, 'ipv4'],
  ['169.254.0.0', 16, 'ipv4'],
  ['172.16.0.0', 12, 'ipv4'],
  ['192.0.0.0', 24, 'ipv4'],
  ['192.0.2.0', 24, 'ipv4'],
  ['192.168.0.0', 16, 'ipv4'],
  ['198.18.0.0', 15, 'ipv4'],
  ['198.51.100.0', 24, 'ipv4'],
  ['203.0.113.0', 24, 'ipv4'],
  ['224.0.0.0', 4, 'ipv4'],
  ['240.0.0.0', 4, 'ipv4'],
  // IPv4-compatible (::a.b.c.d), unspecified and loopback.
  ['::', 96, 'ipv6'],
  ['::1', 128, 'ipv6'],
  // IPv4-mapped: ::ffff:169.254.169.254 reaches the IPv4 address on a dual-stack socket.
  ['::ffff:0:0', 96, 'ipv6'],
  // NAT64, discard, Teredo, documentation, 6to4 (each embeds or relays an IPv4 address).
  ['64:ff9b::', 96, 'ipv6'],
  ['64:ff9b:1::', 48, 'ipv6'],
  ['100::', 64, 'ipv6'],
  ['2001::', 32, 'ipv6'],
  ['2001:db8::', 32, 'ipv6'],
  ['2002::', 16, 'ipv6'],
  // Unique local, link-local, site-local, multicast.
  ['fc00::', 7, 'ipv6'],
  ['fe80::', 10, 'ipv6'],
  ['fec0::', 10, 'ipv6'],
  ['ff00::', 8, 'ipv6'],
];

/**
 * The host as a connection would reach it: lower case, no brackets, no trailing dots, and any
 * IPv4 spelling the WHATWG URL parser (and so undici) accepts turned into a dotted quad.
 */
export function canonicalHost(host: string): string {
  const h = host.trim().toLowerCase().replace(/^\[(.*)\]$/, '$1').replace(/\.+$/, '');
  if (isIP(h)) return h;
  try {
    return new URL(`http://${h.includes(':') ? `[${h}]` : h}/`).hostname.replace(/^\[(.*)\]$/, '$1').replace(/\.+$/, '');
  } catch {
    return h;
  }
}

/** Which hosts Meridian may connect to on a user's behalf. */
export class EgressPolicy {
  private readonly blocked = new BlockList();
  private readonly allowedNets = new BlockList();
  private readonly allowedNames = new Set<string>();

  /** `allowed`: host names and CIDR ranges (or single addresses) that bypass the block list. */
  constructor(allowed: string[] = []) {
    for (const [net, prefix, type] of BLOCKED_NETWORKS) this.blocked.addSubnet(net, prefix, type);
    for (const entry of allowed) {
      const [addr, prefix] = entry.split('/');
      const family = isIP(addr ?? '');
      if (family) {
        const type = family === 4 ? 'ipv4' : 'ipv6';
        this.allowedNets.addSubnet(addr!, prefix === undefined ? (family === 4 ? 32 : 128) : Number(prefix), type);
      } else {
        this.allowedNames.add(canonicalHost(entry));
      }
    }
  }

  private addressAllowed(ip: string): boolean {
    const type = isIP(ip) === 6 ? 'ipv6' : 'ipv4';
    if (this.allowedNets.check(ip, type)) return true;
    return !this.blocked.check(ip, type);
  }

  /** Throws EgressRefused when the host is refused by name or address (no DNS). */
  checkHost(hostname: string): void {
    const name = canonicalHost(hostname);
    if (this.allowedNames.has(name)) return;
    if (isIP(name)) {
      if (!this.addressAllowed(name)) throw new EgressRefused(`external_reference points to a private or reserved address (${hostname}); ${ALLOW_HINT}`);
      return;
    }
    if (name === '' || BLOCKED_HOSTNAMES.has(name) || /\.(internal|local|localhost)$/.test(name)) {
      throw new EgressRefused(`external_reference host ${hostname} is not allowed; ${ALLOW_HINT}`);
    }
  }

  /** The address actually dialled for `hostname`: a public name resolving to a private address is refused. */
  checkResolved(hostname: string, address: string): void {
    if (this.allowedNames.has(canonicalHost(hostname))) return;
    if (!this.addressAllowed(address)) {
      throw new EgressRefused(`${hostname} resolves to ${address}, a private or reserved address; ${ALLOW_HINT}`);
    }
  }

  /** Resolves `hostname` and checks every address (for a request a proxy will resolve itself). */
  async checkResolvable(hostname: string): Promise<void> {
    const name = canonicalHost(hostname);
    this.checkHost(name);
    if (isIP(name) || this.allowedNames.has(name)) return;
    const addresses = await new Promise<LookupAddress[]>((resolve, reject) =>
      dnsLookup(name, { all: true }, (err, list) => (err ? reject(err) : resolve(list))),
    );
    for (const a of addresses) this.checkResolved(hostname, a.address);
  }

  /** A proxy URL setting: http(s) only, and its host passes the policy. Returns the parsed URL. */
  checkProxyUrl(raw: string): URL {
    let u: URL;
    try {
      u = new URL(raw);
    } catch {
      throw new EgressRefused('is not a valid URL');
    }
    if (u.protocol !== 'http:' && u.protocol !== 'https:') throw new EgressRefused('must be an http:// or https:// URL');
    this.checkHost(u.hostname);
    return u;
  }

  /** The `lookup` of a socket: every resolved address must pass. */
  readonly lookup = (hostname: string, options: object, cb: (err: Error | null, address: string | LookupAddress[], family?: number) => void): void => {
    dnsLookup(hostname, { ...(options as object), all: true }, (err, addresses) => {
      if (err) return cb(err, '', 0);
      const list = addresses as LookupAddress[];
      try {
        for (const a of list) this.checkResolved(hostname, a.address);
      } catch (e) {
        return cb(e as Error, '', 0);
      }
      if ((options as { all?: boolean }).all) return cb(null, list);
      cb(null, list[0]!.address, list[0]!.family);
    });
  };

  /** An undici connector that checks IP literals itself (no lookup happens for them) and names through `lookup`. */
  connector(tls: { rejectUnauthorized?: boolean } = {}): buildConnector.connector {
    const base = buildConnector({ ...tls, lookup: this.lookup } as buildConnector.BuildOptions);
    return (opts, cb) => {
      const host = opts.hostname.replace(/^\[(.*)\]$/, '$1');
      if (isIP(host)) {
        try {
          this.checkResolved(host, host);
        } catch (e) {
          cb(e as Error, null);
          return;
        }
      }
      return base(opts, cb);
    };
  }
}

/**
 * An HTTP agent whose every connection is checked against the policy on the address actually
 * dialled. Used for direct upstream requests and webhook deliveries.
 */
export function checkedAgent(policy: EgressPolicy, rejectUnauthorized = true): Agent {
  return new Agent({ connect: policy.connector({ rejectUnauthorized }), keepAliveTimeout: 30_000, connections: 32 });
}

/**
 * An agent tunnelling through a proxy the user configured: the proxy's own host is checked now
 * (by canonical name or address) and on every connection (by resolved address), so a proxy setting
 * cannot point the worker at localhost:6379 or the metadata service. The target is the caller's
 * to check (EgressPolicy.checkResolvable), since the proxy resolves it.
 */
export function checkedProxyAgent(policy: EgressPolicy, proxyUri: string, rejectUnauthorized = true): ProxyAgent {
  const u = policy.checkProxyUrl(proxyUri);
  const tls = { rejectUnauthorized };
  return new ProxyAgent({
    uri: u.toString(),
    requestTls: tls,
    proxyTls: { ...tls, lookup: policy.lookup } as never,
    // The client that CONNECTs to the proxy dials through the checked connector.
    clientFactory: (origin, opts) => new Pool(origin, { ...opts, connect: policy.connector(tls) }),
  });
}

/** Whether `no_proxy` exempts host:port (curl's rules: `*`, names and their subdomains, IPs, CIDRs). */
export function bypassesProxy(noProxy: string | null | undefined, hostname: string, port: number): boolean {
  if (!noProxy) return false;
  const host = canonicalHost(hostname);
  for (let entry of noProxy.split(/[,\s]+/).filter(Boolean)) {
    entry = entry.toLowerCase();
    if (entry === '*') return true;
    let entryPort: number | undefined;
    const pm = /^(.*):(\d+)$/.exec(entry);
    if (pm && !entry.includes('::')) {
      entry = pm[1]!;
      entryPort = Number(pm[2]);
    }
    if (entryPort !== undefined && entryPort !== port) continue;
    const [addr, prefix] = entry.split('/');
    if (isIP(addr ?? '') && isIP(host)) {
      const list = new BlockList();
      const type = isIP(addr!) === 6 ? 'ipv6' : 'ipv4';
      list.addSubnet(addr!, prefix ? Number(prefix) : type === 'ipv4' ? 32 : 128, type);
      if (list.check(host, isIP(host) === 6 ? 'ipv6' : 'ipv4')) return true;
      continue;
    }
    const name = entry.replace(/^\*?\./, '');
    if (host === name || host.endsWith(`.${name}`)) return true;
  }
  return false;
}
