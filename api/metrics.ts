// GET /metrics: Prometheus text. This process's metrics, the cluster-wide replication counters
// kept in Redis, and gauges read at scrape time (location health, outbox depth, copy queue
// pollers, garbage collection). What it shows (locations, regions, traffic) is not for everyone: MERIDIAN_METRICS_TOKEN makes it require
// `Authorization: Bearer <token>`, and MERIDIAN_METRICS_ADDRESS serves it on a separate listener
// (an address only the scraper reaches) instead of the API's port.
import { timingSafeEqual } from 'node:crypto';
import Koa from 'koa';
import { gcExposition, gcSummary } from '../gc/runs.ts';
import { plainErrors } from './health.ts';
import { router } from './router.ts';
import { outboxDepth } from '../platform/outbox.ts';
import { copyQueuePollers } from '../platform/task-queues.ts';
import type { Services } from '../platform/services.ts';
import { route, type Route } from './router.ts';

async function gauges(s: Services): Promise<string> {
  const lines: string[] = [];
  await s.locations.fresh();
  const locs = s.locations.all();
  const health = await s.health.states(locs.map((l) => l.name));
  lines.push('# HELP meridian_location_healthy 1 when the location breaker is closed (healthy), 0 when open.');
  lines.push('# TYPE meridian_location_healthy gauge');
  for (const l of locs) lines.push(`meridian_location_healthy{location="${l.name}",region="${l.region}",state="${l.state}"} ${health.get(l.name)?.healthy ? 1 : 0}`);
  const [depth, pollers] = await Promise.all([outboxDepth(s.db), copyQueuePollers(s.temporal.client, locs.map((l) => l.name))]);
  lines.push('# HELP meridian_copy_queue_pollers Workers polling a location\'s copy queue (meridian-copy-<location>), as Temporal sees them; 0 means copies into it wait. Absent when Temporal cannot be asked.');
  lines.push('# TYPE meridian_copy_queue_pollers gauge');
  for (const l of locs) if (pollers.has(l.name)) lines.push(`meridian_copy_queue_pollers{location="${l.name}",region="${l.region}"} ${pollers.get(l.name)}`);
  lines.push('# HELP meridian_outbox_pending Work waiting in the outbox for Temporal (not dead-lettered).');
  lines.push('# TYPE meridian_outbox_pending gauge');
  lines.push(`meridian_outbox_pending ${depth.pending}`);
  lines.push('# HELP meridian_outbox_oldest_age_seconds Age of the oldest undelivered outbox entry.');
  lines.push('# TYPE meridian_outbox_oldest_age_seconds gauge');
  lines.push(`meridian_outbox_oldest_age_seconds ${depth.oldestAgeSeconds}`);
  lines.push('# HELP meridian_outbox_dead Outbox entries Temporal refused on every attempt, waiting for an operator (GET /api/v1/outbox).');
  lines.push('# TYPE meridian_outbox_dead gauge');
  lines.push(`meridian_outbox_dead ${depth.dead}`);
  return lines.join('\n') + '\n';
}

class MetricsUnauthorized extends Error {
  readonly status = 401;
  constructor() {
    super('a bearer token is required (MERIDIAN_METRICS_TOKEN)');
  }
}

function bearerMatches(header: string, token: string): boolean {
  const m = /^Bearer\s+(\S+)\s*$/i.exec(header);
  if (!m) return false;
  const a = Buffer.from(m[1]!);
  const b = Buffer.from(token);
  return a.length === b.length && timingSafeEqual(a, b);
}

export function metricsRoutes(s: Services): Route[] {
  return [
    route({
      method: 'GET',
      path: '/metrics',
      access: async (ctx) => {
        const token = s.config.metricsToken;
        if (token && !bearerMatches(ctx.get('Authorization'), token)) {
          ctx.set('WWW-Authenticate', 'Bearer realm="metrics"');
          throw new MetricsUnauthorized();
        }
      },
      handler: async (ctx) => {
        const parts = await Promise.all([
          s.metrics.process.registry.metrics(),
          s.metrics.replication.exposition(),
          gauges(s).catch((e: unknown) => `# gauges unavailable: ${(e as Error).message.replace(/\n/g, ' ')}\n`),
          gcSummary(s.db).then(gcExposition, (e: unknown) => `# gc metrics unavailable: ${(e as Error).message.replace(/\n/g, ' ')}\n`),
        ]);
        ctx.set('Content-Type', s.metrics.process.registry.contentType);
        ctx.body = parts.join('');
      },
    }),
  ];
}

/** The /metrics middleware (for the API's app, or a listener of its own). */
export function metricsApi(s: Services): Koa.Middleware {
  return router(metricsRoutes(s), { prefix: '/metrics', errors: plainErrors(s) });
}

/** The app of the separate metrics listener (MERIDIAN_METRICS_ADDRESS): /metrics and nothing else. */
export function createMetricsApp(s: Services): Koa {
  const app = new Koa();
  app.silent = true;
  app.use(metricsApi(s));
  return app;
}
