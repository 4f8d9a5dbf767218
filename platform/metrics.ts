// Prometheus metrics. Per-process metrics (pulls served by each location) live in prom-client;
// replication metrics are counted by whichever worker did the copy, in any region, so they are
// kept in Redis and every API instance's /metrics shows the cluster-wide totals (a Redis restart
// resets them, which Prometheus treats as a counter reset).
import type { Redis } from 'ioredis';
import { Counter, Registry, collectDefaultMetrics } from 'prom-client';

export const LAG_BUCKETS = [0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300, 900, 3600];

const KEYS = {
  copies: 'metrics:replication:copies',
  bytes: 'metrics:replication:bytes',
  failures: 'metrics:replication:failures',
  lag: 'metrics:replication:lag',
  regionBytes: 'metrics:replication:region_bytes',
  /** Per location: `objects`, `bytes`, `missing`, `corrupt`, `repaired`, `finished` (unix time). */
  scrub: (location: string) => `metrics:scrub:${location}`,
  scrubLocations: 'metrics:scrub:locations',
};

const SCRUB_COUNTERS = [
  ['objects', 'meridian_scrub_objects_total', 'Copies re-read by the integrity scrub and their digests recomputed, by location.'],
  ['bytes', 'meridian_scrub_bytes_total', 'Bytes re-read by the integrity scrub, by location.'],
  ['missing', 'meridian_scrub_missing_total', 'Copies the scrub found missing from their location (marked damaged), by location.'],
  ['corrupt', 'meridian_scrub_corrupt_total', 'Copies the scrub found with bytes not matching their digest (marked damaged), by location.'],
  ['repaired', 'meridian_scrub_repaired_total', 'Damaged copies available again after a re-copy from a healthy replica, by location.'],
] as const;

/** Where bytes travelled: the region of whoever receives them (the client of an API instance,
 * the target of a copy) and the storage location they were read from. */
export interface ByteRoute {
  clientRegion: string;
  location: string;
  locationRegion: string;
}

/** "true" when the bytes crossed between regions: what a nearest-region design keeps at 0. */
export function crossRegion(r: ByteRoute): 'true' | 'false' {
  return r.clientRegion === r.locationRegion ? 'false' : 'true';
}

/** Cluster-wide replication counters, written by copy workers. Never throws. */
export class ReplicationMetrics {
  constructor(private readonly redis: Redis) {}

  /** A completed copy of `bytes` bytes read from `route.location` into `target` (in `route.clientRegion`). */
  async copied(route: ByteRoute, target: string, bytes: number): Promise<void> {
    const field = `${route.location}|${target}`;
    const regionField = `${route.clientRegion}|${route.location}|${route.locationRegion}`;
    await this.redis
      .multi()
      .hincrby(KEYS.copies, field, 1)
      .hincrby(KEYS.bytes, field, bytes)
      .hincrby(KEYS.regionBytes, regionField, bytes)
      .exec()
      .catch(() => {});
  }

  async failed(reason: string, source: string, target: string): Promise<void> {
    await this.redis.hincrby(KEYS.failures, `${reason}|${source}|${target}`, 1).catch(() => {});
  }

  /** Seconds from the push completing to every wanted location holding a verified copy. */
  async lag(seconds: number): Promise<void> {
    const m = this.redis.multi();
    for (const le of LAG_BUCKETS) if (seconds <= le) m.hincrby(KEYS.lag, `le:${le}`, 1);
    m.hincrby(KEYS.lag, 'count', 1).hincrbyfloat(KEYS.lag, 'sum', seconds);
    await m.exec().catch(() => {});
  }

  /** The scrub re-read one copy of `bytes` bytes at `location`. */
  async scrubbed(location: string, bytes: number): Promise<void> {
    await this.redis.multi().sadd(KEYS.scrubLocations, location).hincrby(KEYS.scrub(location), 'objects', 1).hincrby(KEYS.scrub(location), 'bytes', bytes).exec().catch(() => {});
  }

  async damaged(location: string, problem: 'missing' | 'corrupt'): Promise<void> {
    await this.redis.multi().sadd(KEYS.scrubLocations, location).hincrby(KEYS.scrub(location), problem, 1).exec().catch(() => {});
  }

  async repaired(location: string, copies: number): Promise<void> {
    await this.redis.multi().sadd(KEYS.scrubLocations, location).hincrby(KEYS.scrub(location), 'repaired', copies).exec().catch(() => {});
  }

  /** A scrub run of `location` finished (the time, for "last scrub" alerts). */
  async scrubFinished(location: string): Promise<void> {
    await this.redis.multi().sadd(KEYS.scrubLocations, location).hset(KEYS.scrub(location), 'finished', Math.floor(Date.now() / 1000)).exec().catch(() => {});
  }

  private async scrubExposition(esc: (v: string) => string): Promise<string[]> {
    const locations = (await this.redis.smembers(KEYS.scrubLocations)).sort();
    const stats = await Promise.all(locations.map((l) => this.redis.hgetall(KEYS.scrub(l))));
    const lines: string[] = [];
    for (const [field, name, help] of SCRUB_COUNTERS) {
      lines.push(`# HELP ${name} ${help}`, `# TYPE ${name} counter`);
      locations.forEach((l, i) => lines.push(`${name}{location="${esc(l)}"} ${stats[i]![field] ?? 0}`));
    }
    lines.push('# HELP meridian_scrub_last_finished_timestamp_seconds When the last scrub run of the location finished (unix time).');
    lines.push('# TYPE meridian_scrub_last_finished_timestamp_seconds gauge');
    locations.forEach((l, i) => stats[i]!.finished && lines.push(`meridian_scrub_last_finished_timestamp_seconds{location="${esc(l)}"} ${stats[i]!.finished}`));
    return lines;
  }

