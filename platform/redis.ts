import { Redis } from 'ioredis';

/** Redis for shared, rebuildable state: location health, placement cache, rate limits. Losing
 * it loses nothing a user stored; so commands fail fast instead of queueing while it is down.
 *
 * `onReady` runs each time the connection becomes ready — the first time and after every
 * reconnection — ahead of the commands issued from then on (ioredis emits `ready` on the next
 * tick after it starts accepting commands, before promise continuations run). It is for state
 * that other processes, or this one, may have failed to update in Redis while it was unreachable:
 * an invalidation nobody could send then is made good before anything reads Redis again. */
export function connectRedis(url: string, keyPrefix: string, opts: { onReady?: (redis: Redis) => void } = {}): Redis {
  const redis = new Redis(url, {
    keyPrefix,
    lazyConnect: false,
    enableOfflineQueue: false,
    maxRetriesPerRequest: 1,
    connectTimeout: 2000,
    retryStrategy: (times) => Math.min(times * 200, 2000),
  });
  const onReady = opts.onReady;
  if (onReady) redis.on('ready', () => onReady(redis));
  return redis;
}
