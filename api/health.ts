// /health/instance and /health/endtoend: what load balancers watch.
import type Koa from 'koa';
import { endToEndHealth, instanceHealth, type HealthReport } from '../platform/health.ts';
import type { Services } from '../platform/services.ts';
import { MethodNotAllowedError, route, router, type Route } from './router.ts';

function answer(ctx: Koa.Context, report: HealthReport): void {
  ctx.status = report.ok ? 200 : 503;
  ctx.set('Cache-Control', 'no-store');
  ctx.body = {
    status: report.ok ? 'healthy' : 'unhealthy',
    failing: report.checks.filter((c) => !c.ok).map((c) => c.name),
    checks: report.checks,
  };
}

/** Plain answers for the operational endpoints: a status and a one-line message. */
export function plainErrors(s: Services): (ctx: Koa.Context, e: unknown) => void {
  return (ctx, e) => {
    if (e instanceof MethodNotAllowedError) {
      ctx.status = 405;
      ctx.body = e.message;
      return;
    }
    const status = (e as { status?: number }).status;
    if (typeof status === 'number' && status >= 400 && status < 500) {
      ctx.status = status;
      ctx.body = (e as Error).message;
      return;
    }
    if ((e as Error).name === 'RouteNotFoundError') {
      ctx.status = 404;
      ctx.body = 'not found';
      return;
    }
    s.logger.error({ err: e, path: ctx.path }, 'request failed');
    ctx.status = 500;
    ctx.body = 'internal error';
  };
}

export function healthRoutes(s: Services): Route[] {
  return [
    route({ method: 'GET', path: '/health/instance', handler: async (ctx) => answer(ctx, await instanceHealth(s)) }),
    route({ method: 'GET', path: '/health/endtoend', handler: async (ctx) => answer(ctx, await endToEndHealth(s)) }),
  ];
}

export function healthApi(s: Services): Koa.Middleware {
  return router(healthRoutes(s), { prefix: '/health', errors: plainErrors(s) });
}
