// The management API, /api/v1: one route table (Quay's endpoints and Meridian's operations),
// errors as problem details with Quay's error_message.
import type Koa from 'koa';
import type { Services } from '../../platform/services.ts';
import { router } from '../router.ts';
import { accountRoutes } from './accounts.ts';
import { v1Errors } from './common.ts';
import { gcRoutes } from './gc.ts';
import { mirrorRoutes } from './mirror.ts';
import { notificationRoutes } from './notifications.ts';
import { orphanRoutes } from './orphans.ts';
import { operationRoutes } from './operations.ts';
import { outboxRoutes } from './outbox.ts';
import { repositoryRoutes } from './repositories.ts';
import { scrubRoutes } from './scrub.ts';

export function managementApi(s: Services): Koa.Middleware {
  return router([...accountRoutes(s), ...repositoryRoutes(s), ...mirrorRoutes(s), ...notificationRoutes(s), ...operationRoutes(s), ...gcRoutes(s), ...outboxRoutes(s), ...scrubRoutes(s), ...orphanRoutes(s)], {
    prefix: '/api/v1',
    trailingSlash: true,
    errors: v1Errors(s),
  });
}
