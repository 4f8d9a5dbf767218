// /v2: the OCI Distribution API. Repository names contain slashes, so paths are matched here
// with the spec's own grammar rather than with a path-to-regexp router. Each route names the
// actions it needs; access is decided before any handler runs.
import type Koa from 'koa';
import { grantCreatorAdmin } from '../../auth/permissions.ts';
import { authorizeV2, authorizeV2Repository } from '../../auth/v2-access.ts';
import type { Principal, RepoAction } from '../../auth/principal.ts';
import type { Services } from '../../platform/services.ts';
import { isRepositoryName } from '../../registry/names.ts';
import { createRepository, type Repository } from '../../registry/repositories.ts';
import { deleteBlob, getBlob } from './blobs.ts';
import { catalog, tagList } from './listing.ts';
import { deleteManifestRoute, getManifest, putManifestRoute } from './manifests.ts';
import { emptyReferrers, referrers } from './referrers.ts';
import { toOciError } from './error-mapping.ts';
import { OciError } from './errors.ts';
import { cancelUploadRoute, patchUpload, putUpload, startUploadRoute, uploadStatus } from './uploads.ts';

export const API_VERSION_HEADER = 'Docker-Distribution-API-Version';

export interface V2Request {
  s: Services;
  ctx: Koa.Context;
  principal: Principal;
  /** The repository's full name from the path. */
  name: string;
  /** The repository, looked up (and, for pushes, created) before the handler runs. */
  repo: Repository;
}

type Handler = (r: V2Request, param: string) => Promise<void>;

interface Route {
  pattern: RegExp;
  methods: Partial<
    Record<string, { actions: RepoAction[]; handler: Handler; creates?: boolean; whenMissing?: (ctx: Koa.Context) => void }>
  >;
}

const pull: RepoAction[] = ['pull'];
const push: RepoAction[] = ['pull', 'push'];
const del: RepoAction[] = ['delete'];

// The name is matched loosely here and checked against the grammar after, so that a bad name
// answers NAME_INVALID rather than "no such route".
const ROUTES: Route[] = [
  {
    pattern: /^\/v2\/(.+)\/tags\/list$/,
    methods: { GET: { actions: pull, handler: tagList } },
  },
  {
    pattern: /^\/v2\/(.+)\/manifests\/([^/]+)$/,
    methods: {
      GET: { actions: pull, handler: getManifest },
      HEAD: { actions: pull, handler: getManifest },
      PUT: { actions: push, handler: putManifestRoute, creates: true },
      DELETE: { actions: del, handler: deleteManifestRoute },
    },
  },
  {
    pattern: /^\/v2\/(.+)\/blobs\/uploads\/?()$/,
    methods: { POST: { actions: push, handler: startUploadRoute, creates: true } },
  },
  {
    pattern: /^\/v2\/(.+)\/blobs\/uploads\/([^/]+)$/,
    methods: {
      GET: { actions: push, handler: uploadStatus },
      PATCH: { actions: push, handler: patchUpload },
      PUT: { actions: push, handler: putUpload },
      DELETE: { actions: push, handler: cancelUploadRoute },
    },
  },
  {
    pattern: /^\/v2\/(.+)\/blobs\/([^/]+)$/,
    methods: {
      GET: { actions: pull, handler: getBlob },
      HEAD: { actions: pull, handler: getBlob },
      DELETE: { actions: del, handler: deleteBlob },
    },
  },
  {
    pattern: /^\/v2\/(.+)\/referrers\/([^/]+)$/,
    // The spec asks for an empty index, not an error, when nothing refers to the digest — even
    // when the repository has never been pushed to.
    methods: { GET: { actions: pull, handler: referrers, whenMissing: emptyReferrers } },
  },
];

function respondError(ctx: Koa.Context, e: OciError): void {
  ctx.status = e.status;
  for (const [k, v] of Object.entries(e.headers)) ctx.set(k, v);
  ctx.set('Content-Type', 'application/json');
  // HEAD responses carry no body; the status says it all.
  ctx.body = ctx.method === 'HEAD' ? null : JSON.stringify(e.body());
  if (ctx.method === 'HEAD') ctx.status = e.status;
}

export function v2Routes(s: Services): Koa.Middleware {
  return async (ctx, next) => {
    if (ctx.path !== '/v2' && !ctx.path.startsWith('/v2/')) return next();
    ctx.set(API_VERSION_HEADER, 'registry/2.0');
    try {
      await dispatch(s, ctx);
    } catch (e) {
      const oci = toOciError(e);
      if (oci) return respondError(ctx, oci);
      if (isClientAbort(e)) {
        ctx.status = 400;
        return;
      }
      s.logger.error({ err: e, method: ctx.method, path: ctx.path }, 'v2 request failed');
      respondError(ctx, new OciError('UNAVAILABLE', 'internal error', undefined, 500));
    }
  };
}

function isClientAbort(e: unknown): boolean {
  const code = (e as NodeJS.ErrnoException)?.code;
  return code === 'ECONNRESET' || code === 'ERR_STREAM_PREMATURE_CLOSE' || (e as Error)?.message === 'aborted';
}

async function dispatch(s: Services, ctx: Koa.Context): Promise<void> {
  const path = ctx.path;
  if (path === '/v2/' || path === '/v2') {
    if (ctx.method !== 'GET' && ctx.method !== 'HEAD') throw new OciError('UNSUPPORTED', 'method not allowed', undefined, 405);
    await authorizeV2(s, ctx.headers, { actions: [] });
    ctx.status = 200;
    ctx.body = ctx.method === 'HEAD' ? null : {};
    return;
  }
  if (path === '/v2/_catalog') {
    if (ctx.method !== 'GET') throw new OciError('UNSUPPORTED', 'method not allowed', undefined, 405);
    const principal = await authorizeV2(s, ctx.headers, { actions: [], catalog: true });
    await catalog(s, ctx, principal);
    return;
  }
  for (const route of ROUTES) {
    const m = route.pattern.exec(path);
    if (!m) continue;
    const name = decodeURIComponentSafe(m[1]!);
    const param = decodeURIComponentSafe(m[2] ?? '');
    const method = route.methods[ctx.method];
    if (!method) {
      ctx.set('Allow', Object.keys(route.methods).join(', '));
      throw new OciError('UNSUPPORTED', `${ctx.method} is not supported here`, undefined, 405);
    }
    if (!isRepositoryName(name)) throw new OciError('NAME_INVALID', 'invalid repository name', { name: name.slice(0, 256) });
    const authorized = await authorizeV2Repository(s, ctx.headers, { repository: name, actions: method.actions });
    const principal = authorized.principal;
    let repo = authorized.repo;
    if (!repo && method.creates) {
      // authorizeV2 granted push, so the principal may create repositories in this namespace;
      // a creator-role member becomes the new repository's admin, as through the API.
      repo = await s.db
        .transaction(async (tx) => {
          const created = await createRepository(tx, { fullName: name }, 'return');
          await grantCreatorAdmin(tx, principal, created);
          return created;
        })
        .catch((e: unknown) => {
          throw toOciError(e) ?? e;
        });
    }
    if (!repo && method.whenMissing) return method.whenMissing(ctx);
    if (!repo) throw new OciError('NAME_UNKNOWN', `repository ${name} is not known to the registry`, { name });
    await method.handler({ s, ctx, principal, name, repo }, param);
    return;
  }
  throw new OciError('NAME_UNKNOWN', 'not found', undefined, 404);
}

function decodeURIComponentSafe(s: string): string {
  try {
    return decodeURIComponent(s);
  } catch {
    throw new OciError('NAME_INVALID', 'malformed path encoding');
  }
}
