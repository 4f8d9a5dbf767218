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
import { getMirrorConfig, listMirrorRuns, mirrorConfigView, mirrorRunView, createMirrorConfig, deleteMirrorConfig, requestSyncCancel, requestSyncNow, updateMirrorConfig } from '../../mirror/config.ts';
import type { Services } from '../../platform/services.ts';
import { adminRepository, ApiError, handle, jsonBody } from './mirror-common.ts';

const ROUTE = /^\/api\/v1\/repository\/(.+?)\/mirror(?:\/(sync-now|sync-cancel|runs))?\/?$/;


const ALLOWED: Record<string, string[]> = { '': ['GET', 'POST', 'PUT', 'DELETE'], 'sync-now': ['POST'], 'sync-cancel': ['POST'], runs: ['GET'] };

export function mirrorRoutes(s: Services): Koa.Middleware {
  return async (ctx, next) => {
    const m = ROUTE.exec(ctx.path);
    if (!m) return next();
    const name = decodeURIComponent(m[1]!);
    const sub = m[2] ?? '';
    await handle(s, ctx, async () => {
      if (!ALLOWED[sub]!.includes(ctx.method)) {
        ctx.set('Allow', ALLOWED[sub]!.join(', '));
        throw new ApiError(405, 'invalid_request', `${ctx.method} is not supported here`);
      }
      const { repo } = await adminRepository(s, ctx, name);
      const key = `${ctx.method} ${sub}`;
      switch (key) {
        case 'GET ': {
          const cfg = await getMirrorConfig(s.db, repo.id);
          if (!cfg) throw new ApiError(404, 'not_found', `repository ${repo.fullName} has no mirror configuration`);
          ctx.body = await mirrorConfigView(s.db, cfg);
          return;
        }
        case 'POST ':
          await createMirrorConfig(s, repo, await jsonBody(ctx));
          ctx.status = 201;
          ctx.body = '';
          return;
        case 'PUT ':
          await updateMirrorConfig(s, repo, await jsonBody(ctx));
          ctx.status = 201;
          ctx.body = '';
          return;
        case 'DELETE ':
          await deleteMirrorConfig(s, repo);
          ctx.status = 204;
          return;
        case 'POST sync-now':
          await requestSyncNow(s, repo);
          ctx.status = 204;
          return;
        case 'POST sync-cancel':
          await requestSyncCancel(s, repo);
          ctx.status = 204;
          return;
        case 'GET runs': {
          const cfg = await getMirrorConfig(s.db, repo.id);
          if (!cfg) throw new ApiError(404, 'not_found', `repository ${repo.fullName} has no mirror configuration`);
          const limit = Number(ctx.query.limit ?? 20);
          const before = ctx.query.before === undefined ? undefined : Number(ctx.query.before);
          if (!Number.isInteger(limit) || limit < 1 || limit > 100) throw new ApiError(400, 'invalid_request', 'limit must be a whole number from 1 to 100');
          if (before !== undefined && !Number.isInteger(before)) throw new ApiError(400, 'invalid_request', 'before must be a run id');
          const runs = await listMirrorRuns(s.db, cfg.id, { limit, before });
          ctx.body = { runs: runs.map(mirrorRunView) };
          return;
        }
      }
    });
  };
}
