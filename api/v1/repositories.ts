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
import { ApiError, adminRepository, caller, jsonObject, quayDuplicate, readableRepository, str } from './common.ts';
import { routes } from './routing.ts';

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

function visibility(v: string | undefined): 'public' | 'private' {
  if (v === undefined) return 'private';
  if (v !== 'public' && v !== 'private') throw new ApiError(400, 'invalid_request', 'visibility must be public or private');
  return v;
}

const REPO = '(.+?)';

export function repositoryRoutes(s: Services) {
  return routes(s, [
    {
      method: 'POST',
      pattern: /^\/api\/v1\/repository\/?$/,
      run: async (ctx) => {
        const p = await caller(s, ctx);
        const body = await jsonObject(ctx);
        // As in Quay, the namespace defaults to the caller's own.
        const namespace = str(body, 'namespace', { optional: true }) ?? (p.kind === 'user' ? p.username : undefined);
        if (namespace === undefined) throw new ApiError(400, 'invalid_request', 'namespace is required');
        const name = str(body, 'repository')!;
        const fullName = `${namespace}/${name}`;
        if (!(await mayCreateIn(s.db, p, namespace))) throw new ApiError(403, 'insufficient_scope', `you may not create repositories in ${namespace}`);
        if (!parseRepositoryPath(fullName)) throw new ApiError(400, 'invalid_request', `Invalid repository name: "${fullName}" (lowercase letters, digits and separators . _ -, components joined by /)`);
        const vis = visibility(str(body, 'visibility', { optional: true }));
        const description = str(body, 'description', { optional: true });
        if (description !== undefined && description.length > 64 * 1024) throw new ApiError(400, 'invalid_request', 'description: at most 65536 characters');
        const repo = await quayDuplicate('Repository already exists', () =>
          s.db.transaction(async (tx) => {
            const created = await createRepository(tx, { fullName, visibility: vis, description });
            await grantCreatorAdmin(tx, p, created);
            return created;
          }),
        );
        ctx.status = 201;
        ctx.body = { namespace: repo.namespaceName, name: repo.name, kind: 'image' };
      },
    },
    {
      method: 'GET',
      pattern: new RegExp(`^/api/v1/repository/${REPO}/permissions/user/?$`),
      run: async (ctx, [name]) => {
        const { repo } = await adminRepository(s, ctx, name!);
        ctx.body = { permissions: Object.fromEntries((await listPermissions(s.db, repo)).map((p) => [p.name, p])) };
      },
    },
    {
      method: 'GET',
      pattern: new RegExp(`^/api/v1/repository/${REPO}/permissions/user/([^/]+)/?$`),
      run: async (ctx, [name, who]) => {
        const { repo } = await adminRepository(s, ctx, name!);
        const found = (await listPermissions(s.db, repo)).find((p) => p.name === who);
        if (!found) throw new ApiError(404, 'not_found', `${who} has no permission on ${repo.fullName}`);
        ctx.body = found;
      },
    },
    {
      method: 'PUT',
      pattern: new RegExp(`^/api/v1/repository/${REPO}/permissions/user/([^/]+)/?$`),
      run: async (ctx, [name, who]) => {
        const { repo } = await adminRepository(s, ctx, name!);
        const body = await jsonObject(ctx);
        ctx.body = await setPermission(s.db, repo, who!, str(body, 'role')!);
      },
    },
    {
      method: 'DELETE',
      pattern: new RegExp(`^/api/v1/repository/${REPO}/permissions/user/([^/]+)/?$`),
      run: async (ctx, [name, who]) => {
        const { repo } = await adminRepository(s, ctx, name!);
        await deletePermission(s.db, repo, who!);
        ctx.status = 204;
      },
    },
    {
      method: 'PUT',
      pattern: new RegExp(`^/api/v1/repository/${REPO}/changestate/?$`),
      run: async (ctx, [name]) => {
        const { repo } = await adminRepository(s, ctx, name!);
        const state = STATES_BY_NAME[str(await jsonObject(ctx), 'state')!];
        if (!state) throw new ApiError(400, 'invalid_request', 'state must be NORMAL, MIRROR or READ_ONLY');
        await setRepositoryState(s.db, repo, state);
        ctx.body = { success: true };
      },
    },
    {
      method: 'POST',
      pattern: new RegExp(`^/api/v1/repository/${REPO}/changevisibility/?$`),
      run: async (ctx, [name]) => {
        const { repo } = await adminRepository(s, ctx, name!);
        await setRepositoryVisibility(s.db, repo, visibility(str(await jsonObject(ctx), 'visibility')));
        ctx.body = { success: true };
      },
    },
    {
      method: 'GET',
      pattern: new RegExp(`^/api/v1/repository/${REPO}/?$`),
      run: async (ctx, [name]) => {
        const { principal, repo } = await readableRepository(s, ctx, name!);
        ctx.body = await repositoryView(s, repo, await repositoryRole(s.db, principal, repo));
      },
    },
    {
      method: 'DELETE',
      pattern: new RegExp(`^/api/v1/repository/${REPO}/?$`),
      run: async (ctx, [name]) => {
        const { repo } = await adminRepository(s, ctx, name!);
        // A mirror's schedule goes with it (through the outbox, in the same transaction).
        await s.db.transaction(async (tx) => {
          await mirrorRepositoryDeleted(tx, repo.fullName);
          await deleteRepository(tx, repo);
        });
        ctx.status = 204;
      },
    },
  ]);
}
