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
import { z } from 'zod';
import { route, type Route } from '../router.ts';
import { line, segment, text } from '../schemas.ts';
import { ApiError, caller, quayDuplicate, requireNamespaceAdmin, requireSuperuser } from './common.ts';

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

const robotBody = z.object({ description: text('description', 1024).nullish() });
const orgParams = z.object({ org: segment('organization') });
const orgRobotParams = z.object({ org: segment('organization'), short: segment('robot name') });
const ownRobotParams = z.object({ short: segment('robot name') });

export function accountRoutes(s: Services): Route[] {
  const createRobotIn = async (ctx: Context, namespace: string, short: string, description: string | null | undefined) => {
    const ns = await namespaceByName(s.db, namespace);
    if (!ns) throw new ApiError(404, 'not_found', `namespace ${namespace} not found`);
    // Quay: an existing robot is a 400 "Existing robot with name: <ns>+<short>" (its token is
    // not returned again: only its hash is stored).
    const created = await quayDuplicate(`Existing robot with name: ${robotName(namespace, short)}`, () =>
      s.db.transaction((tx) => createRobot(tx, { namespace: ns, shortName: short, description: description ?? undefined })),
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
  const orgAdmin = (ctx: Context, { params }: { params: { org: string } }) => requireNamespaceAdmin(s, ctx, params.org);
  const ownNamespaceOf = async (ctx: Context) => ownNamespace(await caller(s, ctx));

  return [
    route({
      method: 'POST',
      path: '/api/v1/organization',
      access: (ctx) => caller(s, ctx),
      body: z.object({ name: segment('name'), email: line('email').nullish() }),
      handler: async (ctx, { access: p, body }) => {
        if (p.kind !== 'user') throw new ApiError(403, 'insufficient_scope', 'robots cannot create organizations');
        const org = await quayDuplicate(NAME_TAKEN, () => s.db.transaction((tx) => createOrganization(tx, { name: body.name, creatorUserId: p.userId })));
        ctx.status = 201;
        ctx.body = { name: org.name };
      },
    }),
    route({
      method: 'GET',
      path: '/api/v1/organization/:org',
      params: orgParams,
      access: (ctx) => caller(s, ctx),
      handler: async (ctx, { params: { org }, access: p }) => {
        const ns = await namespaceByName(s.db, org);
        if (!ns || ns.kind !== 'organization') throw new ApiError(404, 'not_found', `organization ${org} not found`);
        ctx.body = { name: ns.name, is_admin: await isNamespaceAdmin(s.db, p, ns.name), replication_locations: ns.replicationLocations };
      },
    }),
    route({
      method: 'GET',
      path: '/api/v1/organization/:org/robots',
      params: orgParams,
      access: orgAdmin,
      handler: async (ctx, { params: { org } }) => {
        // A superuser passes the access step for a namespace that does not exist.
        const ns = await namespaceByName(s.db, org);
        if (!ns) throw new ApiError(404, 'not_found', `namespace ${org} not found`);
        const rows = await s.db.select().from(robots).where(eq(robots.namespaceId, ns.id)).orderBy(asc(robots.shortName));
        ctx.body = { robots: rows.map((r) => robotView(org, r)) };
      },
    }),
    route({
      method: 'PUT',
      path: '/api/v1/organization/:org/robots/:short',
      params: orgRobotParams,
      access: orgAdmin,
      body: robotBody,
      handler: (ctx, { params: { org, short }, body }) => createRobotIn(ctx, org, short, body.description),
    }),
    route({
      method: 'GET',
      path: '/api/v1/organization/:org/robots/:short',
      params: orgRobotParams,
      access: orgAdmin,
      handler: async (ctx, { params: { org, short } }) => {
        ctx.body = robotView(org, await robotIn(s, org, short));
      },
    }),
    route({
      method: 'DELETE',
      path: '/api/v1/organization/:org/robots/:short',
      params: orgRobotParams,
      access: orgAdmin,
      handler: (ctx, { params: { org, short } }) => deleteRobotIn(ctx, org, short),
    }),
    route({
      method: 'POST',
      path: '/api/v1/organization/:org/robots/:short/regenerate',
      params: orgRobotParams,
      access: orgAdmin,
      handler: async (ctx, { params: { org, short } }) => {
        const r = await robotIn(s, org, short);
        ctx.body = robotView(org, r, await s.db.transaction((tx) => regenerateRobotToken(tx, r.id)));
      },
    }),
    route({
      method: 'PUT',
      path: '/api/v1/user/robots/:short',
      params: ownRobotParams,
      access: ownNamespaceOf,
      body: robotBody,
      handler: (ctx, { params: { short }, access: ns, body }) => createRobotIn(ctx, ns, short, body.description),
    }),
    route({
      method: 'GET',
      path: '/api/v1/user/robots/:short',
      params: ownRobotParams,
      access: ownNamespaceOf,
      handler: async (ctx, { params: { short }, access: ns }) => {
        ctx.body = robotView(ns, await robotIn(s, ns, short));
      },
    }),
    route({
      method: 'POST',
      path: '/api/v1/user/robots/:short/regenerate',
      params: ownRobotParams,
      access: ownNamespaceOf,
      handler: async (ctx, { params: { short }, access: ns }) => {
        const r = await robotIn(s, ns, short);
        ctx.body = robotView(ns, r, await s.db.transaction((tx) => regenerateRobotToken(tx, r.id)));
      },
    }),
    route({
      method: 'DELETE',
      path: '/api/v1/user/robots/:short',
      params: ownRobotParams,
      access: ownNamespaceOf,
      handler: (ctx, { params: { short }, access: ns }) => deleteRobotIn(ctx, ns, short),
    }),
    route({
      method: 'GET',
      path: '/api/v1/user',
      access: (ctx) => caller(s, ctx),
      handler: (ctx, { access: p }) => {
        ctx.body = p.kind === 'user' ? { username: p.username, super_user: p.superuser } : { username: p.kind === 'robot' ? p.name : '', is_robot: true };
      },
    }),
    route({
      method: 'POST',
      path: '/api/v1/user/apptoken',
      access: (ctx) => caller(s, ctx),
      body: z.object({ title: text('title', 255).nullish() }),
      handler: async (ctx, { access: p, body }) => {
        if (p.kind === 'anonymous') throw new ApiError(401, 'unauthorized', 'authentication required');
        const token = generateToken(32);
        await s.db.insert(tokens).values({
          kind: 'api',
          tokenHash: tokenHash(token),
          userId: p.kind === 'user' ? p.userId : null,
          robotId: p.kind === 'robot' ? p.robotId : null,
        });
        ctx.status = 201;
        ctx.body = { token: { title: body.title ?? '', token_code: token, created: new Date().toISOString() } };
      },
    }),
    route({
      method: 'POST',
      path: '/api/v1/superuser/users',
      access: (ctx) => requireSuperuser(s, ctx),
      body: z.object({ username: segment('username'), password: line('password', 1024).nullish(), email: line('email').nullish() }),
      handler: async (ctx, { body }) => {
        const { username } = body;
        const given = body.password ?? undefined;
        const password = given ?? generateToken(18);
        const email = body.email ?? undefined;
        await quayDuplicate(NAME_TAKEN, () => s.db.transaction((tx) => createUser(tx, { username, password, email })));
        // 200, as Quay answers. A generated password is shown this once; a given one is never echoed.
        ctx.status = 200;
        ctx.body = { username, email: email ?? null, ...(given ? {} : { password }) };
      },
    }),
  ];
}
