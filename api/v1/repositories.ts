// Repositories — Quay's endpoints and shapes:
//   POST   /api/v1/repository                 {namespace?, repository, visibility, description}  201
//          (the creator becomes admin when nothing else makes them one; an existing repository is
//          Quay's 400 "Repository already exists")
//   GET    /api/v1/repository/<ns>/<repo>
//   DELETE /api/v1/repository/<ns>/<repo>                                                    204
//   POST   /api/v1/repository/<ns>/<repo>/changevisibility  {visibility}
//   PUT    /api/v1/repository/<ns>/<repo>/changestate       {state: NORMAL|MIRROR|READ_ONLY}
//   GET    /api/v1/repository/<ns>/<repo>/permissions/user/
//   PUT|GET|DELETE /api/v1/repository/<ns>/<repo>/permissions/user/<name>  {role}
// <repo> may itself contain slashes (org/team/app).
import type Koa from 'koa';
import { namespaceByName } from '../../auth/accounts.ts';
import { grantCreatorAdmin, mayCreateIn, repositoryRole } from '../../auth/permissions.ts';
import { deletePermission, listPermissions, setPermission } from '../../auth/grants.ts';
import type { Services } from '../../platform/services.ts';
import { mirrorRepositoryDeleted } from '../../mirror/config.ts';
import { listTags } from '../../registry/manifests.ts';
import { parseRepositoryPath } from '../../registry/names.ts';
import {
  createRepository,
  deleteRepository,
  setRepositoryState,
  setRepositoryVisibility,
  type Repository,
  type RepositoryState,
} from '../../registry/repositories.ts';
import { z } from 'zod';
import { line, repositoryPath, segment, text } from '../schemas.ts';
import { route, type Route } from '../router.ts';
import { ApiError, adminRepository, caller, quayDuplicate, readableRepository } from './common.ts';

const STATE_NAMES: Record<RepositoryState, string> = { normal: 'NORMAL', mirror: 'MIRROR', readonly: 'READ_ONLY' };
const STATES_BY_NAME: Record<string, RepositoryState> = { NORMAL: 'normal', MIRROR: 'mirror', READ_ONLY: 'readonly' };

async function repositoryView(s: Services, repo: Repository, role: string | null) {
  return {
    namespace: repo.namespaceName,
    name: repo.name,
    kind: 'image',
    description: repo.description,
    is_public: repo.visibility === 'public',
    is_organization: (await namespaceByName(s.db, repo.namespaceName))?.kind === 'organization',
    state: STATE_NAMES[repo.state],
    // Quay: writing needs the permission and a NORMAL repository.
    can_write: (role === 'write' || role === 'admin') && repo.state === 'normal',
    can_admin: role === 'admin',
    tags: Object.fromEntries((await listTags(s.db, repo.id, { limit: 100 })).map((t) => [t, { name: t }])),
  };
}

const visibility = z.enum(['public', 'private'], { error: 'visibility must be public or private' });
const repoParams = z.object({ repository: repositoryPath() });
const permissionParams = z.object({ repository: repositoryPath(), who: segment('user') });

