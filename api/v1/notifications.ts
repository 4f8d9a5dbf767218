// /api/v1/repository/<ns>/<repo>/notification/ — Quay's repository notifications, for the
// mirror events and the webhook method:
//   POST   …/notification/          {event, method: "webhook", config: {url}, title?} → 201 with
//                                   the notification and its signing_secret (shown only here)
//   GET    …/notification/          {notifications: [...]}
//   GET    …/notification/<uuid>    one notification
//   DELETE …/notification/<uuid>    204
// Only repository admins may use it. How receivers verify deliveries: see mirror/webhooks.ts.
import type Koa from 'koa';
import { z } from 'zod';
import { UpstreamHostPolicy } from '../../mirror/reference.ts';
import { createSubscription, deleteSubscription, getSubscription, listSubscriptions, notificationView } from '../../mirror/webhooks.ts';
import type { Services } from '../../platform/services.ts';
import { route, type Route } from '../router.ts';
import { line, repositoryPath, text } from '../schemas.ts';
import { adminRepository } from './common.ts';

const params = z.object({ repository: repositoryPath() });
const oneParams = z.object({ repository: repositoryPath(), uuid: line('uuid', 64) });

const subscriptionBody = z.object({
  event: line('event', 64),
  method: line('method', 64),
  config: z.object({ url: line('config.url', 2048) }, { error: 'config.url is required' }),
  title: text('title', 255).nullish(),
  // Quay's clients send event_config; the mirror events have none.
  event_config: z.record(z.string(), z.unknown()).optional(),
});

export function notificationRoutes(s: Services): Route[] {
  const admin = (ctx: Koa.Context, { params }: { params: { repository: string } }) => adminRepository(s, ctx, params.repository);
  return [
    route({
      method: 'POST',
      path: '/api/v1/repository/*repository/notification',
      params,
      access: admin,
      body: subscriptionBody,
      handler: async (ctx, { access: { repo }, body }) => {
        const { row, secret } = await createSubscription({ db: s.db, secrets: s.secrets, policy: new UpstreamHostPolicy(s.config.mirrorAllowedHosts) }, repo, body);
        ctx.status = 201;
        ctx.body = { ...notificationView(row), signing_secret: secret };
      },
    }),
    route({
      method: 'GET',
      path: '/api/v1/repository/*repository/notification',
      params,
      access: admin,
      handler: async (ctx, { access: { repo } }) => {
        ctx.body = { notifications: (await listSubscriptions(s.db, repo.id)).map(notificationView) };
      },
    }),
    route({
      method: 'GET',
      path: '/api/v1/repository/*repository/notification/:uuid',
      params: oneParams,
      access: admin,
      handler: async (ctx, { params: { uuid }, access: { repo } }) => {
        ctx.body = notificationView(await getSubscription(s.db, repo.id, uuid));
      },
    }),
    route({
      method: 'DELETE',
      path: '/api/v1/repository/*repository/notification/:uuid',
      params: oneParams,
      access: admin,
      handler: async (ctx, { params: { uuid }, access: { repo } }) => {
        await deleteSubscription(s.db, repo.id, uuid);
        ctx.status = 204;
      },
    }),
  ];
}
