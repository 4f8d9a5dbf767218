// The transactional outbox, for operators (superusers only):
//   GET  /api/v1/outbox                 pending intents, the oldest one's age, dead-lettered intents
//   POST /api/v1/outbox/<id>/requeue    give a dead-lettered intent back to the relay
import { z } from 'zod';
import { outboxView, requeueDeadIntent } from '../../platform/outbox-dead.ts';
import type { Services } from '../../platform/services.ts';
import { route, type Route } from '../router.ts';
import { queryInt } from '../schemas.ts';
import { requireSuperuser } from './common.ts';

export function outboxRoutes(s: Services): Route[] {
  const superuser = (ctx: Parameters<typeof requireSuperuser>[1]) => requireSuperuser(s, ctx);
  return [
    route({
      method: 'GET',
      path: '/api/v1/outbox',
      access: superuser,
      query: z.object({ limit: queryInt('limit', 1, 1000).optional() }),
      handler: async (ctx, { query }) => {
        ctx.body = await outboxView(s.db, query.limit ?? 100);
      },
    }),
    route({
      method: 'POST',
      path: '/api/v1/outbox/:id/requeue',
      access: superuser,
      params: z.object({ id: z.string().regex(/^[1-9]\d{0,15}$/, { error: 'id must be an outbox intent id (a positive whole number)' }).transform(Number) }),
      handler: async (ctx, { params }) => {
        ctx.body = await requeueDeadIntent(s.db, params.id);
      },
    }),
  ];
}
