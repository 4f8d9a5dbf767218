// The HTTP surface: the OCI Distribution API under /v2, the management API under /api/v1,
// health and metrics. Handlers parse and answer; domain modules decide.
import Koa from 'koa';
import type { Services } from '../platform/services.ts';
import { healthRoutes } from './health.ts';
import { metricsRoute } from './metrics.ts';
import { mirrorRoutes } from './v1/mirror.ts';
import { notificationRoutes } from './v1/notifications.ts';
import { accountRoutes } from './v1/accounts.ts';
import { operationRoutes } from './v1/operations.ts';
import { repositoryRoutes } from './v1/repositories.ts';
import { tokenEndpoint } from './token.ts';
import { v2Routes } from './v2/routes.ts';

export function createApp(s: Services): Koa {
  const app = new Koa({ proxy: false });
  app.silent = true;
  app.on('error', (err: Error & { status?: number; expose?: boolean }) => {
    if (err.status && err.status < 500) return;
    s.logger.error({ err }, 'unhandled error');
  });
  app.use(async (ctx, next) => {
    const start = performance.now();
    try {
      await next();
    } finally {
      s.logger.debug({ method: ctx.method, path: ctx.path, status: ctx.status, ms: Math.round(performance.now() - start) }, 'request');
    }
  });
  const health = healthRoutes(s);
  app.use(health.routes()).use(health.allowedMethods());
  app.use(metricsRoute(s));
  app.use(tokenEndpoint(s));
  app.use(v2Routes(s));
  // Mirror and notification routes first: the generic repository routes would take their paths
  // for repository names.
  app.use(mirrorRoutes(s));
  app.use(notificationRoutes(s));
  app.use(accountRoutes(s));
  app.use(repositoryRoutes(s));
  app.use(operationRoutes(s));
  return app;
}
