// A small router for /api/v1: repository names contain slashes, so routes are regular
// expressions (like the /v2 router) rather than path-to-regexp patterns.
import type Koa from 'koa';
import type { Services } from '../../platform/services.ts';
import { ApiError, handle } from './common.ts';

export interface Route {
  method: 'GET' | 'POST' | 'PUT' | 'DELETE';
  pattern: RegExp;
  /** Captured groups, URI-decoded. */
  run: (ctx: Koa.Context, params: string[]) => Promise<void>;
}

export function routes(s: Services, table: Route[]): Koa.Middleware {
  return async (ctx, next) => {
    const matching = table.filter((r) => r.pattern.test(ctx.path));
    if (matching.length === 0) return next();
    await handle(s, ctx, async () => {
      const route = matching.find((r) => r.method === ctx.method);
      if (!route) {
        ctx.set('Allow', [...new Set(matching.map((r) => r.method))].join(', '));
        throw new ApiError(405, 'invalid_request', `${ctx.method} is not supported here`);
      }
      const m = route.pattern.exec(ctx.path)!;
      let params: string[];
      try {
        params = m.slice(1).map((p) => decodeURIComponent(p ?? ''));
      } catch {
        throw new ApiError(400, 'invalid_request', 'malformed path encoding');
      }
      await route.run(ctx, params);
    });
  };
}
