// External references (`registry[:port]/namespace/repository`, Quay's scheme-less form) and the
// rule that keeps a mirror from being pointed at the registry's own network: loopback, private,
// link-local and metadata addresses are refused unless an operator allows them
// (MERIDIAN_MIRROR_ALLOWED_HOSTS, like Quay's SSRF_ALLOWED_HOSTS). The check is made when the
// config is saved (by name) and again on every connection (by resolved address), so a name that
// later resolves somewhere private is still refused.
import { BlockList, isIP } from 'node:net';
import { REPOSITORY_NAME } from '../registry/names.ts';

export interface UpstreamReference {
  /** As the user wrote it: `registry.example.com/library/nginx`. */
  raw: string;
  /** `host[:port]` as written. */
  registry: string;
  /** The host name or IP literal (no brackets). */
  hostname: string;
  port: number | undefined;
  /** The API host: Docker Hub's `docker.io` is served by `registry-1.docker.io`. */
  apiAuthority: string;
  /** Repository path on the upstream: `library/nginx`. */
  repository: string;
}

export class ReferenceError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ReferenceError';
  }
}

const HOSTNAME = /^(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$/;
const DOCKER_HUB = new Set(['docker.io', 'index.docker.io', 'registry-1.docker.io']);

export function parseReference(raw: string): UpstreamReference {
  if (typeof raw !== 'string' || raw.trim() === '') throw new ReferenceError('external_reference is required');
  if (raw !== raw.trim() || /\s/.test(raw)) throw new ReferenceError('external_reference must not contain whitespace');
  if (raw.includes('://')) throw new ReferenceError('external_reference must not include a URL scheme (write registry.example.com/namespace/repository)');
  if (/[?#\\%@]/.test(raw)) throw new ReferenceError('external_reference contains an invalid character');
  const slash = raw.indexOf('/');
  if (slash <= 0 || slash === raw.length - 1) throw new ReferenceError('external_reference must be registry/repository, e.g. registry.example.com/library/nginx');
  const registry = raw.slice(0, slash);
  let repository = raw.slice(slash + 1);
  let hostname: string;
  let portText: string | undefined;
  if (registry.startsWith('[')) {
    const end = registry.indexOf(']');
    if (end < 0) throw new ReferenceError('external_reference has an invalid registry address');
    hostname = registry.slice(1, end);
    const rest = registry.slice(end + 1);
    if (rest !== '' && !rest.startsWith(':')) throw new ReferenceError('external_reference has an invalid registry address');
    portText = rest === '' ? undefined : rest.slice(1);
    if (isIP(hostname) !== 6) throw new ReferenceError('external_reference has an invalid IPv6 address');
  } else {
    const parts = registry.split(':');
    if (parts.length > 2) throw new ReferenceError('external_reference has an invalid registry address');
    hostname = parts[0]!;
    portText = parts[1];
    if (!isIP(hostname) && (hostname.endsWith('.') || !HOSTNAME.test(hostname))) {
      throw new ReferenceError('external_reference must start with a valid registry host name');
    }
  }
  let port: number | undefined;
  if (portText !== undefined) {
    if (!/^\d{1,5}$/.test(portText) || Number(portText) < 1 || Number(portText) > 65535) {
      throw new ReferenceError('external_reference has an invalid registry port');
    }
    port = Number(portText);
  }
  // A tag or digest in the reference is not a repository; Quay's field names a repository only.
  if (/[:@]/.test(repository)) throw new ReferenceError('external_reference names a repository, without a tag or digest');
  const hub = DOCKER_HUB.has(hostname.toLowerCase());
  // Docker Hub's official images live under library/.
  if (hub && !repository.includes('/')) repository = `library/${repository}`;
  if (!REPOSITORY_NAME.test(repository) || repository.length > 255) {
    throw new ReferenceError(`"${repository}" is not a valid repository path (lowercase letters, digits and . _ - separators)`);
  }
  const authority = hub ? 'registry-1.docker.io' : registry;
  return { raw, registry, hostname, port, apiAuthority: authority, repository };
}

// ------------------------------------------------------------------ SSRF rules

const BLOCKED_HOSTNAMES = new Set(['localhost', 'metadata', 'metadata.google.internal', 'metadata.azure.internal', 'kubernetes', 'kubernetes.default', 'kubernetes.default.svc', 'kubernetes.default.svc.cluster.local']);

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
  ['::', 128, 'ipv6'],
  ['::1', 128, 'ipv6'],
  ['64:ff9b::', 96, 'ipv6'],
  ['100::', 64, 'ipv6'],
  ['2001:db8::', 32, 'ipv6'],
  ['fc00::', 7, 'ipv6'],
  ['fe80::', 10, 'ipv6'],
  ['ff00::', 8, 'ipv6'],
  ['::ffff:0:0', 96, 'ipv6'],
];

/** Which upstream hosts a mirror may reach; built from MERIDIAN_MIRROR_ALLOWED_HOSTS. */
export class UpstreamHostPolicy {
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
        this.allowedNames.add(entry.toLowerCase());
      }
    }
  }

  private addressAllowed(ip: string): boolean {
    const type = isIP(ip) === 6 ? 'ipv6' : 'ipv4';
    if (this.allowedNets.check(ip, type)) return true;
    return !this.blocked.check(ip, type);
  }

  /** Throws when the reference's host is refused by name or literal address (no DNS). */
  checkHost(hostname: string): void {
    const name = hostname.toLowerCase();
    if (this.allowedNames.has(name)) return;
    if (isIP(name)) {
      if (!this.addressAllowed(name)) throw new ReferenceError(`external_reference points to a private or reserved address (${hostname}); an operator can allow it with MERIDIAN_MIRROR_ALLOWED_HOSTS`);
      return;
    }
    if (BLOCKED_HOSTNAMES.has(name) || name.endsWith('.internal') || name.endsWith('.local') || name.endsWith('.localhost')) {
      throw new ReferenceError(`external_reference host ${hostname} is not allowed; an operator can allow it with MERIDIAN_MIRROR_ALLOWED_HOSTS`);
    }
  }

  /** Checked on every connection, after DNS: a public name resolving to a private address is refused. */
  checkResolved(hostname: string, address: string): void {
    if (this.allowedNames.has(hostname.toLowerCase())) return;
    if (!this.addressAllowed(address)) {
      throw new ReferenceError(`${hostname} resolves to ${address}, a private or reserved address; an operator can allow it with MERIDIAN_MIRROR_ALLOWED_HOSTS`);
    }
  }
}
