// Access control for /v2 (the OCI Distribution API). The /v2 router calls authorizeV2 for every
// request with the repository and the actions the route needs.
//
// STUB: allows everything as anonymous. To be replaced by the real implementation (Bearer JWTs
// from the token endpoint, Basic auth, anonymous pulls of public repositories, per-repository
// permissions, superusers, robots, read-only mirror repositories).
import type { IncomingHttpHeaders } from 'node:http';
import type { Services } from '../platform/services.ts';
import { ANONYMOUS, type Principal, type RepoAction } from './principal.ts';

export interface V2AccessRequest {
  /** Full repository name (`ns/name`) when the route names one. */
  repository?: string;
  /** What the route does to it; empty for the `/v2/` ping. */
  actions: RepoAction[];
  /** GET /v2/_catalog (scope `registry:catalog:*`). */
  catalog?: boolean;
}

/**
 * Authenticates the request and checks that it may do `actions`. Returns the principal.
 * Throws OciError('UNAUTHORIZED') with a `WWW-Authenticate: Bearer realm=…,service=…,scope=…`
 * header when credentials are missing or the token lacks the scope, and OciError('DENIED') when
 * an authenticated principal is refused (including writes to a mirror repository).
 */
export async function authorizeV2(_s: Services, _headers: IncomingHttpHeaders, _req: V2AccessRequest): Promise<Principal> {
  return ANONYMOUS;
}

/** Repository names for GET /v2/_catalog that the principal may pull, in lexical order, after
 * `last`, at most `limit`. */
export async function catalogRepositories(
  s: Services,
  _principal: Principal,
  opts: { last?: string; limit: number },
): Promise<string[]> {
  const { sql } = await import('drizzle-orm');
  const rows = await s.db.execute<{ full: string }>(sql`
    select n.name || '/' || r.name as full from repositories r join namespaces n on n.id = r.namespace_id
    where (${opts.last ?? null}::text is null or n.name || '/' || r.name > ${opts.last ?? ''})
    order by full limit ${opts.limit}`);
  return rows.map((r) => r.full);
}
