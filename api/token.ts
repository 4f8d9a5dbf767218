// The registry token endpoint, /v2/auth (the `realm` of our WWW-Authenticate challenges), as
// docker, podman, containerd, skopeo and crane speak it:
//   GET  /v2/auth?service=…&scope=…[&scope=…][&offline_token=true]   with Basic or no credentials
//   POST /v2/auth  (form) grant_type=password|refresh_token, scope="a b", access_type=offline
// Requested actions the principal may not have are dropped, never refused (Docker semantics).
import type Koa from 'koa';
import { eq } from 'drizzle-orm';
import { z } from 'zod';
import { AuthenticationError, authenticate, presented, verifyLogin } from '../auth/authenticate.ts';
import { LoginThrottledError } from '../auth/login-throttle.ts';
import { repositoryAccess } from '../auth/permissions.ts';
import type { Principal } from '../auth/principal.ts';
import { type AccessEntry, issueRefreshToken, issueRegistryToken, parseScope, refreshTokenOwner } from '../auth/tokens.ts';
import { namespaces, robots, users } from '../db/schema.ts';
import type { Services } from '../platform/services.ts';
import { isRepositoryName } from '../registry/names.ts';
import { route, type Route } from './router.ts';
import { queryText } from './schemas.ts';

export const TOKEN_PATH = '/v2/auth';
const MAX_FORM = 16 * 1024;
const MAX_SCOPES = 32;

function tokenError(ctx: Koa.Context, status: number, code: 'UNAUTHORIZED' | 'DENIED' | 'UNSUPPORTED' | 'TOOMANYREQUESTS', message: string): void {
  ctx.status = status;
  ctx.body = { errors: [{ code, message }], error: status === 401 ? 'invalid_grant' : status === 429 ? 'slow_down' : 'invalid_request', error_description: message };
  if (status === 401) ctx.set('WWW-Authenticate', 'Basic realm="meridian"');
}

function throttled(ctx: Koa.Context, e: LoginThrottledError): void {
  ctx.set('Retry-After', String(e.retryAfterSeconds));
  tokenError(ctx, 429, 'TOOMANYREQUESTS', e.message);
}

// `scope` may be repeated (docker sends one per repository) and holds space-separated scopes.
const scopes = z
  .preprocess((v) => (v === undefined ? [] : Array.isArray(v) ? v : [v]), z.array(queryText('scope', 16 * 1024)))
  // Scopes beyond the first MAX_SCOPES are dropped, never refused (Docker semantics).
  .transform((list) => list.flatMap((x) => x.split(' ')).filter(Boolean).slice(0, MAX_SCOPES));

const tokenQuery = z.object({
  service: queryText('service', 255).optional(),
  scope: scopes,
  offline_token: queryText('offline_token', 8).optional(),
  account: queryText('account', 255).optional(),
  client_id: queryText('client_id', 255).optional(),
});

const tokenForm = z.object({
  grant_type: queryText('grant_type', 32).optional(),
  username: queryText('username', 8192).optional(),
  password: queryText('password', 8192).optional(),
  refresh_token: queryText('refresh_token', 1024).optional(),
  scope: scopes,
  access_type: queryText('access_type', 16).optional(),
  service: queryText('service', 255).optional(),
  client_id: queryText('client_id', 255).optional(),
});

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

async function answer(s: Services, ctx: Koa.Context, principal: Principal, requested: string[], offline: boolean): Promise<void> {
  const access = await grantScopes(s, principal, requested);
  const issued = await issueRegistryToken(s.config, principal, access);
  const refresh = offline ? await issueRefreshToken(s.db, principal) : undefined;
  ctx.set('Cache-Control', 'no-store');
  ctx.status = 200;
  ctx.body = {
    token: issued.token,
    access_token: issued.token,
    expires_in: issued.expiresIn,
    issued_at: issued.issuedAt,
    ...(refresh ? { refresh_token: refresh } : {}),
    ...(ctx.method === 'POST' ? { scope: access.map((a) => `${a.type}:${a.name}:${a.actions.join(',')}`).join(' ') } : {}),
  };
}

export function tokenRoutes(s: Services): Route[] {
  return [
    route({
      method: 'GET',
      path: TOKEN_PATH,
      query: tokenQuery,
      handler: async (ctx, { query }) => {
        ctx.set('Cache-Control', 'no-store');
        const header = ctx.get('Authorization') || undefined;
        // Basic or nothing: a bearer token trading itself for a new one would let a stolen
        // short-lived token live forever (refresh tokens are the way to stay logged in).
        if (header && !/^Basic\s/i.test(header)) return tokenError(ctx, 401, 'UNAUTHORIZED', 'the token endpoint takes Basic credentials or none');
        const auth = await authenticate(s, presented(ctx), 'registry').catch((e: unknown) => {
          if (e instanceof AuthenticationError || e instanceof LoginThrottledError) return e;
          throw e;
        });
        if (auth instanceof LoginThrottledError) return throttled(ctx, auth);
        if (auth instanceof AuthenticationError) return tokenError(ctx, 401, 'UNAUTHORIZED', 'invalid username or password');
        await answer(s, ctx, auth.principal, query.scope, query.offline_token === 'true');
      },
    }),
    route({
      method: 'POST',
      path: TOKEN_PATH,
      form: tokenForm,
      maxBody: MAX_FORM,
      handler: async (ctx, { body: form }) => {
        ctx.set('Cache-Control', 'no-store');
        let principal: Principal;
        let offline = form.access_type === 'offline';
        if (form.grant_type === 'password') {
          const found = await verifyLogin(s, { name: form.username ?? '', secret: form.password ?? '', address: ctx.ip }).catch((e: unknown) => {
            if (e instanceof LoginThrottledError) return e;
            throw e;
          });
          if (found instanceof LoginThrottledError) return throttled(ctx, found);
          if (!found) return tokenError(ctx, 401, 'UNAUTHORIZED', 'invalid username or password');
          principal = found;
        } else if (form.grant_type === 'refresh_token') {
          const owner = await refreshTokenOwner(s.db, form.refresh_token ?? '');
          const found = owner && (await principalOfOwner(s, owner));
          if (!found) return tokenError(ctx, 401, 'UNAUTHORIZED', 'invalid or expired refresh token');
          principal = found;
          offline = false; // the client keeps the refresh token it has
        } else {
          return tokenError(ctx, 400, 'UNSUPPORTED', 'grant_type must be password or refresh_token');
        }
        await answer(s, ctx, principal, form.scope, offline);
      },
    }),
  ];
}
