// /v2: the OCI Distribution API (and its token endpoint, /v2/auth), as one route table. Each
// repository route names the actions it needs; access is decided in the route's access step,
// before the handler runs and before any body is read.
import type Koa from 'koa';
import { z } from 'zod';
import { presented } from '../../auth/authenticate.ts';
import { grantCreatorAdmin } from '../../auth/permissions.ts';
import { authorizeV2, authorizeV2Repository } from '../../auth/v2-access.ts';
import type { Principal, RepoAction } from '../../auth/principal.ts';
import { type CacheVersions, readCacheVersions } from '../../platform/cache-versions.ts';
import type { Services } from '../../platform/services.ts';
import { isDigest } from '../../registry/digest.ts';
import { isTag } from '../../registry/names.ts';
import { createRepository, type Repository } from '../../registry/repositories.ts';
import { isClientAbort, route, router, type Route } from '../router.ts';
import { digest, line, queryInt, queryText, repositoryName } from '../schemas.ts';
import { tokenRoutes } from '../token.ts';
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
  /** The cache versions read for this request (its caches answer from these snapshots). */
  versions: CacheVersions;
}

type Handler = (r: V2Request, param: string) => Promise<void>;

const pull: RepoAction[] = ['pull'];
const push: RepoAction[] = ['pull', 'push'];
const del: RepoAction[] = ['delete'];

// Path parameters. A field's name decides the OCI code of its 400 (see error-mapping.ts).
const name = repositoryName('name');
const reference = z.string().refine((v) => isTag(v) || isDigest(v), { error: 'reference is neither a valid tag nor a valid digest' });
const uploadId = line('uuid', 64);

const page = z.object({ n: queryInt('n', 0, Number.MAX_SAFE_INTEGER).optional(), last: queryText('last', 512).optional() });
const manifestPut = z.object({
  tag: z
    .preprocess((v) => (v === undefined || Array.isArray(v) ? v : [v]), z.array(queryText('tag', 128)).max(64, { error: 'at most 64 tag parameters' }))
    .optional(),
});
const uploadStart = z.object({ mount: digest().optional(), from: queryText('from', 255).optional(), digest: digest().optional() });
const uploadFinish = z.object({ digest: digest().optional() });
const referrersQuery = z.object({ artifactType: queryText('artifactType', 255).optional() });

interface RepoRoute {
  method: 'GET' | 'HEAD' | 'PUT' | 'POST' | 'PATCH' | 'DELETE';
  path: string;
  /** The route's second path parameter (reference, digest, upload id), handed to the handler. */
  param?: { key: string; schema: z.ZodType<string> };
  query?: z.ZodType<unknown>;
  actions: RepoAction[];
  handler: Handler;
  /** A push may create the repository. */
  creates?: boolean;
  /** Answers for a repository that does not exist (instead of NAME_UNKNOWN). */
  whenMissing?: (ctx: Koa.Context) => void;
}

function repoRoute(s: Services, spec: RepoRoute): Route {
  const params = z.object(spec.param ? { name, [spec.param.key]: spec.param.schema } : { name }) as z.ZodType<Record<string, string>>;
  return route({
    method: spec.method,
    path: spec.path,
    params,
    query: spec.query,
    access: async (ctx, { params }) => {
      const repository = params.name!;
      const versions = await readCacheVersions(s.sql);
      const authorized = await authorizeV2Repository(s, presented(ctx), { repository, actions: spec.actions }, versions.access);
      let repo = authorized.repo;
      if (!repo && spec.creates) {
        // authorizeV2 granted push, so the principal may create repositories in this namespace;
        // a creator-role member becomes the new repository's admin, as through the API.
        repo = await s.db
          .transaction(async (tx) => {
            const created = await createRepository(tx, { fullName: repository }, 'return');
            await grantCreatorAdmin(tx, authorized.principal, created);
            return created;
          })
          .catch((e: unknown) => {
            throw toOciError(e) ?? e;
          });
      }
      return { principal: authorized.principal, repo, versions };
    },
    handler: async (ctx, { params, access: { principal, repo, versions } }) => {
      if (!repo && spec.whenMissing) return spec.whenMissing(ctx);
      if (!repo) throw new OciError('NAME_UNKNOWN', `repository ${params.name} is not known to the registry`, { name: params.name });
      await spec.handler({ s, ctx, principal, name: params.name!, repo, versions }, spec.param ? params[spec.param.key]! : '');
    },
  });
}

