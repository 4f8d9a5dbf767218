// Garbage collection (superusers, except a namespace's own grace period):
//   POST /api/v1/gc            {dry_run?, grace_seconds?}  start a run, or join the running one (202)
//   GET  /api/v1/gc[?dry_run=true]                         progress, or the report of the last run
//   GET  /api/v1/gc/summary     last run and dry run (time, outcome), reclaimable, pending and
//                               reclaimed bytes per location (scheduled runs included)
//   GET  /api/v1/gc/runs[?dry_run=&limit=]                 the newest finished runs' reports
//   GET|PUT /api/v1/namespace/<ns>/gc  {grace_seconds: n | null}  the namespace's own grace period
//                               (its admins; null = MERIDIAN_GC_GRACE)
import { z } from 'zod';
import { gcStatus, startGc } from '../../gc/operations.ts';
import { namespaceGrace, setNamespaceGrace } from '../../gc/namespace-grace.ts';
import { gcSummary, recentGcRuns } from '../../gc/runs.ts';
import type { Services } from '../../platform/services.ts';
import { route, type Route } from '../router.ts';
import { int, queryBool, queryInt, segment } from '../schemas.ts';
import { requireNamespaceAdmin, requireSuperuser } from './common.ts';
import { dryRunOperationRoutes } from './dry-run-operations.ts';

export function gcRoutes(s: Services): Route[] {
  const superuser = (ctx: Parameters<typeof requireSuperuser>[1]) => requireSuperuser(s, ctx);
  return [
    ...dryRunOperationRoutes(s, '/api/v1/gc', { start: (input) => startGc(s, input), status: (dryRun) => gcStatus(s, dryRun) }),
    route({
      method: 'GET',
      path: '/api/v1/namespace/:ns/gc',
      params: z.object({ ns: segment('namespace') }),
      access: (ctx, { params }) => requireNamespaceAdmin(s, ctx, params.ns),
      handler: async (ctx, { params }) => {
        ctx.body = graceView(await namespaceGrace(s.db, params.ns));
      },
    }),
    route({
      method: 'PUT',
      path: '/api/v1/namespace/:ns/gc',
      params: z.object({ ns: segment('namespace') }),
      access: (ctx, { params }) => requireNamespaceAdmin(s, ctx, params.ns),
      body: z.object({ grace_seconds: int('grace_seconds', 0, 365 * 86400, 'a number of seconds from 0 to 31536000, or null for the default').nullable() }),
      handler: async (ctx, { params, body }) => {
        ctx.body = graceView(await setNamespaceGrace(s.db, params.ns, body.grace_seconds));
      },
    }),
    route({
      method: 'GET',
      path: '/api/v1/gc/summary',
      access: superuser,
      handler: async (ctx) => {
        ctx.body = await gcSummary(s.db);
      },
    }),
    route({
      method: 'GET',
      path: '/api/v1/gc/runs',
      access: superuser,
      query: z.object({ dry_run: queryBool('dry_run').optional(), limit: queryInt('limit', 1, 100).optional() }),
      handler: async (ctx, { query }) => {
        ctx.body = { runs: await recentGcRuns(s.db, { limit: query.limit ?? 20, ...(query.dry_run !== undefined ? { dryRun: query.dry_run } : {}) }) };
      },
    }),
  ];
}

function graceView(g: { namespace: string; graceSeconds: number | null }) {
  return { namespace: g.namespace, grace_seconds: g.graceSeconds };
}
