// Organizations, robot accounts, users and API tokens — Quay's endpoints and shapes:
//   POST /api/v1/organization/                      {name, email?}            201
//   (a taken name, an existing robot: 400 with Quay's message, as Quay answers — not 409)
//   GET  /api/v1/organization/<org>
//   GET  /api/v1/organization/<org>/robots
//   PUT|GET|DELETE /api/v1/organization/<org>/robots/<short>   {description?}  201 {name, token…}
//   POST /api/v1/organization/<org>/robots/<short>/regenerate
//   PUT|GET|DELETE /api/v1/user/robots/<short>     (robots of the caller's own namespace)
//   POST /api/v1/user/robots/<short>/regenerate
//   GET  /api/v1/user/                              the caller
//   POST /api/v1/user/apptoken                      {title}  → an API token, shown once
//   POST /api/v1/superuser/users/                   {username, email?, password?}  200 (superusers)
import { and, asc, eq } from 'drizzle-orm';
import type { Context } from 'koa';
import { NAME_TAKEN, createOrganization, createRobot, createUser, namespaceByName, regenerateRobotToken, robotName, type RobotRow } from '../../auth/accounts.ts';
import { generateToken, tokenHash } from '../../auth/passwords.ts';
import { isNamespaceAdmin } from '../../auth/permissions.ts';
import type { Principal } from '../../auth/principal.ts';
import { mirrorConfigs, robots, tokens } from '../../db/schema.ts';
import type { Services } from '../../platform/services.ts';
import { ApiError, caller, jsonObject, quayDuplicate, requireNamespaceAdmin, requireSuperuser, str } from './common.ts';
import { routes } from './routing.ts';

function robotView(namespace: string, r: RobotRow, token?: string) {
  return {
    name: robotName(namespace, r.shortName),
    description: r.description,
    created: r.createdAt.toISOString(),
    ...(token ? { token } : {}),
  };
}

async function robotIn(s: Services, namespace: string, short: string): Promise<RobotRow> {
  const ns = await namespaceByName(s.db, namespace);
  const [r] = ns ? await s.db.select().from(robots).where(and(eq(robots.namespaceId, ns.id), eq(robots.shortName, short))) : [];
  if (!r) throw new ApiError(404, 'not_found', `robot ${namespace}+${short} not found`);
  return r;
}

function ownNamespace(p: Principal): string {
  if (p.kind !== 'user') throw new ApiError(403, 'insufficient_scope', 'only users have their own robots');
  return p.username;
}