export function v2RouteTable(s: Services): Route[] {
  const ref = { key: 'reference', schema: reference };
  const dig = { key: 'digest', schema: digest() };
  const upload = { key: 'uuid', schema: uploadId };
  return [
    route({
      method: 'GET',
      path: '/v2{/}',
      access: (ctx) => authorizeV2(s, presented(ctx), { actions: [] }),
      handler: (ctx) => {
        ctx.status = 200;
        ctx.body = ctx.method === 'HEAD' ? null : {};
      },
    }),
    route({
      method: 'GET',
      path: '/v2/_catalog',
      query: page,
      access: (ctx) => authorizeV2(s, presented(ctx), { actions: [], catalog: true }),
      handler: (ctx, { access: principal }) => catalog(s, ctx, principal),
    }),
    ...tokenRoutes(s),
    repoRoute(s, { method: 'GET', path: '/v2/*name/tags/list', query: page, actions: pull, handler: tagList }),
    repoRoute(s, { method: 'GET', path: '/v2/*name/manifests/:reference', param: ref, actions: pull, handler: getManifest }),
    repoRoute(s, { method: 'HEAD', path: '/v2/*name/manifests/:reference', param: ref, actions: pull, handler: getManifest }),
    repoRoute(s, { method: 'PUT', path: '/v2/*name/manifests/:reference', param: ref, query: manifestPut, actions: push, handler: putManifestRoute, creates: true }),
    repoRoute(s, { method: 'DELETE', path: '/v2/*name/manifests/:reference', param: ref, actions: del, handler: deleteManifestRoute }),
    repoRoute(s, { method: 'POST', path: '/v2/*name/blobs/uploads{/}', query: uploadStart, actions: push, handler: startUploadRoute, creates: true }),
    repoRoute(s, { method: 'GET', path: '/v2/*name/blobs/uploads/:uuid', param: upload, actions: push, handler: uploadStatus }),
    repoRoute(s, { method: 'PATCH', path: '/v2/*name/blobs/uploads/:uuid', param: upload, actions: push, handler: patchUpload }),
    repoRoute(s, { method: 'PUT', path: '/v2/*name/blobs/uploads/:uuid', param: upload, query: uploadFinish, actions: push, handler: putUpload }),
    repoRoute(s, { method: 'DELETE', path: '/v2/*name/blobs/uploads/:uuid', param: upload, actions: push, handler: cancelUploadRoute }),
    repoRoute(s, { method: 'GET', path: '/v2/*name/blobs/:digest', param: dig, actions: pull, handler: getBlob }),
    repoRoute(s, { method: 'HEAD', path: '/v2/*name/blobs/:digest', param: dig, actions: pull, handler: getBlob }),
    repoRoute(s, { method: 'DELETE', path: '/v2/*name/blobs/:digest', param: dig, actions: del, handler: deleteBlob }),
    // The spec asks for an empty index, not an error, when nothing refers to the digest — even
    // when the repository has never been pushed to.
    repoRoute(s, { method: 'GET', path: '/v2/*name/referrers/:digest', param: dig, query: referrersQuery, actions: pull, handler: referrers, whenMissing: emptyReferrers }),
  ];
}

function respondError(ctx: Koa.Context, e: OciError): void {
  ctx.status = e.status;
  for (const [k, v] of Object.entries(e.headers)) ctx.set(k, v);
  ctx.set('Content-Type', 'application/json');
  // HEAD responses carry no body; the status says it all.
  ctx.body = ctx.method === 'HEAD' ? null : JSON.stringify(e.body());
  if (ctx.method === 'HEAD') ctx.status = e.status;
}

/** A reset is the client's only if its request is gone; one while the client is still there came
 * from a backend (PostgreSQL restarting under a query): "unavailable, retry", not a 400. */
function clientGone(ctx: Koa.Context): boolean {
  return ctx.req.destroyed || ctx.req.socket?.destroyed !== false;
}

export function v2Errors(s: Services): (ctx: Koa.Context, e: unknown) => void {
  return (ctx, e) => {
    const oci = toOciError(e);
    if (oci) return respondError(ctx, oci);
    if (isClientAbort(e)) {
      if (clientGone(ctx)) {
        ctx.status = 400;
        return;
      }
      return respondError(ctx, new OciError('UNAVAILABLE', 'a backend connection was reset, retry', undefined, 503, { 'Retry-After': '2' }));
    }
    s.logger.error({ err: e, method: ctx.method, path: ctx.path }, 'v2 request failed');
    respondError(ctx, new OciError('UNAVAILABLE', 'internal error', undefined, 500));
  };
}

export function v2Routes(s: Services): Koa.Middleware {
  const serve = router(v2RouteTable(s), { prefix: '/v2', errors: v2Errors(s) });
  return (ctx, next) => {
    if (ctx.path === '/v2' || ctx.path.startsWith('/v2/')) ctx.set(API_VERSION_HEADER, 'registry/2.0');
    return serve(ctx, next);
  };
}
