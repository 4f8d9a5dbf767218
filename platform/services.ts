// The composition root: everything a process (API or worker) talks to, built once from the
// configuration and closed together.
import type { Redis } from 'ioredis';
import type { Config } from '../config.ts';
import { connectDatabase, type DbHandle } from '../db/client.ts';
import type { PlacementDeps } from '../registry/placement.ts';
import { LoginThrottle } from '../auth/login-throttle.ts';
import { SecretBox } from '../security/secretbox.ts';
import { LocationHealth } from '../storage/health.ts';
import { LocationRegistry } from '../storage/locations.ts';
import { createLogger, type Logger } from './logger.ts';
import { ProcessMetrics, ReplicationMetrics } from './metrics.ts';
import { placementsRemoved } from '../replication/placements.ts';
import { connectRedis } from './redis.ts';
import { connectTemporal, type TemporalHandle } from './temporal.ts';

export interface Services {
  config: Config;
  db: DbHandle['db'];
  sql: DbHandle['sql'];
  redis: Redis;
  temporal: TemporalHandle;
  locations: LocationRegistry;
  /** Location circuit breakers, shared by all instances through Redis. */
  health: LocationHealth;
  /** What every placement decision needs (locations, their health, this instance's preference),
   * built once here and handed to uploads, the blob server and replication. */
  placement: PlacementDeps;
  secrets: SecretBox;
  /** Failed-login counts shared through Redis (429 for accounts and addresses over the limit). */
  loginThrottle: LoginThrottle;
  logger: Logger;
  metrics: { process: ProcessMetrics; replication: ReplicationMetrics };
  close(): Promise<void>;
}

export function createServices(config: Config, name: string): Services {
  const logger = createLogger(name, config.logLevel);
  const database = connectDatabase(config.databaseUrl, { applicationName: `meridian-${name}` });
  // Cached placements are invalidated in Redis only (replication/placements.ts): a copy recorded
  // or removed while Redis was unreachable — by any process — could not invalidate them, and the
  // entries outlive an outage (Redis persists them). So every (re)connection invalidates them all
  // before this process reads one: the next pull after an outage sees the database's placements,
  // not those cached before it (a restart also flushes them: a process cannot tell what it
  // missed before it connected).
  const redis = connectRedis(config.redisUrl, config.redisKeyPrefix, { onReady: (r) => void placementsRemoved(r) });
  // A down Redis must not crash the process: every use fails soft and the errors show in health.
  redis.on('error', (e) => logger.debug({ err: e.message }, 'redis error'));
  const temporal = connectTemporal(config);
  const secrets = new SecretBox(config.secretKey, ...config.previousSecretKeys);
  const locations = new LocationRegistry(database.db, config, secrets);
  const health = new LocationHealth(redis);
  return {
    config,
    db: database.db,
    sql: database.sql,
    redis,
    temporal,
    locations,
    health,
    placement: { locations, health, preference: config.storagePreference },
    secrets,
    loginThrottle: new LoginThrottle(
      redis,
      { maxFailuresPerAccount: config.loginMaxFailuresPerAccount, maxFailuresPerAddress: config.loginMaxFailuresPerAddress, windowSeconds: config.loginFailureWindowSeconds },
      (e) => logger.warn({ err: e.message }, 'login throttle unavailable (Redis); logins are not throttled meanwhile'),
    ),
    logger,
    metrics: { process: new ProcessMetrics(), replication: new ReplicationMetrics(redis) },
    async close() {
      locations.close();
      redis.disconnect();
      await Promise.allSettled([temporal.close(), database.close()]);
    },
  };
}
