// The HTTP surface: the OCI Distribution API under /v2 (with its token endpoint), the management
// API under /api/v1, health and metrics — each a route table served by api/router.ts, with its
// own error style. Handlers parse and answer; domain modules decide.
import Koa from 'koa';
import type { Services } from '../platform/services.ts';
import { healthApi } from './health.ts';
import { isClientAbort } from './router.ts';
import { metricsApi } from './metrics.ts';
import { managementApi } from './v1/index.ts';
import { v2Routes } from './v2/routes.ts';

export function createApp(s: Services): Koa {
  // Behind a trusted reverse proxy the client is the X-Forwarded-For entry that proxy appended
  // (the last one: the others are whatever the client wrote); otherwise the socket's peer.
  const app = new Koa({ proxy: s.config.trustProxy, maxIpsCount: 1 });
  app.silent = true;
  app.on('error', (err: Error & { status?: number; expose?: boolean }) => {
    if (err.status && err.status < 500) return;
    // A client that went away or timed out (MERIDIAN_REQUEST_TIMEOUT) is no server failure.
    if (isClientAbort(err)) return;
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
  // With a metrics listener of its own, the API's port does not serve them (404).
  if (!s.config.metricsAddress) app.use(metricsApi(s));
  app.use(v2Routes(s));
  app.use(managementApi(s));
  return app;
}
