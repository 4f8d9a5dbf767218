// What every /api/v1 endpoint needs: Quay-style problem+json errors, the caller's identity
// (Basic, or an API token as Bearer), and the common authorization checks (routes' access steps).
import type Koa from 'koa';
import { AuthenticationError, authenticate, presented } from '../../auth/authenticate.ts';
import { LoginThrottledError } from '../../auth/login-throttle.ts';
import { isDatabaseUnavailable } from '../../db/client.ts';
import { isNamespaceAdmin, repositoryRole } from '../../auth/permissions.ts';
import type { Principal } from '../../auth/principal.ts';
import { DomainError, type ErrorKind, STATUS_OF_KIND } from '../../platform/errors.ts';
import type { Services } from '../../platform/services.ts';
import { isTemporalUnavailable } from '../../platform/workflows.ts';
import { InputError, isClientAbort, MethodNotAllowedError, RouteNotFoundError } from '../router.ts';
import { findRepository, type Repository } from '../../registry/repositories.ts';

export type ErrorType = 'invalid_request' | 'not_found' | 'conflict' | 'unauthorized' | 'insufficient_scope' | 'too_many_requests' | 'unavailable' | 'internal_error';

export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly errorType: ErrorType,
    message: string,
    readonly headers: Record<string, string> = {},
  ) {
    super(message);
    this.name = 'ApiError';
  }
}

/** Quay's error body: RFC 7807 problem details plus Quay's `error_message`/`error_type`, and
 * `message`, which older Quay answers carried and many scripts still read. */
export function problem(ctx: Koa.Context, s: Services, e: ApiError): void {
  ctx.status = e.status;
  ctx.type = 'application/problem+json';
  ctx.body = JSON.stringify({
    type: `${s.config.publicUrl}/api/v1/error/${e.errorType}`,
    title: e.errorType,
    status: e.status,
    detail: e.message,
    error_type: e.errorType,
    error_message: e.message,
    message: e.message,
  });
  if (e.status === 401) ctx.set('WWW-Authenticate', 'Basic realm="meridian"');
  for (const [k, v] of Object.entries(e.headers)) ctx.set(k, v);
}

/** The caller, anonymous when there are no credentials; 401 for wrong ones. */
export async function optionalCaller(s: Services, ctx: Koa.Context): Promise<Principal> {
  try {
    return (await authenticate(s, presented(ctx), 'api')).principal;
  } catch (e) {
    if (e instanceof AuthenticationError) throw new ApiError(401, 'unauthorized', e.message);
    if (e instanceof LoginThrottledError) throw new ApiError(429, 'too_many_requests', e.message, { 'Retry-After': String(e.retryAfterSeconds) });
    throw e;
  }
}

/** The authenticated caller; 401 without (valid) credentials. */
export async function caller(s: Services, ctx: Koa.Context): Promise<Principal> {
  const p = await optionalCaller(s, ctx);
  if (p.kind === 'anonymous') throw new ApiError(401, 'unauthorized', 'authentication required');
  return p;
}

/**
 * Quay answers "already exists" with 400 and a fixed message (not 409), and scripts written for
 * Quay test for exactly that to be idempotent; the Quay-shaped endpoints keep its answer.
 */
export async function quayDuplicate<T>(message: string, fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (e) {
    if (e instanceof DomainError && e.kind === 'conflict') throw new ApiError(400, 'invalid_request', message);
    throw e;
  }
}

export async function requireSuperuser(s: Services, ctx: Koa.Context): Promise<Principal> {
  const p = await caller(s, ctx);
  if (p.kind !== 'user' || !p.superuser) throw new ApiError(403, 'insufficient_scope', 'superuser permission is required');
  return p;
}

export async function requireNamespaceAdmin(s: Services, ctx: Koa.Context, namespace: string): Promise<Principal> {
  const p = await caller(s, ctx);
  if (!(await isNamespaceAdmin(s.db, p, namespace))) throw new ApiError(403, 'insufficient_scope', `admin permission on ${namespace} is required`);
  return p;
}

/** Quay's require_repo_admin: the caller must administer the repository (401, 404, 403). A
 * caller who may not even read it gets the 404 a missing one gets, so that admin-only endpoints
 * do not tell outsiders which private repositories exist; 403 is for those who can see it. */
export async function adminRepository(s: Services, ctx: Koa.Context, fullName: string): Promise<{ principal: Principal; repo: Repository }> {
  const principal = await caller(s, ctx);
  const repo = await findRepository(s.db, fullName);
  const role = repo ? await repositoryRole(s.db, principal, repo) : null;
  if (!repo || !role) throw new ApiError(404, 'not_found', `repository ${fullName} not found`);
  if (role !== 'admin') throw new ApiError(403, 'insufficient_scope', `admin permission on ${fullName} is required`);
  return { principal, repo };
}

/** A repository the caller may at least read (404 rather than 403 for the rest: no leaks).
 * Anyone, anonymous included, may read a public repository, as in Quay. */
export async function readableRepository(s: Services, ctx: Koa.Context, fullName: string): Promise<{ principal: Principal; repo: Repository }> {
  const principal = await optionalCaller(s, ctx);
  const repo = await findRepository(s.db, fullName);
  if (!repo || !(await repositoryRole(s.db, principal, repo))) {
    // Anonymous callers are asked to log in, whether or not the repository exists.
    if (principal.kind === 'anonymous') throw new ApiError(401, 'unauthorized', 'authentication required');
    throw new ApiError(404, 'not_found', `repository ${fullName} not found`);
  }
  return { principal, repo };
}

const TYPE_OF_KIND: Record<ErrorKind, ErrorType> = {
  invalid: 'invalid_request',
  not_found: 'not_found',
  conflict: 'conflict',
  forbidden: 'insufficient_scope',
  unavailable: 'unavailable',
};

/** The management API's error renderer: everything a route throws becomes a problem; anything
 * unexpected is logged and answers 500. */
export function v1Errors(s: Services): (ctx: Koa.Context, e: unknown) => void {
  return (ctx, e) => {
    const api =
      e instanceof ApiError
        ? e
        : e instanceof InputError
          ? new ApiError(e.status, 'invalid_request', e.message)
          : e instanceof MethodNotAllowedError
            ? new ApiError(405, 'invalid_request', e.message)
            : e instanceof RouteNotFoundError
              ? new ApiError(404, 'not_found', `no such endpoint: ${ctx.method} ${ctx.path.slice(0, 200)}`)
              : e instanceof DomainError
                ? new ApiError(STATUS_OF_KIND[e.kind], TYPE_OF_KIND[e.kind], e.message)
                : isDatabaseUnavailable(e)
                  ? new ApiError(503, 'unavailable', 'the database is temporarily unavailable, retry later')
                  : isTemporalUnavailable(e)
                    ? new ApiError(503, 'unavailable', 'Temporal is temporarily unavailable, retry later', { 'Retry-After': '5' })
                    : undefined;
    if (api) return problem(ctx, s, api);
    if (isClientAbort(e)) {
      ctx.status = 400;
      return;
    }
    s.logger.error({ err: e, method: ctx.method, path: ctx.path }, 'api request failed');
    problem(ctx, s, new ApiError(500, 'internal_error', 'internal error'));
  };
}