export function accountRoutes(s: Services) {
  const createRobotIn = async (ctx: Context, namespace: string, short: string) => {
    const body = await jsonObject(ctx);
    const ns = await namespaceByName(s.db, namespace);
    if (!ns) throw new ApiError(404, 'not_found', `namespace ${namespace} not found`);
    // Quay: an existing robot is a 400 "Existing robot with name: <ns>+<short>" (its token is
    // not returned again: only its hash is stored).
    const created = await quayDuplicate(`Existing robot with name: ${robotName(namespace, short)}`, () =>
      s.db.transaction((tx) => createRobot(tx, { namespace: ns, shortName: short, description: str(body, 'description', { optional: true }) })),
    );
    ctx.status = 201;
    ctx.body = robotView(namespace, created.robot, created.token);
  };
  const deleteRobotIn = async (ctx: Context, namespace: string, short: string) => {
    const r = await robotIn(s, namespace, short);
    const [mirror] = await s.db.select({ id: mirrorConfigs.id }).from(mirrorConfigs).where(eq(mirrorConfigs.robotId, r.id));
    if (mirror) throw new ApiError(400, 'invalid_request', 'Robot is being used by a mirror');
    await s.db.delete(robots).where(eq(robots.id, r.id));
    ctx.status = 204;
  };

  return routes(s, [
    {
      method: 'POST',
      pattern: /^\/api\/v1\/organization\/?$/,
      run: async (ctx) => {
        const p = await caller(s, ctx);
        if (p.kind !== 'user') throw new ApiError(403, 'insufficient_scope', 'robots cannot create organizations');
        const body = await jsonObject(ctx);
        const name = str(body, 'name')!;
        const org = await quayDuplicate(NAME_TAKEN, () => s.db.transaction((tx) => createOrganization(tx, { name, creatorUserId: p.userId })));
        ctx.status = 201;
        ctx.body = { name: org.name };
      },
    },
    {
      method: 'GET',
      pattern: /^\/api\/v1\/organization\/([^/]+)\/?$/,
      run: async (ctx, [org]) => {
        const p = await caller(s, ctx);
        const ns = await namespaceByName(s.db, org!);
        if (!ns || ns.kind !== 'organization') throw new ApiError(404, 'not_found', `organization ${org} not found`);
        ctx.body = { name: ns.name, is_admin: await isNamespaceAdmin(s.db, p, ns.name), replication_locations: ns.replicationLocations };
      },
    },
    {
      method: 'GET',
      pattern: /^\/api\/v1\/organization\/([^/]+)\/robots\/?$/,
      run: async (ctx, [org]) => {
        await requireNamespaceAdmin(s, ctx, org!);
        const ns = (await namespaceByName(s.db, org!))!;
        const rows = await s.db.select().from(robots).where(eq(robots.namespaceId, ns.id)).orderBy(asc(robots.shortName));
        ctx.body = { robots: rows.map((r) => robotView(org!, r)) };
      },
    },
    {
      method: 'PUT',
      pattern: /^\/api\/v1\/organization\/([^/]+)\/robots\/([^/]+)\/?$/,
      run: async (ctx, [org, short]) => {
        await requireNamespaceAdmin(s, ctx, org!);
        await createRobotIn(ctx, org!, short!);
      },
    },
    {
      method: 'GET',
      pattern: /^\/api\/v1\/organization\/([^/]+)\/robots\/([^/]+)\/?$/,
      run: async (ctx, [org, short]) => {
        await requireNamespaceAdmin(s, ctx, org!);
        ctx.body = robotView(org!, await robotIn(s, org!, short!));
      },
    },
    {
      method: 'DELETE',
      pattern: /^\/api\/v1\/organization\/([^/]+)\/robots\/([^/]+)\/?$/,
      run: async (ctx, [org, short]) => {
        await requireNamespaceAdmin(s, ctx, org!);
        await deleteRobotIn(ctx, org!, short!);
      },
    },
    {
      method: 'POST',
      pattern: /^\/api\/v1\/organization\/([^/]+)\/robots\/([^/]+)\/regenerate\/?$/,
      run: async (ctx, [org, short]) => {
        await requireNamespaceAdmin(s, ctx, org!);
        const r = await robotIn(s, org!, short!);
        ctx.body = robotView(org!, r, await s.db.transaction((tx) => regenerateRobotToken(tx, r.id)));
      },
    },
    {
      method: 'PUT',
      pattern: /^\/api\/v1\/user\/robots\/([^/]+)\/?$/,
      run: async (ctx, [short]) => createRobotIn(ctx, ownNamespace(await caller(s, ctx)), short!),
    },
    {
      method: 'GET',
      pattern: /^\/api\/v1\/user\/robots\/([^/]+)\/?$/,
      run: async (ctx, [short]) => {
        const ns = ownNamespace(await caller(s, ctx));
        ctx.body = robotView(ns, await robotIn(s, ns, short!));
      },
    },
    {
      method: 'POST',
      pattern: /^\/api\/v1\/user\/robots\/([^/]+)\/regenerate\/?$/,
      run: async (ctx, [short]) => {
        const ns = ownNamespace(await caller(s, ctx));
        const r = await robotIn(s, ns, short!);
        ctx.body = robotView(ns, r, await s.db.transaction((tx) => regenerateRobotToken(tx, r.id)));
      },
    },
    {
      method: 'DELETE',
      pattern: /^\/api\/v1\/user\/robots\/([^/]+)\/?$/,
      run: async (ctx, [short]) => deleteRobotIn(ctx, ownNamespace(await caller(s, ctx)), short!),
    },
    {
      method: 'GET',
      pattern: /^\/api\/v1\/user\/?$/,
      run: async (ctx) => {
        const p = await caller(s, ctx);
        ctx.body = p.kind === 'user' ? { username: p.username, super_user: p.superuser } : { username: p.kind === 'robot' ? p.name : '', is_robot: true };
      },
    },
    {
      method: 'POST',
      pattern: /^\/api\/v1\/user\/apptoken\/?$/,
      run: async (ctx) => {
        const p = await caller(s, ctx);
        if (p.kind === 'anonymous') throw new ApiError(401, 'unauthorized', 'authentication required');
        const body = await jsonObject(ctx);
        const title = str(body, 'title', { optional: true }) ?? '';
        const token = generateToken(32);
        await s.db.insert(tokens).values({
          kind: 'api',
          tokenHash: tokenHash(token),
          userId: p.kind === 'user' ? p.userId : null,
          robotId: p.kind === 'robot' ? p.robotId : null,
        });
        ctx.status = 201;
        ctx.body = { token: { title, token_code: token, created: new Date().toISOString() } };
      },
    },
    {
      method: 'POST',
      pattern: /^\/api\/v1\/superuser\/users\/?$/,
      run: async (ctx) => {
        await requireSuperuser(s, ctx);
        const body = await jsonObject(ctx);
        const username = str(body, 'username')!;
        const given = str(body, 'password', { optional: true });
        const password = given ?? generateToken(18);
        const email = str(body, 'email', { optional: true });
        await quayDuplicate(NAME_TAKEN, () => s.db.transaction((tx) => createUser(tx, { username, password, email })));
        // 200, as Quay answers. A generated password is shown this once; a given one is never echoed.
        ctx.status = 200;
        ctx.body = { username, email: email ?? null, ...(given ? {} : { password }) };
      },
    },
  ]);
}
