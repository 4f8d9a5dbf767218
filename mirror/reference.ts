// External references (`registry[:port]/namespace/repository`, Quay's scheme-less form). Which
// hosts a mirror may reach is security/egress.ts's to decide (when the config is saved, by
// canonical name, and again on every connection, by the address dialled).
import { isIP } from 'node:net';
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

// The host policy lives in security/egress.ts, shared with proxies and webhooks.
export { EgressPolicy as UpstreamHostPolicy, EgressRefused } from '../security/egress.ts';
