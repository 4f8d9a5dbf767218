import { Router } from '@koa/router';
import type { Context } from 'koa';
import { endToEndHealth, instanceHealth, type HealthReport } from '../platform/health.ts';
import type { Services } from '../platform/services.ts';

function answer(ctx: Context, report: HealthReport): void {
  ctx.status = report.ok ? 200 : 503;
  ctx.set('Cache-Control', 'no-store');
  ctx.body = {
    status: report.ok ? 'healthy' : 'unhealthy',
    failing: report.checks.filter((c) => !c.ok).map((c) => c.name),
    checks: report.checks,
  };
}

export function healthRoutes(s: Services): Router {
  const router = new Router({ prefix: '/health' });
  router.get('/instance', async (ctx) => answer(ctx, await instanceHealth(s)));
  router.get('/endtoend', async (ctx) => answer(ctx, await endToEndHealth(s)));
  return router;
}