export function repositoryRoutes(s: Services): Route[] {
  const admin = (ctx: Koa.Context, { params }: { params: { repository: string } }) => adminRepository(s, ctx, params.repository);
  return [
    route({
      method: 'POST',
      path: '/api/v1/repository',
      access: (ctx) => caller(s, ctx),
      body: z.object({
        namespace: segment('namespace').optional(),
        repository: segment('repository'),
        visibility: visibility.optional(),
        description: text('description').nullish(),
      }),
      handler: async (ctx, { access: p, body }) => {
        // As in Quay, the namespace defaults to the caller's own.
        const namespace = body.namespace ?? (p.kind === 'user' ? p.username : undefined);
        if (namespace === undefined) throw new ApiError(400, 'invalid_request', 'namespace is required');
        const fullName = `${namespace}/${body.repository}`;
        if (!(await mayCreateIn(s.db, p, namespace))) throw new ApiError(403, 'insufficient_scope', `you may not create repositories in ${namespace}`);
        if (!parseRepositoryPath(fullName)) throw new ApiError(400, 'invalid_request', `Invalid repository name: "${fullName}" (lowercase letters, digits and separators . _ -, components joined by /)`);
        const repo = await quayDuplicate('Repository already exists', () =>
          s.db.transaction(async (tx) => {
            const created = await createRepository(tx, { fullName, visibility: body.visibility ?? 'private', description: body.description ?? undefined });
            await grantCreatorAdmin(tx, p, created);
            return created;
          }),
        );
        ctx.status = 201;
        ctx.body = { namespace: repo.namespaceName, name: repo.name, kind: 'image' };
      },
    }),
    route({
      method: 'GET',
      path: '/api/v1/repository/*repository/permissions/user',
      params: repoParams,
      access: admin,
      handler: async (ctx, { access: { repo } }) => {
        ctx.body = { permissions: Object.fromEntries((await listPermissions(s.db, repo)).map((p) => [p.name, p])) };
      },
    }),
    route({
      method: 'GET',
      path: '/api/v1/repository/*repository/permissions/user/:who',
      params: permissionParams,
      access: admin,
      handler: async (ctx, { params: { who }, access: { repo } }) => {
        const found = (await listPermissions(s.db, repo)).find((p) => p.name === who);
        if (!found) throw new ApiError(404, 'not_found', `${who} has no permission on ${repo.fullName}`);
        ctx.body = found;
      },
    }),
    route({
      method: 'PUT',
      path: '/api/v1/repository/*repository/permissions/user/:who',
      params: permissionParams,
      access: admin,
      body: z.object({ role: line('role', 16) }),
      handler: async (ctx, { params: { who }, access: { repo }, body }) => {
        ctx.body = await setPermission(s.db, repo, who, body.role);
      },
    }),
    route({
      method: 'DELETE',
      path: '/api/v1/repository/*repository/permissions/user/:who',
      params: permissionParams,
      access: admin,
      handler: async (ctx, { params: { who }, access: { repo } }) => {
        await deletePermission(s.db, repo, who);
        ctx.status = 204;
      },
    }),
    route({
      method: 'PUT',
      path: '/api/v1/repository/*repository/changestate',
      params: repoParams,
      access: admin,
      body: z.object({ state: z.enum(['NORMAL', 'MIRROR', 'READ_ONLY'], { error: 'state must be NORMAL, MIRROR or READ_ONLY' }) }),
      handler: async (ctx, { access: { repo }, body }) => {
        await setRepositoryState(s.db, repo, STATES_BY_NAME[body.state]!);
        ctx.body = { success: true };
      },
    }),
    route({
      method: 'POST',
      path: '/api/v1/repository/*repository/changevisibility',
      params: repoParams,
      access: admin,
      body: z.object({ visibility }),
      handler: async (ctx, { access: { repo }, body }) => {
        await setRepositoryVisibility(s.db, repo, body.visibility);
        ctx.body = { success: true };
      },
    }),
    route({
      method: 'GET',
      path: '/api/v1/repository/*repository',
      params: repoParams,
      access: (ctx, { params }) => readableRepository(s, ctx, params.repository),
      handler: async (ctx, { access: { principal, repo } }) => {
        ctx.body = await repositoryView(s, repo, await repositoryRole(s.db, principal, repo));
      },
    }),
    route({
      method: 'DELETE',
      path: '/api/v1/repository/*repository',
      params: repoParams,
      access: admin,
      handler: async (ctx, { access: { repo } }) => {
        // A mirror's schedule goes with it (through the outbox, in the same transaction).
        await s.db.transaction(async (tx) => {
          await mirrorRepositoryDeleted(tx, repo.fullName);
          await deleteRepository(tx, repo);
        });
        ctx.status = 204;
      },
    }),
  ];
}
