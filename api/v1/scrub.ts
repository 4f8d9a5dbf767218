// Integrity scrub (superusers only):
//   POST /api/v1/scrub/:location   {sample?, rate_bytes_per_second?}  start a scrub, or join the running one (202)
//   GET  /api/v1/scrub/:location                                      progress, or the report of the last run
import { z } from 'zod';
import { LOCATION_NAME } from '../../config.ts';
import type { Services } from '../../platform/services.ts';
import { scrubStatus, startScrub } from '../../replication/scrub-operations.ts';
import { route, type Route } from '../router.ts';
import { int } from '../schemas.ts';
import { requireSuperuser } from './common.ts';

const locationName = z.string().regex(LOCATION_NAME, { error: 'location: lowercase letters, digits and "-", up to 63 characters' });

const sample = z
  .number({ error: 'sample must be a number greater than 0 and at most 1' })
  .gt(0, { error: 'sample must be a number greater than 0 and at most 1' })
  .lte(1, { error: 'sample must be a number greater than 0 and at most 1' });

export function scrubRoutes(s: Services): Route[] {
  const superuser = (ctx: Parameters<typeof requireSuperuser>[1]) => requireSuperuser(s, ctx);
  return [
    route({
      method: 'POST',
      path: '/api/v1/scrub/:location',
      params: z.object({ location: locationName }),
      access: superuser,
      body: z.object({
        sample: sample.nullish(),
        // 0 = unlimited; at most 100 GiB/s.
        rate_bytes_per_second: int('rate_bytes_per_second', 0, 100 * 2 ** 30, 'a whole number of bytes per second from 0 (unlimited) to 107374182400').nullish(),
      }),
      handler: async (ctx, { params, body }) => {
        ctx.status = 202;
        ctx.body = await startScrub(s, {
          location: params.location,
          ...(body.sample != null ? { sample: body.sample } : {}),
          ...(body.rate_bytes_per_second != null ? { rateBytesPerSecond: body.rate_bytes_per_second } : {}),
        });
      },
    }),
    route({
      method: 'GET',
      path: '/api/v1/scrub/:location',
      params: z.object({ location: locationName }),
      access: superuser,
      handler: async (ctx, { params }) => {
        ctx.body = await scrubStatus(s, params.location);
      },
    }),
  ];
}
