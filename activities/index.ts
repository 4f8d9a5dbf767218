// The activities factory: every activity Meridian runs, built from injected dependencies so that
// tests can give them their own database, storage and clients.
import type { Services } from '../platform/services.ts';

export type ActivityDeps = Pick<Services, 'config' | 'db' | 'redis' | 'locations' | 'secrets' | 'logger'> & {
  temporal: Services['temporal'];
};

export function createActivities(_deps: ActivityDeps) {
  return {};
}

export type Activities = ReturnType<typeof createActivities>;
