// What replication's domain functions fail with when retrying the same call cannot help or
// must wait: the kind is a key of the contract's REPLICATION_FAILURES, which the activities
// turn into the failure type workflows see.
import { REPLICATION_FAILURES } from '../contract/replication.ts';
import type { Location, LocationRegistry } from '../storage/locations.ts';

export type ReplicationFailureKind = keyof typeof REPLICATION_FAILURES;

export class ReplicationError extends Error {
  constructor(
    readonly kind: ReplicationFailureKind,
    message: string,
    readonly details: unknown[] = [],
  ) {
    super(message);
    this.name = 'ReplicationError';
  }

  /** The failure type workflows see. */
  get type(): string {
    return REPLICATION_FAILURES[this.kind];
  }
}

/** The named location, reloading the table once when it is not known; fails LocationGone. */
export async function requireLocation(locations: LocationRegistry, name: string): Promise<Location> {
  await locations.fresh();
  let loc = locations.byName(name);
  if (!loc) {
    await locations.refresh();
    loc = locations.byName(name);
  }
  if (!loc) throw new ReplicationError('locationGone', `location ${name} no longer exists`);
  return loc;
}
