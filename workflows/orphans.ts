// sweepOrphans: started daily by the `maintenance/sweep-orphans` schedule and by `meridian orphans
// [--dry-run]`. Every location lists its own bucket on its own task queue (in parallel; a location
// that is down is retried until it is back and delays only its own sweep) and removes what no row
// accounts for and is older than the grace period (gc/orphans.ts). A few activities per location:
// no continue-as-new needed; each location's listing position lives in its heartbeats.
import { proxyActivities, setCurrentDetails, setHandler, upsertSearchAttributes } from '@temporalio/workflow';
import type * as activities from '../activities/orphans.ts';
import { orphansProgressQuery, type SweepOrphansInput, type SweepOrphansProgress } from '../contract/orphans.ts';
import { copyTaskQueue, SEARCH_ATTRIBUTES } from '../temporal.config.ts';

type Activities = ReturnType<typeof activities.createOrphanActivities>;

const control = proxyActivities<Activities>({ startToCloseTimeout: '1 minute', retry: { maximumAttempts: 10 } });

/** A location's sweep: heartbeats carry its listing position, so a retry continues; retried every
 * ≤ 30 s while its storage is down, for up to 6 hours (the run then reports it failed). */
const sweepAt = (location: string) =>
  proxyActivities<Activities>({
    taskQueue: copyTaskQueue(location),
    startToCloseTimeout: '6 hours',
    heartbeatTimeout: '1 minute',
    scheduleToCloseTimeout: '6 hours',
    retry: { initialInterval: '1 second', backoffCoefficient: 2, maximumInterval: '30 seconds' },
  }).sweepLocationOrphans;

export async function sweepOrphans(input: SweepOrphansInput = {}): Promise<SweepOrphansProgress> {
  const p: SweepOrphansProgress = {
    dryRun: input.dryRun ?? false,
    graceSeconds: input.graceSeconds ?? -1,
    done: false,
    locations: [],
    pendingLocations: [],
    failedLocations: [],
  };
  setHandler(orphansProgressQuery, () => p);
  if (p.graceSeconds < 0) p.graceSeconds = await control.orphanGraceSeconds();
  const show = () => {
    const objects = p.locations.reduce((a, l) => a + l.orphanObjects, 0);
    const multipart = p.locations.reduce((a, l) => a + l.orphanMultipart, 0);
    upsertSearchAttributes([
      { key: SEARCH_ATTRIBUTES.state, value: p.done ? 'done' : 'sweeping' },
      { key: SEARCH_ATTRIBUTES.progressDone, value: objects + multipart },
      { key: SEARCH_ATTRIBUTES.bytes, value: p.locations.reduce((a, l) => a + l.orphanBytes, 0) },
      { key: SEARCH_ATTRIBUTES.pendingLocations, value: p.pendingLocations },
    ]);
    setCurrentDetails(
      `${p.dryRun ? 'Dry run: ' : ''}orphans older than ${p.graceSeconds} s: ${objects} objects, ${multipart} multipart uploads` +
        (p.pendingLocations.length ? `; sweeping ${p.pendingLocations.join(', ')}` : '') +
        (p.failedLocations.length ? `; failed: ${p.failedLocations.map((f) => f.location).join(', ')}` : ''),
    );
  };
  p.pendingLocations = await control.orphanSweepLocations();
  show();
  await Promise.all(
    [...p.pendingLocations].map(async (location) => {
      try {
        p.locations.push(await sweepAt(location)({ location, graceSeconds: p.graceSeconds, dryRun: p.dryRun }));
      } catch (e) {
        p.failedLocations.push({ location, reason: (e as Error).cause instanceof Error ? ((e as Error).cause as Error).message : String(e) });
      } finally {
        p.pendingLocations = p.pendingLocations.filter((l) => l !== location);
        show();
      }
    }),
  );
  p.done = true;
  show();
  return p;
}
