// Location health shared by every instance through Redis: a circuit breaker per location.
// Failures seen on real requests (and by the periodic probe) are counted in a short window; at
// the threshold the breaker opens and reads/writes prefer other locations. Only a successful
// probe closes it. If Redis itself is unreachable every location counts as healthy: requests
// then fall back location by location on their own errors.
import type { Redis } from 'ioredis';

export interface LocationHealthState {
  healthy: boolean;
  reason?: string;
  since?: string;
}

export interface LocationHealthOptions {
  /** Failures within windowSeconds that open the breaker. */
  failureThreshold?: number;
  windowSeconds?: number;
  /** How long this process trusts what it last read from Redis. */
  cacheMs?: number;
}

const OPEN = (name: string) => `location-health:open:${name}`;
const FAILURES = (name: string) => `location-health:failures:${name}`;

export class LocationHealth {
  private cache = new Map<string, { state: LocationHealthState; at: number }>();
  private readonly threshold: number;
  private readonly windowSeconds: number;
  private readonly cacheMs: number;
  /** Called when this process opens or closes a breaker (metrics). */
  onChange: ((name: string, healthy: boolean) => void) | undefined;

  constructor(
    private readonly redis: Redis,
    opts: LocationHealthOptions = {},
  ) {
    this.threshold = opts.failureThreshold ?? 3;
    this.windowSeconds = opts.windowSeconds ?? 30;
    this.cacheMs = opts.cacheMs ?? 1000;
  }

  /** Health of each named location; healthy when unknown or when Redis cannot be read. */
  async states(names: string[]): Promise<Map<string, LocationHealthState>> {
    const now = Date.now();
    const out = new Map<string, LocationHealthState>();
    const stale = names.filter((n) => {
      const c = this.cache.get(n);
      if (c && now - c.at < this.cacheMs) {
        out.set(n, c.state);
        return false;
      }
      return true;
    });
    if (stale.length > 0) {
      let values: (string | null)[];
      try {
        values = await this.redis.mget(...stale.map(OPEN));
      } catch {
        values = stale.map(() => null);
      }
      stale.forEach((n, i) => {
        const raw = values[i];
        const state: LocationHealthState = raw ? { healthy: false, ...(JSON.parse(raw) as { reason: string; since: string }) } : { healthy: true };
        this.cache.set(n, { state, at: now });
        out.set(n, state);
      });
    }
    return out;
  }

  async isHealthy(name: string): Promise<boolean> {
    return (await this.states([name])).get(name)?.healthy ?? true;
  }

  /** A request to the location failed with an outage-like error. */
  async reportFailure(name: string, reason: string): Promise<void> {
    try {
      const key = FAILURES(name);
      const n = await this.redis.incr(key);
      if (n === 1) await this.redis.expire(key, this.windowSeconds);
      if (n >= this.threshold) await this.open(name, reason);
    } catch {
      // Redis down: nothing to share; callers already fell back.
    }
  }

  /** Opens the breaker at once (the probe saw the location fail). */
  async open(name: string, reason: string): Promise<void> {
    try {
      const set = await this.redis.set(OPEN(name), JSON.stringify({ reason: reason.slice(0, 300), since: new Date().toISOString() }), 'NX');
      if (set === 'OK') this.onChange?.(name, false);
    } catch {
      /* see reportFailure */
    }
    this.cache.set(name, { state: { healthy: false, reason }, at: Date.now() });
  }

  /** The probe reached the location: close the breaker and forget past failures. */
  async close(name: string): Promise<void> {
    try {
      const removed = await this.redis.del(OPEN(name), FAILURES(name));
      if (removed > 0) this.onChange?.(name, true);
    } catch {
      /* see reportFailure */
    }
    this.cache.set(name, { state: { healthy: true }, at: Date.now() });
  }
}
