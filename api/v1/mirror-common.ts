// What the mirror and notification endpoints need from /api/v1: Quay-style problem+json errors,
// JSON bodies, the caller's identity, and the repository-admin rule. Kept to these endpoints'
// needs; the management API's own helpers replace it where they cover the same ground.
import type Koa from 'koa';
import { and, eq, isNull, or, gt } from 'drizzle-orm';
import { robotByName, userByName } from '../../auth/accounts.ts';
import { tokenHash, verifyPassword } from '../../auth/passwords.ts';
import type { Principal } from '../../auth/principal.ts';
import { namespaceMembers, namespaces, repositoryPermissions, robots, tokens, users } from '../../db/schema.ts';
import { DomainError, type ErrorKind, STATUS_OF_KIND } from '../../platform/errors.ts';
import type { Services } from '../../platform/services.ts';
import { findRepository, type Repository } from '../../registry/repositories.ts';

export type ErrorType = 'invalid_request' | 'not_found' | 'conflict' | 'unauthorized' | 'insufficient_scope' | 'unavailable' | 'internal_error';

export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly errorType: ErrorType,
    message: string,
  ) {
    super(message);
    this.name = 'ApiError';
  }
}

/** Quay's error body (RFC 7807 problem details with Quay's extra fields). */
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
  });
  if (e.status === 401) ctx.set('WWW-Authenticate', 'Basic realm="meridian", Bearer realm="meridian"');
}

const MAX_BODY = 64 * 1024;

/** The request's JSON body; an empty body is `{}`. */
export async function jsonBody(ctx: Koa.Context): Promise<unknown> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const c of ctx.req) {
    size += (c as Buffer).length;
    if (size > MAX_BODY) throw new ApiError(413, 'invalid_request', `request body larger than ${MAX_BODY} bytes`);
    chunks.push(c as Buffer);
  }
  const text = Buffer.concat(chunks).toString('utf8').trim();
  if (text === '') return {};
  try {
    return JSON.parse(text);
  } catch {
    throw new ApiError(400, 'invalid_request', 'the request body is not valid JSON');
  }
}

/** Basic (user password, or robot name and token) or Bearer (an API token). */
export async function authenticate(s: Services, ctx: Koa.Context): Promise<Principal> {
  const header = ctx.get('Authorization');
  if (!header) throw new ApiError(401, 'unauthorized', 'authentication required');
  const basic = /^Basic\s+(.+)$/i.exec(header);
  if (basic) {
    const decoded = Buffer.from(basic[1]!, 'base64').toString('utf8');
    const i = decoded.indexOf(':');
    const name = i < 0 ? decoded : decoded.slice(0, i);
    const secret = i < 0 ? '' : decoded.slice(i + 1);
    if (name.includes('+')) {
      const robot = await robotByName(s.db, name);
      if (robot && robot.tokenHash === tokenHash(secret)) return { kind: 'robot', robotId: robot.id, name, namespaceId: robot.namespaceId };
    } else {
      const user = await userByName(s.db, name);
      if (user?.enabled && (await verifyPassword(user.passwordHash, secret))) {
        return { kind: 'user', userId: user.id, username: user.username, superuser: s.config.superusers.includes(user.username) };
      }
    }
    throw new ApiError(401, 'unauthorized', 'invalid credentials');
  }
  const bearer = /^Bearer\s+(.+)$/i.exec(header);
  if (bearer) {
    const [row] = await s.db
      .select({ userId: tokens.userId, robotId: tokens.robotId, username: users.username, robotShort: robots.shortName, robotNs: robots.namespaceId })
      .from(tokens)
      .leftJoin(users, eq(tokens.userId, users.id))
      .leftJoin(robots, eq(tokens.robotId, robots.id))
      .where(and(eq(tokens.tokenHash, tokenHash(bearer[1]!)), eq(tokens.kind, 'api'), isNull(tokens.revokedAt), or(isNull(tokens.expiresAt), gt(tokens.expiresAt, new Date()))));
    if (row?.userId && row.username) return { kind: 'user', userId: row.userId, username: row.username, superuser: s.config.superusers.includes(row.username) };
    if (row?.robotId && row.robotShort && row.robotNs) {
      const [ns] = await s.db.select({ name: namespaces.name }).from(namespaces).where(eq(namespaces.id, row.robotNs));
      return { kind: 'robot', robotId: row.robotId, name: `${ns?.name}+${row.robotShort}`, namespaceId: row.robotNs };
    }
    throw new ApiError(401, 'unauthorized', 'invalid or expired token');
  }
  throw new ApiError(401, 'unauthorized', 'unsupported Authorization scheme');
}

/** Quay's require_repo_admin: superusers, the owner of a user namespace, organization admins,
 * and whoever holds the admin role on the repository. */
export async function isRepositoryAdmin(s: Services, p: Principal, repo: Repository): Promise<boolean> {
  if (p.kind === 'anonymous') return false;
  if (p.kind === 'user') {
    if (p.superuser) return true;
    const [ns] = await s.db.select().from(namespaces).where(eq(namespaces.id, repo.namespaceId));
    if (ns?.kind === 'user' && ns.name === p.username) return true;
    const [member] = await s.db
      .select()
      .from(namespaceMembers)
      .where(and(eq(namespaceMembers.namespaceId, repo.namespaceId), eq(namespaceMembers.userId, p.userId), eq(namespaceMembers.role, 'admin')));
    if (member) return true;
  }
  const [perm] = await s.db
    .select()
    .from(repositoryPermissions)
    .where(
      and(
        eq(repositoryPermissions.repositoryId, repo.id),
        eq(repositoryPermissions.role, 'admin'),
        p.kind === 'user' ? eq(repositoryPermissions.userId, p.userId) : eq(repositoryPermissions.robotId, p.robotId),
      ),
    );
  return !!perm;
}

/** Authenticates, finds the repository and requires admin on it (401, 404, 403). */
export async function adminRepository(s: Services, ctx: Koa.Context, fullName: string): Promise<{ principal: Principal; repo: Repository }> {
  const principal = await authenticate(s, ctx);
  const repo = await findRepository(s.db, fullName);
  if (!repo) throw new ApiError(404, 'not_found', `repository ${fullName} not found`);
  if (!(await isRepositoryAdmin(s, principal, repo))) throw new ApiError(403, 'insufficient_scope', `admin permission on ${fullName} is required`);
  return { principal, repo };
}

const TYPE_OF_KIND: Record<ErrorKind, ErrorType> = {
  invalid: 'invalid_request',
  not_found: 'not_found',
  conflict: 'conflict',
  forbidden: 'insufficient_scope',
  unavailable: 'unavailable',
};

function fromDomain(e: unknown): ApiError | undefined {
  if (e instanceof DomainError) return new ApiError(STATUS_OF_KIND[e.kind], TYPE_OF_KIND[e.kind], e.message);
  return undefined;
}

/** Runs a handler, turning ApiErrors and DomainErrors into problems; anything else is a 500. */
export async function handle(s: Services, ctx: Koa.Context, fn: () => Promise<void>): Promise<void> {
  try {
    await fn();
  } catch (e) {
    const api = e instanceof ApiError ? e : fromDomain(e);
    if (api) return problem(ctx, s, api);
    s.logger.error({ err: e, method: ctx.method, path: ctx.path }, 'api request failed');
    problem(ctx, s, new ApiError(500, 'internal_error', 'internal error'));
  }
}
