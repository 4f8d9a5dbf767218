import { Redis } from 'ioredis';

/** Redis for shared, rebuildable state: location health, placement cache, rate limits. Losing
 * it loses nothing a user stored; so commands fail fast instead of queueing while it is down. */
export function connectRedis(url: string, keyPrefix: string): Redis {
  return new Redis(url, {
    keyPrefix,
    lazyConnect: false,
    enableOfflineQueue: false,
    maxRetriesPerRequest: 1,
    connectTimeout: 2000,
    retryStrategy: (times) => Math.min(times * 200, 2000),
  });
}
