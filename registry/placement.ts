// Where a blob is written and where it is read from. Writes go to this instance's first healthy,
// active location in its storage preference; reads come from the first healthy location in that
// order holding a verified copy, then from any other that holds one.
import type { Location, LocationRegistry } from '../storage/locations.ts';
import type { LocationHealth } from '../storage/health.ts';
import { placementKey } from '../storage/paths.ts';
import type { Placement } from './blobs.ts';

export class NoLocationError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'NoLocationError';
  }
}

export interface PlacementDeps {
  locations: LocationRegistry;
  health: LocationHealth;
  preference: string[];
}

/** The location new uploads go to. */
export async function writeLocation(d: PlacementDeps): Promise<Location> {
  const candidates = (await d.locations.fresh()).ordered(d.preference).filter((l) => l.state === 'active');
  if (candidates.length === 0) throw new NoLocationError('no active storage location is configured');
  const health = await d.health.states(candidates.map((l) => l.name));
  // Prefer the preference list's healthy locations; a location outside the list only when all
  // of those are down (it is still better than refusing the push).
  const preferred = candidates.find((l) => d.preference.includes(l.name) && health.get(l.name)?.healthy);
  const anyHealthy = candidates.find((l) => health.get(l.name)?.healthy);
  const chosen = preferred ?? anyHealthy;
  if (!chosen) throw new NoLocationError('every storage location is unavailable');
  return chosen;
}

/**
 * Locations holding the blob, best first: healthy ones in preference order (draining ones after
 * active ones), then unhealthy ones as a last resort (the breaker may be stale).
 */
export async function readCandidates(d: PlacementDeps, holderIds: number[]): Promise<Location[]> {
  const registry = await d.locations.fresh();
  if (holderIds.some((id) => !registry.get(id))) await registry.refresh();
  const holders = registry.ordered(d.preference).filter((l) => holderIds.includes(l.id));
  const health = await d.health.states(holders.map((l) => l.name));
  const rank = (l: Location) => (health.get(l.name)?.healthy ? 0 : 2) + (l.state === 'draining' ? 1 : 0);
  // Array.prototype.sort is stable: the preference order holds within each rank.
  return holders.sort((a, b) => rank(a) - rank(b));
}

/** A copy of a blob to read: the location and the object key there. */
export interface BlobCopy {
  location: Location;
  key: string;
}

/** The blob's copies to read from, best first (as readCandidates), each with its object key. */
export async function readCopies(d: PlacementDeps, digest: string, placements: Placement[]): Promise<BlobCopy[]> {
  const keys = new Map(placements.map((p) => [p.locationId, p.objectKey]));
  const ranked = await readCandidates(d, [...keys.keys()]);
  return ranked.map((location) => ({ location, key: placementKey(location.pathPrefix, digest, keys.get(location.id)) }));
}
