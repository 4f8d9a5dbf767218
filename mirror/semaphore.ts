// Politeness towards upstream registries: at most N requests in flight to one upstream host,
// counted across every mirror, worker and process through Redis (a sorted set of leases that
// expire, so a crashed holder frees its slot by itself). Redis holds nothing that matters here:
// when it is unreachable the limit is not enforced and syncs go on.
import { randomUUID } from 'node:crypto';
import type { Redis } from 'ioredis';
import type { Logger } from '../platform/logger.ts';
import type { UpstreamLimiter } from './upstream.ts';

const ACQUIRE = `
local key = KEYS[1]
local now = tonumber(ARGV[1])
local limit = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
if redis.call('ZCARD', key) < limit then
  redis.call('ZADD', key, now + tonumber(ARGV[4]), ARGV[3])
  redis.call('PEXPIRE', key, tonumber(ARGV[4]) * 2)
  return 1
end
return 0`;

/** Waits `ms`; rejects at once if `signal` aborts. The listener goes when the wait ends, so a
 * long wait loop does not pile listeners onto the activity's signal. */
export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    const onAbort = () => {
      clearTimeout(t);
      reject(signal!.reason ?? new Error('aborted'));
    };
    const t = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}

/** Waiters in this process by semaphore key: a release here wakes them at once instead of
 * leaving them to their backoff sleep (slots held by other processes are still polled). */
const localWaiters = new Map<string, Set<() => void>>();

function wakeLocal(key: string): void {
  const waiters = localWaiters.get(key);
  if (!waiters) return;
  for (const w of waiters) w();
}

export class RedisSemaphore implements UpstreamLimiter {
  private warned = false;

  constructor(
    private readonly redis: Redis,
    private readonly key: string,
    private readonly limit: number,
    private readonly logger: Logger,
    private readonly leaseMs = 30_000,
  ) {}

  async acquire(signal?: AbortSignal): Promise<() => void> {
    const token = randomUUID();
    for (let attempt = 0; ; attempt++) {
      signal?.throwIfAborted();
      let got: number;
      try {
        got = (await this.redis.eval(ACQUIRE, 1, this.key, Date.now(), this.limit, token, this.leaseMs)) as number;
      } catch (e) {
        if (!this.warned) {
          this.warned = true;
          this.logger.warn({ err: (e as Error).message, key: this.key }, 'Redis unavailable: upstream concurrency limit not enforced');
        }
        return () => {};
      }
      if (got === 1) break;
      // Back off a little more each time, with jitter, up to half a second — or less, when a
      // slot is released in this process.
      await this.waitForSlot(Math.min(500, 20 * 2 ** Math.min(attempt, 5)) * (0.5 + Math.random()), signal);
    }
    // Long transfers keep their lease.
    const renew = setInterval(() => {
      this.redis.zadd(this.key, 'XX', Date.now() + this.leaseMs, token).catch(() => {});
    }, this.leaseMs / 3);
    renew.unref();
    let released = false;
    return () => {
      if (released) return;
      released = true;
      clearInterval(renew);
      this.redis
        .zrem(this.key, token)
        .catch(() => {})
        .finally(() => wakeLocal(this.key));
    };
  }

  private async waitForSlot(ms: number, signal?: AbortSignal): Promise<void> {
    let waiters = localWaiters.get(this.key);
    if (!waiters) localWaiters.set(this.key, (waiters = new Set()));
    let wake: () => void = () => {};
    const woken = new Promise<void>((resolve) => (wake = resolve));
    waiters.add(wake);
    try {
      await Promise.race([sleep(ms, signal), woken]);
    } finally {
      waiters.delete(wake);
      if (waiters.size === 0) localWaiters.delete(this.key);
    }
  }
}

/** The semaphore of one upstream host. */
export function upstreamSemaphore(redis: Redis, host: string, limit: number, logger: Logger): RedisSemaphore {
  return new RedisSemaphore(redis, `mirror:upstream:${host}`, limit, logger);
}
