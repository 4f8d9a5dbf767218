// What replication's domain functions fail with when retrying the same call cannot help or
// must wait: the kind is a key of the contract's REPLICATION_FAILURES, which the activities
// turn into the failure type workflows see.
import { REPLICATION_FAILURES, REPLICATION_NON_RETRYABLE } from '../contract/replication.ts';
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

/** Whether a copy that failed with `e` can succeed on a retry, and the reason to report when not
 * (the same split activities/replication.ts toFailure makes for a single copy). */
export function copyFailure(e: unknown): { retryable: true } | { retryable: false; reason: string } {
  if (e instanceof ReplicationError) {
    return REPLICATION_NON_RETRYABLE.includes(e.type) ? { retryable: false, reason: `${e.type}: ${e.message}` } : { retryable: true };
  }
  // A storage 4xx (storage/s3.ts): the same request fails the same way.
  if (e instanceof Error && e.name === 'StorageRequestError') return { retryable: false, reason: `${REPLICATION_FAILURES.storageRefused}: ${e.message}` };
  return { retryable: true };
}
