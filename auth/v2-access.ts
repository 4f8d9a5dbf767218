// Access control for /v2 (the OCI Distribution API). The /v2 router calls authorizeV2 for every
// request with the repository and the actions the route needs, before any handler runs.
//
// Clients without credentials, or whose token lacks the scope, get 401 with a Bearer challenge
// naming the realm (our token endpoint), the service and the scope — how docker, podman, skopeo
// and crane discover that they must fetch a token. An authenticated principal that is not
// allowed gets what the distribution registry answers for a token lacking the scope — 401 with
// `error="insufficient_scope"` — so that clients (which probe blobs with a body-less HEAD, where a
// 403 explains nothing) fetch a token and report the denial, whose DENIED message names the
// repository and the missing permission. A write to a mirror or read-only repository gets 403
// DENIED saying so, to those who may see the repository.
import { OciError } from '../api/v2/errors.ts';
import type { Services } from '../platform/services.ts';
import { accessSnapshot } from './access-cache.ts';
import { AuthenticationError, authenticate, type Presented } from './authenticate.ts';
import { LoginThrottledError } from './login-throttle.ts';
import { creatableNamespaces, repositoryAccess, type RepositoryAccess, visibleRepositoryNames } from './permissions.ts';
import type { Repository } from '../registry/repositories.ts';
import { type Principal, principalName, type RepoAction } from './principal.ts';
import { formatScope, tokenGrants, tokenService } from './tokens.ts';

export interface V2AccessRequest {
  /** Full repository name (`ns/name`) when the route names one. */
  repository?: string;
  /** What the route does to it; empty for the `/v2/` ping. */
  actions: RepoAction[];
  /** GET /v2/_catalog (scope `registry:catalog:*`). */
  catalog?: boolean;
}

function challenge(s: Services, scope: string | undefined, error?: 'invalid_token' | 'insufficient_scope'): string {
  const parts = [`realm="${s.config.publicUrl}/v2/auth"`, `service="${tokenService(s.config)}"`];
  if (scope) parts.push(`scope="${scope}"`);
  if (error) parts.push(`error="${error}"`);
  return `Bearer ${parts.join(',')}`;
}

function unauthorized(s: Services, message: string, scope: string | undefined, error?: 'invalid_token' | 'insufficient_scope'): OciError {
  return new OciError('UNAUTHORIZED', message, undefined, 401, { 'WWW-Authenticate': challenge(s, scope, error) });
}

/** 429 TOOMANYREQUESTS for a throttled login, with when to try again. */
export function tooManyLogins(e: LoginThrottledError): OciError {
  return new OciError('TOOMANYREQUESTS', e.message, undefined, 429, { 'Retry-After': String(e.retryAfterSeconds) });
}

/** A 401 asking the client for a token covering every one of `scopes` (Docker puts several in
 * one `scope` parameter, space separated) — e.g. a mount's target and source repositories. */
export function insufficientScope(s: Services, scopes: string[]): OciError {
  return unauthorized(s, 'token does not grant the requested access', scopes.join(' '), 'insufficient_scope');
}

/** True for the 401 authorizeV2 raises when a token lacks a scope its holder does have (not for
 * a principal who lacks the permission itself: that one is DENIED). */
export function isInsufficientScope(e: unknown): boolean {
  return e instanceof OciError && e.code === 'UNAUTHORIZED' && e.status === 401 && /error="insufficient_scope"/.test(e.headers['WWW-Authenticate'] ?? '');
}

/**
 * Authenticates the request and checks that it may do `actions`. Returns the principal.
 * Throws OciError('UNAUTHORIZED') with a `WWW-Authenticate: Bearer realm=…,service=…,scope=…`
 * header when credentials are missing or the token lacks the scope, and OciError('DENIED') when
 * an authenticated principal is refused (including writes to a mirror repository).
 *
 * A bearer token is an upper bound, not a licence: the request needs the action in the token
 * AND in the principal's permissions now. Permissions are read from the database, or from this
 * process's cache of the current access version (access-cache.ts: every change to them bumps the
 * version in the same transaction), so a revoked grant, a deleted robot or a repository switched
 * to MIRROR takes effect on the next request rather than when the token expires.
 */
export async function authorizeV2(s: Services, client: Presented, req: V2AccessRequest): Promise<Principal> {
  return (await authorizeV2Repository(s, client, req)).principal;
}

/** authorizeV2, also handing back the repository it looked up (undefined when it does not exist
 * yet, or the request names none), so that the router does not look it up a second time.
 * `accessVersion`: the access version the caller read for this request (otherwise read here). */
