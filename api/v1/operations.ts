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
import { requireNamespaceAdmin, requireSuperuser, ApiError, jsonObject, str } from './common.ts';
import { routes } from './routing.ts';
import type { Services } from '../../platform/services.ts';
import { parseDigest } from '../../registry/digest.ts';
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
  type AddLocationInput,
} from '../../replication/operations.ts';

function bool(v: unknown, field: string): boolean | undefined {
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'boolean') throw new ApiError(400, 'invalid_request', `${field} must be true or false`);
  return v;
}

function credentialsFrom(body: Record<string, unknown>): AddLocationInput['credentials'] {
  const c = body.credentials;
  if (typeof c !== 'object' || c === null) throw new ApiError(400, 'invalid_request', 'credentials is required: {"ref": "env:PREFIX"} or {"access_key", "secret_key"}');
  const o = c as Record<string, unknown>;
  if (typeof o.ref === 'string') return { ref: o.ref };
  if (typeof o.access_key === 'string' && typeof o.secret_key === 'string') return { accessKeyId: o.access_key, secretAccessKey: o.secret_key };
  throw new ApiError(400, 'invalid_request', 'credentials: give "ref", or "access_key" and "secret_key"');
}

export function operationRoutes(s: Services) {
  return routes(s, [
    {
      method: 'GET',
      pattern: /^\/api\/v1\/locations\/?$/,
      run: async (ctx) => {
        await requireSuperuser(s, ctx);
        ctx.body = { locations: await listLocations(s) };
      },
    },
    {
      method: 'POST',
      pattern: /^\/api\/v1\/locations\/?$/,
      run: async (ctx) => {
        await requireSuperuser(s, ctx);
        const body = await jsonObject(ctx);
        const location = await addLocation(s, {
          name: str(body, 'name')!,
          region: str(body, 'region')!,
          endpoint: str(body, 'endpoint')!,
          bucket: str(body, 'bucket')!,
          pathPrefix: str(body, 'path_prefix', { optional: true }),
          s3Region: str(body, 's3_region', { optional: true }),
          replicateByDefault: bool(body.replicate_by_default, 'replicate_by_default'),
          credentials: credentialsFrom(body),
        });
        const backfill = ctx.query.backfill === 'true' ? await startBackfill(s, { location: location.name }) : undefined;
        ctx.status = 201;
        ctx.body = {
          location,
          ...(backfill
            ? { backfill }
            : { hint: `existing blobs are not in ${location.name} yet: POST /api/v1/replication/backfill {"location": "${location.name}"}` }),
        };
      },
    },
    {
      method: 'DELETE',
      pattern: /^\/api\/v1\/locations\/([^/]+)\/?$/,
      run: async (ctx, [name]) => {
        await requireSuperuser(s, ctx);
        const started = await startLocationRemoval(s, { name: name!, purge: ctx.query.purge === 'true' });
        ctx.status = 202;
        ctx.body = started;
      },
    },
    {
      method: 'GET',
      pattern: /^\/api\/v1\/locations\/([^/]+)\/removal\/?$/,
      run: async (ctx, [name]) => {
        await requireSuperuser(s, ctx);
        ctx.body = await removalProgress(s, name!);
      },
    },
    {
      method: 'GET',
      pattern: /^\/api\/v1\/blobs\/([^/]+)\/placements\/?$/,
      run: async (ctx, [digest]) => {
        await requireSuperuser(s, ctx);
        try {
          parseDigest(digest!);
        } catch (e) {
          throw new ApiError(400, 'invalid_request', (e as Error).message);
        }
        ctx.body = await blobPlacementsView(s, digest!);
      },
    },
    {
      method: 'GET',
      pattern: /^\/api\/v1\/replication\/summary\/?$/,
      run: async (ctx) => {
        await requireSuperuser(s, ctx);
        ctx.body = { locations: await replicationSummary(s) };
      },
    },
    {
      method: 'POST',
      pattern: /^\/api\/v1\/replication\/backfill\/?$/,
      run: async (ctx) => {
        await requireSuperuser(s, ctx);
        const body = await jsonObject(ctx);
        const window = body.window;
        if (window !== undefined && (typeof window !== 'number' || !Number.isInteger(window) || window < 1 || window > 64)) {
          throw new ApiError(400, 'invalid_request', 'window must be an integer from 1 to 64');
        }
        ctx.status = 202;
        ctx.body = await startBackfill(s, { location: str(body, 'location', { optional: true }), window: window as number | undefined });
      },
    },
    {
      method: 'GET',
      pattern: /^\/api\/v1\/replication\/backfill\/?$/,
      run: async (ctx) => {
        await requireSuperuser(s, ctx);
        ctx.body = await backfillProgress(s, typeof ctx.query.location === 'string' ? ctx.query.location : undefined);
      },
    },
    {
      method: 'GET',
      pattern: /^\/api\/v1\/namespace\/([^/]+)\/replication\/?$/,
      run: async (ctx, [ns]) => {
        await requireNamespaceAdmin(s, ctx, ns!);
        ctx.body = await namespaceReplication(s, ns!);
      },
    },
    {
      method: 'PUT',
      pattern: /^\/api\/v1\/namespace\/([^/]+)\/replication\/?$/,
      run: async (ctx, [ns]) => {
        await requireNamespaceAdmin(s, ctx, ns!);
        const body = await jsonObject(ctx);
        const locations = body.locations;
        if (locations !== null && (!Array.isArray(locations) || locations.some((l) => typeof l !== 'string'))) {
          throw new ApiError(400, 'invalid_request', 'locations must be a list of location names, or null for the defaults');
        }
        ctx.body = await setNamespaceReplication(s, ns!, locations as string[] | null);
      },
    },
    {
      method: 'POST',
      pattern: /^\/api\/v1\/superuser\/secrets\/rotate\/?$/,
      run: async (ctx) => {
        await requireSuperuser(s, ctx);
        ctx.body = await rotateSecrets(s);
      },
    },
  ]);
}
