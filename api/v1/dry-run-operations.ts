// The two routes of an operation an operator runs by hand, for real or as a dry run (garbage
// collection, the orphan sweep), superusers only:
//   POST <path>  {dry_run?, grace_seconds?}  start a run, or join the running one (202)
//   GET  <path>[?dry_run=true]               progress, or the report of the last run
import { z } from 'zod';
import type { Services } from '../../platform/services.ts';
import { route, type Route } from '../router.ts';
import { bool, int, queryBool } from '../schemas.ts';
import { requireSuperuser } from './common.ts';

export interface DryRunOperation {
  start(input: { dryRun: boolean; graceSeconds?: number }): Promise<unknown>;
  status(dryRun: boolean): Promise<unknown>;
}

export function dryRunOperationRoutes(s: Services, path: string, op: DryRunOperation): Route[] {
  const superuser = (ctx: Parameters<typeof requireSuperuser>[1]) => requireSuperuser(s, ctx);
  return [
    route({
      method: 'POST',
      path,
      access: superuser,
      body: z.object({
        dry_run: bool('dry_run').nullish(),
        grace_seconds: int('grace_seconds', 0, 365 * 86400, 'a number of seconds from 0 to 31536000').nullish(),
      }),
      handler: async (ctx, { body }) => {
        ctx.status = 202;
        ctx.body = await op.start({ dryRun: body.dry_run ?? false, ...(body.grace_seconds != null ? { graceSeconds: body.grace_seconds } : {}) });
      },
    }),
    route({
      method: 'GET',
      path,
      access: superuser,
      query: z.object({ dry_run: queryBool('dry_run').optional() }),
      handler: async (ctx, { query }) => {
        ctx.body = await op.status(query.dry_run ?? false);
      },
    }),
  ];
}
