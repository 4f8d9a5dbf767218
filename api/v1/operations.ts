// Geo-replication operations (Meridian's own endpoints; superusers only, except a namespace's
// own replication policy, which its admins may set):
//   GET    /api/v1/locations                      every location, its health; never credentials
//   POST   /api/v1/locations                      add one (probed first); ?backfill=true starts it
//   DELETE /api/v1/locations/<name>[?purge=true]  start its safe removal (202)
//   GET    /api/v1/locations/<name>/removal       removal progress or outcome
//   GET    /api/v1/blobs/<digest>/placements      where a blob is held, and where it is missing
//   GET    /api/v1/replication/summary            per location: held, pending, oldest pending, bytes
//   POST   /api/v1/replication/backfill           {location?, window?}  start (202)
//   GET    /api/v1/replication/backfill[?location=]   progress
//   GET|PUT /api/v1/namespace/<ns>/replication    {locations: [...] | null}
//   POST   /api/v1/superuser/secrets/rotate        re-seal secrets with the current key
import { z } from 'zod';
import { LOCATION_NAME } from '../../config.ts';
import type { Services } from '../../platform/services.ts';
import { namespaceReplication, setNamespaceReplication } from '../../replication/namespace-policy.ts';
import { rotateSecrets } from '../../security/rotate.ts';
import {
  addLocation,
  backfillProgress,
  blobPlacementsView,
  listLocations,
  removalProgress,
  replicationSummary,
  startBackfill,
  startLocationRemoval,
} from '../../replication/operations.ts';
import { route, type Route } from '../router.ts';
import { bool, digest, int, line, queryBool, queryText, segment } from '../schemas.ts';
import { requireNamespaceAdmin, requireSuperuser } from './common.ts';

const locationName = z.string().regex(LOCATION_NAME, { error: 'location: lowercase letters, digits and "-", up to 63 characters' });

// Either a reference to environment variables or the keys themselves (stored sealed).
const credentials = z.union(
  [
    z.object({ ref: line('credentials.ref', 255) }),
    z.object({ access_key: line('credentials.access_key', 1024), secret_key: line('credentials.secret_key', 1024) }),
  ],
  { error: 'credentials is required: {"ref": "env:PREFIX"} or {"access_key", "secret_key"}' },
);

const addLocationBody = z.object({
  name: line('name', 63),
  region: line('region', 63),
  endpoint: line('endpoint', 2048),
  bucket: line('bucket', 63),
  path_prefix: line('path_prefix', 1024).nullish(),
  s3_region: line('s3_region', 63).nullish(),
  replicate_by_default: bool('replicate_by_default').nullish(),
  credentials,
});

export function operationRoutes(s: Services): Route[] {
  const superuser = (ctx: Parameters<typeof requireSuperuser>[1]) => requireSuperuser(s, ctx);
  return [
    route({
      method: 'GET',
      path: '/api/v1/locations',
      access: superuser,
      handler: async (ctx) => {
        ctx.body = { locations: await listLocations(s) };
      },
    }),
    route({
      method: 'POST',
      path: '/api/v1/locations',
      query: z.object({ backfill: queryBool('backfill').optional() }),
      access: superuser,
      body: addLocationBody,
      handler: async (ctx, { query, body }) => {
        const c = body.credentials;
        const location = await addLocation(s, {
          name: body.name,
          region: body.region,
          endpoint: body.endpoint,
          bucket: body.bucket,
          pathPrefix: body.path_prefix ?? undefined,
          s3Region: body.s3_region ?? undefined,
          replicateByDefault: body.replicate_by_default ?? undefined,
          credentials: 'ref' in c ? { ref: c.ref } : { accessKeyId: c.access_key, secretAccessKey: c.secret_key },
        });
        const backfill = query.backfill ? await startBackfill(s, { location: location.name }) : undefined;
        ctx.status = 201;
        ctx.body = {
          location,
          ...(backfill
            ? { backfill }
            : { hint: `existing blobs are not in ${location.name} yet: POST /api/v1/replication/backfill {"location": "${location.name}"}` }),
        };
      },
    }),
    route({
      method: 'DELETE',
      path: '/api/v1/locations/:name',
      params: z.object({ name: locationName }),
      query: z.object({ purge: queryBool('purge').optional() }),
      access: superuser,
      handler: async (ctx, { params, query }) => {
        const started = await startLocationRemoval(s, { name: params.name, purge: query.purge ?? false });
        ctx.status = 202;
        ctx.body = started;
      },
    }),
    route({
      method: 'GET',
      path: '/api/v1/locations/:name/removal',
      params: z.object({ name: locationName }),
      access: superuser,
      handler: async (ctx, { params }) => {
        ctx.body = await removalProgress(s, params.name);
      },
    }),
    route({
      method: 'GET',
      path: '/api/v1/blobs/:digest/placements',
      params: z.object({ digest: digest() }),
      access: superuser,
      handler: async (ctx, { params }) => {
        ctx.body = await blobPlacementsView(s, params.digest);
      },
    }),
    route({
      method: 'GET',
      path: '/api/v1/replication/summary',
      access: superuser,
      handler: async (ctx) => {
        ctx.body = { locations: await replicationSummary(s) };
      },
    }),
    route({
      method: 'POST',
      path: '/api/v1/replication/backfill',
      access: superuser,
      body: z.object({ location: locationName.nullish(), window: int('window', 1, 64, 'an integer from 1 to 64').nullish() }),
      handler: async (ctx, { body }) => {
        ctx.status = 202;
        ctx.body = await startBackfill(s, { location: body.location ?? undefined, window: body.window ?? undefined });
      },
    }),
    route({
      method: 'GET',
      path: '/api/v1/replication/backfill',
      query: z.object({ location: queryText('location', 63).optional() }),
      access: superuser,
      handler: async (ctx, { query }) => {
        ctx.body = await backfillProgress(s, query.location);
      },
    }),
    route({
      method: 'GET',
      path: '/api/v1/namespace/:ns/replication',
      params: z.object({ ns: segment('namespace') }),
      access: (ctx, { params }) => requireNamespaceAdmin(s, ctx, params.ns),
      handler: async (ctx, { params }) => {
        ctx.body = await namespaceReplication(s, params.ns);
      },
    }),
    route({
      method: 'PUT',
      path: '/api/v1/namespace/:ns/replication',
      params: z.object({ ns: segment('namespace') }),
      access: (ctx, { params }) => requireNamespaceAdmin(s, ctx, params.ns),
      body: z.object({
        locations: z.array(line('locations[]', 63), { error: 'locations must be a list of location names, or null for the defaults' }).max(64).nullable(),
      }),
      handler: async (ctx, { params, body }) => {
        ctx.body = await setNamespaceReplication(s, params.ns, body.locations);
      },
    }),
    route({
      method: 'POST',
      path: '/api/v1/superuser/secrets/rotate',
      access: superuser,
      handler: async (ctx) => {
        ctx.body = await rotateSecrets(s);
      },
    }),
  ];
}