  /** Prometheus text for the shared metrics. */
  async exposition(): Promise<string> {
    let copies: Record<string, string> = {};
    let bytes: Record<string, string> = {};
    let failures: Record<string, string> = {};
    let lag: Record<string, string> = {};
    let regionBytes: Record<string, string> = {};
    const esc = (v: string) => v.replace(/\\/g, '\\\\').replace(/"/g, '\\"');
    let scrub: string[] = [];
    try {
      scrub = await this.scrubExposition(esc);
      [copies, bytes, failures, lag, regionBytes] = await Promise.all([
        this.redis.hgetall(KEYS.copies),
        this.redis.hgetall(KEYS.bytes),
        this.redis.hgetall(KEYS.failures),
        this.redis.hgetall(KEYS.lag),
        this.redis.hgetall(KEYS.regionBytes),
      ]);
    } catch {
      return '# replication metrics unavailable: Redis unreachable\n';
    }
    const lines: string[] = [...scrub];
    lines.push('# HELP meridian_replication_copies_total Blob copies completed, by source and target location.');
    lines.push('# TYPE meridian_replication_copies_total counter');
    for (const [k, v] of Object.entries(copies)) {
      const [s, t] = k.split('|');
      lines.push(`meridian_replication_copies_total{source="${esc(s!)}",target="${esc(t!)}"} ${v}`);
    }
    lines.push('# HELP meridian_replication_bytes_total Bytes copied by replication, by source and target location.');
    lines.push('# TYPE meridian_replication_bytes_total counter');
    for (const [k, v] of Object.entries(bytes)) {
      const [s, t] = k.split('|');
      lines.push(`meridian_replication_bytes_total{source="${esc(s!)}",target="${esc(t!)}"} ${v}`);
    }
    lines.push('# HELP meridian_copied_bytes_total Bytes read by replication copies, by the region copied into (client_region) and the location read from.');
    lines.push('# TYPE meridian_copied_bytes_total counter');
    for (const [k, v] of Object.entries(regionBytes)) {
      const [clientRegion, location, locationRegion] = k.split('|') as [string, string, string];
      const cross = crossRegion({ clientRegion, location, locationRegion });
      lines.push(`meridian_copied_bytes_total{client_region="${esc(clientRegion)}",location="${esc(location)}",location_region="${esc(locationRegion)}",cross_region="${cross}"} ${v}`);
    }
    lines.push('# HELP meridian_replication_failures_total Failed copy attempts, by reason, source and target.');
    lines.push('# TYPE meridian_replication_failures_total counter');
    for (const [k, v] of Object.entries(failures)) {
      const [r, s, t] = k.split('|');
      lines.push(`meridian_replication_failures_total{reason="${esc(r!)}",source="${esc(s!)}",target="${esc(t!)}"} ${v}`);
    }
    lines.push('# HELP meridian_replication_lag_seconds Time from a push completing to every wanted location holding a verified copy.');
    lines.push('# TYPE meridian_replication_lag_seconds histogram');
    for (const le of LAG_BUCKETS) lines.push(`meridian_replication_lag_seconds_bucket{le="${le}"} ${lag[`le:${le}`] ?? 0}`);
    lines.push(`meridian_replication_lag_seconds_bucket{le="+Inf"} ${lag.count ?? 0}`);
    lines.push(`meridian_replication_lag_seconds_sum ${lag.sum ?? 0}`);
    lines.push(`meridian_replication_lag_seconds_count ${lag.count ?? 0}`);
    return lines.join('\n') + '\n';
  }
}

/** This process's own metrics. */
export class ProcessMetrics {
  readonly registry = new Registry();
  readonly pulls: Counter<'location' | 'mode'>;
  readonly servedBytes: Counter<'client_region' | 'location' | 'location_region' | 'cross_region' | 'mode'>;

  constructor() {
    collectDefaultMetrics({ register: this.registry, prefix: 'meridian_process_' });
    this.pulls = new Counter({
      name: 'meridian_blob_pulls_total',
      help: 'Blob pulls served, by the location they were served from and how (redirect or proxy).',
      labelNames: ['location', 'mode'],
      registers: [this.registry],
    });
    this.servedBytes = new Counter({
      name: 'meridian_blob_served_bytes_total',
      help: 'Blob bytes this instance served to its clients (client_region, the region of its nearest location), by the location they came from: streamed through it (proxy) or fetched by the client from a presigned URL (redirect, counted when redirected).',
      labelNames: ['client_region', 'location', 'location_region', 'cross_region', 'mode'],
      registers: [this.registry],
    });
  }

  /** Counts `bytes` of a blob served to this instance's clients from `route.location`. */
  served(route: ByteRoute, mode: 'redirect' | 'proxy', bytes: number): void {
    this.pulls.inc({ location: route.location, mode });
    this.servedBytes.inc({ client_region: route.clientRegion, location: route.location, location_region: route.locationRegion, cross_region: crossRegion(route), mode }, bytes);
  }
}
