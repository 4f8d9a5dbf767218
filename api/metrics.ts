// GET /metrics: Prometheus text. This process's metrics, the cluster-wide replication counters
// kept in Redis, and gauges read at scrape time (location health, outbox depth).
import { outboxDepth } from '../platform/outbox.ts';
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
  const depth = await outboxDepth(s.db);
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

export function metricsRoutes(s: Services): Route[] {
  return [
    route({
      method: 'GET',
      path: '/metrics',
      handler: async (ctx) => {
        const parts = await Promise.all([
          s.metrics.process.registry.metrics(),
          s.metrics.replication.exposition(),
          gauges(s).catch((e: unknown) => `# gauges unavailable: ${(e as Error).message.replace(/\n/g, ' ')}\n`),
        ]);
        ctx.set('Content-Type', s.metrics.process.registry.contentType);
        ctx.body = parts.join('');
      },
    }),
  ];
}
