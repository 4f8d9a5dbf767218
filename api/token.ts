// The registry token endpoint, /v2/auth (the `realm` of our WWW-Authenticate challenges), as
// docker, podman, containerd, skopeo and crane speak it:
//   GET  /v2/auth?service=…&scope=…[&scope=…][&offline_token=true]   with Basic or no credentials
//   POST /v2/auth  (form) grant_type=password|refresh_token, scope="a b", access_type=offline
// Requested actions the principal may not have are dropped, never refused (Docker semantics).
import type Koa from 'koa';
import { eq } from 'drizzle-orm';
import { AuthenticationError, authenticate, verifyCredentials } from '../auth/authenticate.ts';
import { repositoryAccess } from '../auth/permissions.ts';
import type { Principal } from '../auth/principal.ts';
import { type AccessEntry, issueRefreshToken, issueRegistryToken, parseScope, refreshTokenOwner } from '../auth/tokens.ts';
import { namespaces, robots, users } from '../db/schema.ts';
import type { Services } from '../platform/services.ts';
import { isRepositoryName } from '../registry/names.ts';

export const TOKEN_PATH = '/v2/auth';
const MAX_FORM = 16 * 1024;
const MAX_SCOPES = 32;

function tokenError(ctx: Koa.Context, status: number, code: 'UNAUTHORIZED' | 'DENIED' | 'UNSUPPORTED', message: string): void {
  ctx.status = status;
  ctx.body = { errors: [{ code, message }], error: status === 401 ? 'invalid_grant' : 'invalid_request', error_description: message };
  if (status === 401) ctx.set('WWW-Authenticate', 'Basic realm="meridian"');
}

async function readForm(ctx: Koa.Context): Promise<URLSearchParams> {
  let size = 0;
  const chunks: Buffer[] = [];
  for await (const c of ctx.req) {
    size += (c as Buffer).length;
    if (size > MAX_FORM) throw new RangeError('form too large');
    chunks.push(c as Buffer);
  }
  return new URLSearchParams(Buffer.concat(chunks).toString('utf8'));
}

async function principalOfOwner(s: Services, owner: { userId: number | null; robotId: number | null }): Promise<Principal | undefined> {
  if (owner.userId !== null) {
    const [u] = await s.db.select().from(users).where(eq(users.id, owner.userId));
    if (u?.enabled) return { kind: 'user', userId: u.id, username: u.username, superuser: s.config.superusers.includes(u.username) };
  }
  if (owner.robotId !== null) {
    const [r] = await s.db.select({ robot: robots, ns: namespaces.name }).from(robots).innerJoin(namespaces, eq(namespaces.id, robots.namespaceId)).where(eq(robots.id, owner.robotId));
    if (r) return { kind: 'robot', robotId: r.robot.id, name: `${r.ns}+${r.robot.shortName}`, namespaceId: r.robot.namespaceId };
  }
  return undefined;
}

/** The grants for the requested scopes: each scope reduced to what the principal may do. */
export async function grantScopes(s: Services, principal: Principal, scopes: string[]): Promise<AccessEntry[]> {
  const out: AccessEntry[] = [];
  for (const raw of scopes.slice(0, MAX_SCOPES)) {
    const scope = parseScope(raw);
    if (!scope) continue;
    if (scope.type === 'registry') {
      // The catalog lists only what the caller may pull; any authenticated principal may ask.
      if (scope.name === 'catalog' && principal.kind !== 'anonymous') out.push({ type: 'registry', name: 'catalog', actions: ['*'] });
      continue;
    }
    if (!isRepositoryName(scope.name)) continue;
    const access = await repositoryAccess(s.db, principal, scope.name);
    const wanted = scope.actions.includes('*') ? ['pull', 'push', 'delete'] : scope.actions;
    const actions = wanted.filter((a) => access.actions.has(a as 'pull'));
    out.push({ type: 'repository', name: scope.name, actions: [...new Set(actions)] });
  }
  return out;
}

export function tokenEndpoint(s: Services): Koa.Middleware {
  return async (ctx, next) => {
    if (ctx.path !== TOKEN_PATH) return next();
    ctx.set('Cache-Control', 'no-store');
    try {
      let principal: Principal;
      let scopes: string[];
      let offline: boolean;
      if (ctx.method === 'GET') {
        const header = ctx.get('Authorization') || undefined;
        // Basic or nothing: a bearer token trading itself for a new one would let a stolen
        // short-lived token live forever (refresh tokens are the way to stay logged in).
        if (header && !/^Basic\s/i.test(header)) return tokenError(ctx, 401, 'UNAUTHORIZED', 'the token endpoint takes Basic credentials or none');
        const auth = await authenticate(s, header, 'registry').catch((e: unknown) => {
          if (e instanceof AuthenticationError) return undefined;
          throw e;
        });
        if (!auth) return tokenError(ctx, 401, 'UNAUTHORIZED', 'invalid username or password');
        principal = auth.principal;
        scopes = ([] as string[]).concat(ctx.query.scope ?? []).flatMap((x) => x.split(' ')).filter(Boolean);
        offline = ctx.query.offline_token === 'true';
      } else if (ctx.method === 'POST') {
        const form = await readForm(ctx);
        scopes = (form.get('scope') ?? '').split(' ').filter(Boolean);
        offline = form.get('access_type') === 'offline';
        const grant = form.get('grant_type');
        if (grant === 'password') {
          const found = await verifyCredentials(s, form.get('username') ?? '', form.get('password') ?? '');
          if (!found) return tokenError(ctx, 401, 'UNAUTHORIZED', 'invalid username or password');
          principal = found;
        } else if (grant === 'refresh_token') {
          const owner = await refreshTokenOwner(s.db, form.get('refresh_token') ?? '');
          const found = owner && (await principalOfOwner(s, owner));
          if (!found) return tokenError(ctx, 401, 'UNAUTHORIZED', 'invalid or expired refresh token');
          principal = found;
          offline = false; // the client keeps the refresh token it has
        } else {
          return tokenError(ctx, 400, 'UNSUPPORTED', 'grant_type must be password or refresh_token');
        }
      } else {
        ctx.status = 405;
        ctx.set('Allow', 'GET, POST');
        return;
      }
      const access = await grantScopes(s, principal, scopes);
      const issued = await issueRegistryToken(s.config, principal, access);
      const refresh = offline ? await issueRefreshToken(s.db, principal) : undefined;
      ctx.status = 200;
      ctx.body = {
        token: issued.token,
        access_token: issued.token,
        expires_in: issued.expiresIn,
        issued_at: issued.issuedAt,
        ...(refresh ? { refresh_token: refresh } : {}),
        ...(ctx.method === 'POST' ? { scope: access.map((a) => `${a.type}:${a.name}:${a.actions.join(',')}`).join(' ') } : {}),
      };
    } catch (e) {
      if (e instanceof RangeError) return tokenError(ctx, 400, 'UNSUPPORTED', 'request too large');
      throw e;
    }
  };
}
