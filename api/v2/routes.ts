// /v2: the OCI Distribution API. Repository names contain slashes, so paths are matched here
// with the spec's own grammar rather than with a path-to-regexp router.
import type Koa from 'koa';
import type { Services } from '../../platform/services.ts';
import { OciError } from './errors.ts';

export const API_VERSION_HEADER = 'Docker-Distribution-API-Version';

export function v2Routes(s: Services): Koa.Middleware {
  return async (ctx, next) => {
    if (ctx.path !== '/v2' && !ctx.path.startsWith('/v2/')) return next();
    ctx.set(API_VERSION_HEADER, 'registry/2.0');
    try {
      if (ctx.path === '/v2/' || ctx.path === '/v2') {
        if (ctx.method !== 'GET' && ctx.method !== 'HEAD') throw new OciError('UNSUPPORTED', 'method not allowed');
        ctx.status = 200;
        ctx.body = {};
        return;
      }
      throw new OciError('NAME_UNKNOWN', 'no such route', undefined, 404);
    } catch (e) {
      if (e instanceof OciError) {
        ctx.status = e.status;
        for (const [k, v] of Object.entries(e.headers)) ctx.set(k, v);
        ctx.body = e.body();
        return;
      }
      s.logger.error({ err: e, path: ctx.path }, 'v2 request failed');
      ctx.status = 500;
      ctx.body = new OciError('UNAVAILABLE', 'internal error').body();
    }
  };
}
