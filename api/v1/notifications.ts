// /api/v1/repository/<ns>/<repo>/notification/ — Quay's repository notifications, for the
// mirror events and the webhook method:
//   POST   …/notification/          {event, method: "webhook", config: {url}, title?} → 201 with
//                                   the notification and its signing_secret (shown only here)
//   GET    …/notification/          {notifications: [...]}
//   GET    …/notification/<uuid>    one notification
//   DELETE …/notification/<uuid>    204
// Only repository admins may use it. How receivers verify deliveries: see mirror/webhooks.ts.
import type Koa from 'koa';
import { UpstreamHostPolicy } from '../../mirror/reference.ts';
import { createSubscription, deleteSubscription, getSubscription, listSubscriptions, notificationView } from '../../mirror/webhooks.ts';
import type { Services } from '../../platform/services.ts';
import { adminRepository, ApiError, handle, jsonBody } from './mirror-common.ts';

const ROUTE = /^\/api\/v1\/repository\/(.+?)\/notification(?:\/([^/]+))?\/?$/;


export function notificationRoutes(s: Services): Koa.Middleware {
  return async (ctx, next) => {
    const m = ROUTE.exec(ctx.path);
    if (!m) return next();
    const name = decodeURIComponent(m[1]!);
    const id = m[2];
    await handle(s, ctx, async () => {
      const allowed = id ? ['GET', 'DELETE'] : ['GET', 'POST'];
      if (!allowed.includes(ctx.method)) {
        ctx.set('Allow', allowed.join(', '));
        throw new ApiError(405, 'invalid_request', `${ctx.method} is not supported here`);
      }
      const { repo } = await adminRepository(s, ctx, name);
      if (!id && ctx.method === 'POST') {
        const { row, secret } = await createSubscription({ db: s.db, secrets: s.secrets, policy: new UpstreamHostPolicy(s.config.mirrorAllowedHosts) }, repo, await jsonBody(ctx));
        ctx.status = 201;
        ctx.body = { ...notificationView(row), signing_secret: secret };
      } else if (!id) {
        ctx.body = { notifications: (await listSubscriptions(s.db, repo.id)).map(notificationView) };
      } else if (ctx.method === 'GET') {
        ctx.body = notificationView(await getSubscription(s.db, repo.id, id));
      } else {
        await deleteSubscription(s.db, repo.id, id);
        ctx.status = 204;
      }
    });
  };
}
