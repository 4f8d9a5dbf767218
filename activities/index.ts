// The activities factory: every activity Meridian runs, built from injected dependencies so that
// tests can give them their own database, storage and clients.
import type { Services } from '../platform/services.ts';
import { createGcActivities } from './gc.ts';
import { createMaintenanceActivities } from './maintenance.ts';
import { createMirrorActivities } from './mirror.ts';
import { createOrphanActivities } from './orphans.ts';
import { createReplicationActivities } from './replication.ts';
import { createScrubActivities } from './scrub.ts';

export type ActivityDeps = Services;

export function createActivities(deps: ActivityDeps) {
  return {
    ...createReplicationActivities(deps),
    ...createMaintenanceActivities(deps),
    ...createGcActivities(deps),
    ...createScrubActivities(deps),
    ...createOrphanActivities(deps),
    ...createMirrorActivities(deps),
  };
}

export type Activities = ReturnType<typeof createActivities>;