export async function authorizeV2Repository(
  s: Services,
  client: Presented,
  req: V2AccessRequest,
  accessVersion?: bigint,
): Promise<{ principal: Principal; repo: Repository | undefined }> {
  const scope = req.catalog ? 'registry:catalog:*' : req.repository ? formatScope('repository', req.repository, req.actions) : undefined;
  const header = client.authorization;
  const snap = await accessSnapshot(s.sql, accessVersion);
  let auth;
  try {
    auth = await authenticate(s, client, 'registry', snap);
  } catch (e) {
    if (e instanceof LoginThrottledError) throw tooManyLogins(e);
    if (e instanceof AuthenticationError) throw unauthorized(s, e.message, scope, /^Bearer\s/i.test(header ?? '') ? 'invalid_token' : undefined);
    throw e;
  }
  const { principal } = auth;

  if (!req.repository) {
    // The ping: any valid credentials, including a token issued to an anonymous client (that is
    // how docker and containerd continue after fetching one). The catalog lists only what the
    // caller may pull, but needs someone authenticated, and a token needs the catalog scope.
    if (auth.via === 'none') throw unauthorized(s, 'authentication required', scope);
    if (req.catalog) {
      if (principal.kind === 'anonymous') throw unauthorized(s, 'authentication required', scope);
      if (auth.via === 'registry-token' && !auth.access?.get('registry:catalog')) {
        throw unauthorized(s, 'token does not grant the catalog', scope, 'insufficient_scope');
      }
    }
    return { principal, repo: undefined };
  }

  const repository = req.repository;
  const access = await snap.memo(`access:${principalKey(principal)}:${repository}`, () => repositoryAccess(s.db, principal, repository));
  const missing = req.actions.filter((a) => !access.actions.has(a));
  if (missing.length === 0) {
    // Allowed now; a token must also carry the scope, otherwise the client fetches a new one.
    if (auth.via === 'registry-token' && !tokenGrants(auth.access!, req.repository, req.actions)) {
      throw unauthorized(s, 'token does not grant the requested access', scope, 'insufficient_scope');
    }
    return { principal, repo: access.repo };
  }
  // A write refused only because the repository is a mirror (or read-only) says so — to those
  // who may see the repository; the others learn nothing about it.
  if (access.readOnlyReason && access.role !== null && missing.every((a) => a === 'push' || a === 'delete')) {
    throw new OciError('DENIED', access.readOnlyReason);
  }
  // Anonymous clients are challenged, so that docker/podman log in and retry.
  if (principal.kind === 'anonymous') throw unauthorized(s, 'authentication required', scope);
  throw new OciError('DENIED', await denialMessage(s, principal, repository, access, missing), undefined, 401, { 'WWW-Authenticate': challenge(s, scope, 'insufficient_scope') });
}

const ROLE_FOR: Record<RepoAction, string> = { pull: 'read', push: 'write', delete: 'write' };

/** Levenshtein distance, for "did you mean" (names are short). */
function distance(a: string, b: string): number {
  let prev = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const row = [i];
    for (let j = 1; j <= b.length; j++) row[j] = Math.min(prev[j]! + 1, row[j - 1]! + 1, prev[j - 1]! + (a[i - 1] === b[j - 1] ? 0 : 1));
    prev = row;
  }
  return prev[b.length]!;
}

/**
 * What a refused principal is told. Someone who may see the repository learns their role and the
 * permission the request needs. For anyone else a missing repository and a hidden one read the
 * same: the message names only the request, and — for a user pushing — the namespaces they may
 * create repositories in, with the nearest as a suggestion ("did you mean alice/app?"): all of it
 * things they know already, whether or not the name they typed exists.
 */
async function denialMessage(s: Services, principal: Principal, repository: string, access: RepositoryAccess, missing: RepoAction[]): Promise<string> {
  const who = principalName(principal);
  const wanted = missing.join(' and ');
  if (access.repo && access.role) {
    const needs = missing.some((a) => ROLE_FOR[a] === 'write') ? 'write' : 'read';
    return `${wanted} access to repository ${repository} is denied: ${who} has ${access.role} permission there, ${wanted} needs ${needs}`;
  }
  const base = `${wanted} access to repository ${repository} is denied for ${who}`;
  if (!missing.includes('push')) return base;
  if (principal.kind === 'robot') return `${base}: a robot may push only to repositories it has been granted write permission on`;
  const own = await creatableNamespaces(s.db, principal);
  if (own.length === 0) return base;
  const [namespace, ...rest] = repository.split('/');
  const nearest = own.map((n) => ({ n, d: distance(n, namespace!) })).sort((a, b) => a.d - b.d)[0]!;
  const hint = nearest.d > 0 && nearest.d <= 2 ? ` (did you mean ${[nearest.n, ...rest].join('/')}?)` : '';
  const list = own.length > 10 ? `${own.slice(0, 10).join(', ')}…` : own.join(', ');
  return `${base}: you may create repositories in ${list}${hint}`;
}

function principalKey(p: Principal): string {
  return p.kind === 'anonymous' ? 'a' : p.kind === 'user' ? `u:${p.userId}:${p.username}:${p.superuser}` : `r:${p.robotId}`;
}

/** Repository names for GET /v2/_catalog that the principal may pull, in byte order, after
 * `last`, at most `limit`. */
export function catalogRepositories(s: Services, principal: Principal, opts: { last?: string; limit: number }): Promise<string[]> {
  return visibleRepositoryNames(s.db, principal, opts);
}
