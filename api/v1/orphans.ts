// Orphan sweep (superusers only):
//   POST /api/v1/orphans            {dry_run?, grace_seconds?}  start a sweep, or join the running one (202)
//   GET  /api/v1/orphans[?dry_run=true]                         progress, or the report of the last sweep
import { z } from 'zod';
import { orphanSweepStatus, startOrphanSweep } from '../../gc/orphan-operations.ts';
import type { Services } from '../../platform/services.ts';
import { route, type Route } from '../router.ts';
import { bool, int, queryBool } from '../schemas.ts';
import { requireSuperuser } from './common.ts';

export function orphanRoutes(s: Services): Route[] {
  const superuser = (ctx: Parameters<typeof requireSuperuser>[1]) => requireSuperuser(s, ctx);
  return [
    route({
      method: 'POST',
      path: '/api/v1/orphans',
      access: superuser,
      body: z.object({
        dry_run: bool('dry_run').nullish(),
        grace_seconds: int('grace_seconds', 0, 365 * 86400, 'a number of seconds from 0 to 31536000').nullish(),
      }),
      handler: async (ctx, { body }) => {
        ctx.status = 202;
        ctx.body = await startOrphanSweep(s, { dryRun: body.dry_run ?? false, ...(body.grace_seconds != null ? { graceSeconds: body.grace_seconds } : {}) });
      },
    }),
    route({
      method: 'GET',
      path: '/api/v1/orphans',
      access: superuser,
      query: z.object({ dry_run: queryBool('dry_run').optional() }),
      handler: async (ctx, { query }) => {
        ctx.body = await orphanSweepStatus(s, query.dry_run ?? false);
      },
    }),
  ];
}
