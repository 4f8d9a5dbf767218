// The HTTP surface: the OCI Distribution API under /v2 (with its token endpoint), the management
// API under /api/v1, health and metrics — each a route table served by api/router.ts, with its
// own error style. Handlers parse and answer; domain modules decide.
import Koa from 'koa';
import type { Services } from '../platform/services.ts';
import { healthApi, plainErrors } from './health.ts';
import { metricsRoutes } from './metrics.ts';
import { router } from './router.ts';
import { managementApi } from './v1/index.ts';
import { v2Routes } from './v2/routes.ts';

export function createApp(s: Services): Koa {
  // Behind a trusted reverse proxy the client is the X-Forwarded-For entry that proxy appended
  // (the last one: the others are whatever the client wrote); otherwise the socket's peer.
  const app = new Koa({ proxy: s.config.trustProxy, maxIpsCount: 1 });
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
  // The prefixes are disjoint, so the order below does not matter.
  app.use(healthApi(s));
  app.use(router(metricsRoutes(s), { prefix: '/metrics', errors: plainErrors(s) }));
  app.use(v2Routes(s));
  app.use(managementApi(s));
  return app;
}
