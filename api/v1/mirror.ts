// /api/v1/repository/<ns>/<repo>/mirror — Quay's repository mirroring API, field for field, so
// Quay automation works unchanged:
//   POST   …/mirror               create (201; 409 when one exists; 400 with a reason)
//   GET    …/mirror               the config (the password is never returned)
//   PUT    …/mirror               change some fields (201, as Quay answers)
//   POST   …/mirror/sync-now      queue a sync at once (204; 404 while one runs, as in Quay)
//   POST   …/mirror/sync-cancel   cancel the queued or running sync (204; 404 when none)
// Meridian extensions: DELETE …/mirror (204) and GET …/mirror/runs (run history). Only
// repository admins (and superusers) may use any of it.
import type Koa from 'koa';
import { z } from 'zod';
import {
  createMirrorConfig,
  deleteMirrorConfig,
  getMirrorConfig,
  listMirrorRuns,
  type MirrorConfigBody,
  mirrorConfigView,
  mirrorRunView,
  requestSyncCancel,
  requestSyncNow,
  updateMirrorConfig,
} from '../../mirror/config.ts';
import type { Services } from '../../platform/services.ts';
import { route, type Route } from '../router.ts';
import { bool, int, line, queryInt, repositoryPath, text } from '../schemas.ts';
import { adminRepository, ApiError } from './common.ts';

function unknownFields(what: string) {
  return {
    error: (iss: { code?: string; keys?: string[] }) =>
      iss.code === 'unrecognized_keys' ? `unknown field${iss.keys!.length > 1 ? 's' : ''} ${iss.keys!.map((k) => `"${what}${k}"`).join(', ')}` : `${what || 'the request body'} must be an object`,
  };
}

const proxy = z.strictObject(
  {
    http_proxy: line('external_registry_config.proxy.http_proxy', 2048).nullish(),
    https_proxy: line('external_registry_config.proxy.https_proxy', 2048).nullish(),
    no_proxy: line('external_registry_config.proxy.no_proxy', 4096).nullish(),
  },
  unknownFields('external_registry_config.proxy.'),
);

/** Quay's mirror config body. Read-only fields a GET shows are accepted and ignored (a GET → edit
 * → PUT round trip works as in Quay); anything else unknown is a 400 naming it. */
const mirrorConfigBody = z
  .strictObject(
    {
      is_enabled: bool('is_enabled').optional(),
      external_reference: line('external_reference', 512).optional(),
      external_registry_username: line('external_registry_username', 255).nullish(),
      external_registry_password: line('external_registry_password', 4096).nullish(),
      sync_interval: int('sync_interval', 1, 2 ** 31 - 1, 'a whole number of seconds, at least 1').optional(),
      sync_start_date: line('sync_start_date', 32).optional(),
      root_rule: z
        .strictObject(
          {
            rule_kind: line('root_rule.rule_kind', 64),
            rule_value: z.array(text('root_rule.rule_value[]', 255), { error: 'validation failed: rule_value must be a list with at least one tag pattern' }).max(100, { error: 'validation failed: rule_value has more than 100 tag patterns' }),
          },
          unknownFields('root_rule.'),
        )
        .optional(),
      robot_username: line('robot_username', 512).min(1, { error: 'robot_username must name a robot account, e.g. myorg+mirror' }).optional(),
      external_registry_config: z
        .strictObject(
          { verify_tls: bool('external_registry_config.verify_tls').optional(), unsigned_images: bool('external_registry_config.unsigned_images').optional(), proxy: proxy.nullish() },
          unknownFields('external_registry_config.'),
        )
        .optional(),
      rollback_on_failure: bool('rollback_on_failure').optional(),
      // Shown by GET, ignored on input; skopeo_timeout_interval is Quay's and changes nothing here.
      mirror_type: z.unknown().optional(),
      sync_status: z.unknown().optional(),
      sync_expiration_date: z.unknown().optional(),
      sync_retries_remaining: z.unknown().optional(),
      skopeo_timeout_interval: z.unknown().optional(),
    },
    unknownFields(''),
  )
  .transform(({ mirror_type: _m, sync_status: _s, sync_expiration_date: _e, sync_retries_remaining: _r, skopeo_timeout_interval: _t, ...rest }): MirrorConfigBody => rest);

const params = z.object({ repository: repositoryPath() });

export function mirrorRoutes(s: Services): Route[] {
  const admin = (ctx: Koa.Context, { params }: { params: { repository: string } }) => adminRepository(s, ctx, params.repository);
  const configOf = async (repo: { id: number; fullName: string }) => {
    const cfg = await getMirrorConfig(s.db, repo.id);
    if (!cfg) throw new ApiError(404, 'not_found', `repository ${repo.fullName} has no mirror configuration`);
    return cfg;
  };
  return [
    route({
      method: 'GET',
      path: '/api/v1/repository/*repository/mirror',
      params,
      access: admin,
      handler: async (ctx, { access: { repo } }) => {
        ctx.body = await mirrorConfigView(s.db, await configOf(repo));
      },
    }),
    route({
      method: 'POST',
      path: '/api/v1/repository/*repository/mirror',
      params,
      access: admin,
      body: mirrorConfigBody,
      handler: async (ctx, { access: { repo }, body }) => {
        await createMirrorConfig(s, repo, body);
        ctx.status = 201;
        ctx.body = '';
      },
    }),
    route({
      method: 'PUT',
      path: '/api/v1/repository/*repository/mirror',
      params,
      access: admin,
      body: mirrorConfigBody,
      handler: async (ctx, { access: { repo }, body }) => {
        await updateMirrorConfig(s, repo, body);
        ctx.status = 201;
        ctx.body = '';
      },
    }),
    route({
      method: 'DELETE',
      path: '/api/v1/repository/*repository/mirror',
      params,
      access: admin,
      handler: async (ctx, { access: { repo } }) => {
        await deleteMirrorConfig(s, repo);
        ctx.status = 204;
      },
    }),
    route({
      method: 'POST',
      path: '/api/v1/repository/*repository/mirror/sync-now',
      params,
      access: admin,
      handler: async (ctx, { access: { repo } }) => {
        await requestSyncNow(s, repo);
        ctx.status = 204;
      },
    }),
    route({
      method: 'POST',
      path: '/api/v1/repository/*repository/mirror/sync-cancel',
      params,
      access: admin,
      handler: async (ctx, { access: { repo } }) => {
        await requestSyncCancel(s, repo);
        ctx.status = 204;
      },
    }),
    route({
      method: 'GET',
      path: '/api/v1/repository/*repository/mirror/runs',
      params,
      query: z.object({ limit: queryInt('limit', 1, 100).optional(), before: queryInt('before', 1, Number.MAX_SAFE_INTEGER).optional() }),
      access: admin,
      handler: async (ctx, { query, access: { repo } }) => {
        const cfg = await configOf(repo);
        const runs = await listMirrorRuns(s.db, cfg.id, { limit: query.limit ?? 20, before: query.before });
        ctx.body = { runs: runs.map(mirrorRunView) };
      },
    }),
  ];
}
