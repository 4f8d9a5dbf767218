// The Temporal Schedules Meridian owns outright (maintenance), declared once here and brought in
// line by `meridian temporal setup` on every deploy: created when missing, updated when the code
// changed them (an interval, a timeout, the task queue), deleted when a release no longer has
// them. Mirror schedules are per repository and follow their database rows (mirror/schedule.ts);
// setup reconciles those too.
import { type Client, ScheduleAlreadyRunning, ScheduleNotFoundError, ScheduleOverlapPolicy, type ScheduleOptions } from '@temporalio/client';
import { collectGarbageWorkflow } from '../contract/gc.ts';
import { expireUploadsWorkflow } from '../contract/maintenance.ts';
import { sweepOrphansWorkflow } from '../contract/orphans.ts';
import { scrubLocationWorkflow } from '../contract/scrub.ts';
import { scheduledStart } from '../platform/workflows.ts';
import { WORKFLOW_IDS } from '../temporal.config.ts';

/** Every maintenance schedule id starts with this; setup deletes the ones no longer declared. */
export const MAINTENANCE_PREFIX = 'maintenance/';

export type OwnedSchedule = Omit<ScheduleOptions, 'scheduleId' | 'state'> & {
  scheduleId: string;
  /** Shown in the Temporal UI as the schedule's note. */
  note: string;
};

export const MAINTENANCE_SCHEDULES: OwnedSchedule[] = [
  {
    scheduleId: WORKFLOW_IDS.expireUploadsSchedule,
    spec: { intervals: [{ every: '1 hour' }] },
    action: scheduledStart(expireUploadsWorkflow, { args: [{}] }),
    policies: { overlap: ScheduleOverlapPolicy.SKIP, catchupWindow: '1 hour' },
    note: 'Ends upload sessions abandoned for 24 hours and deletes their partial objects.',
  },
  {
    scheduleId: WORKFLOW_IDS.collectGarbageSchedule,
    spec: { intervals: [{ every: '1 day', offset: '3 hours' }] },
    action: scheduledStart(collectGarbageWorkflow, { args: [{}], workflowId: 'gc/scheduled' }),
    policies: { overlap: ScheduleOverlapPolicy.SKIP, catchupWindow: '1 hour' },
    note: 'Deletes untagged manifests and unreferenced blobs older than MERIDIAN_GC_GRACE from every location.',
  },
  {
    scheduleId: WORKFLOW_IDS.sweepOrphansSchedule,
    spec: { intervals: [{ every: '1 day', offset: '4 hours' }] },
    action: scheduledStart(sweepOrphansWorkflow, { args: [{}], workflowId: 'orphans/scheduled' }),
    policies: { overlap: ScheduleOverlapPolicy.SKIP, catchupWindow: '1 hour' },
    note: 'Removes objects and multipart uploads no row accounts for, older than MERIDIAN_GC_GRACE, from every location.',
  },
];

/** Each location's weekly integrity scrub (every copy, at the default rate), spread over the
 * week by location so that they do not all read at once. Setup declares one per location in the
 * database; the API also creates a new location's at once and the location's removal deletes it
 * (upsertScrubSchedule, deleteScrubSchedule); setup catches up with any either missed. */
export const SCRUB_SCHEDULE_PREFIX = `${MAINTENANCE_PREFIX}scrub/`;

export function scrubSchedules(locations: string[]): OwnedSchedule[] {
  return locations.map((location, i) => ({
    scheduleId: WORKFLOW_IDS.scrubSchedule(location),
    spec: { intervals: [{ every: '7 days', offset: `${((i * 29) % 167) + 1} hours` }] },
    action: scheduledStart(scrubLocationWorkflow, { args: [{ location }], workflowId: `scrub/scheduled/${location}` }),
    policies: { overlap: ScheduleOverlapPolicy.SKIP, catchupWindow: '1 hour' },
    note: `Re-reads every copy in ${location}, recomputes its digest, and re-copies missing or corrupt ones from a healthy replica.`,
  }));
}

export type ScheduleOutcome = 'created' | 'updated' | 'deleted';

/** A location's scrub schedule, brought in line when the location is added (before, only the
 * next `meridian temporal setup` created it): the one setup declares, its offset from the
 * location's place among `locations` (every location, in id order, as setup lists them). */
export async function upsertScrubSchedule(client: Client, locations: string[], location: string): Promise<ScheduleOutcome> {
  const s = scrubSchedules(locations).find((x) => x.scheduleId === WORKFLOW_IDS.scrubSchedule(location));
  if (!s) throw new Error(`${location} is not among the locations`);
  return upsertSchedule(client, s);
}

/** A removed location's scrub schedule goes with it (false: there was none). */
export async function deleteScrubSchedule(client: Client, location: string): Promise<boolean> {
  try {
    await client.schedule.getHandle(WORKFLOW_IDS.scrubSchedule(location)).delete();
    return true;
  } catch (e) {
    if (e instanceof ScheduleNotFoundError) return false;
    throw e;
  }
}

/** Creates the schedule, or replaces its spec, action and policies with these. A pause set by an
 * operator (in the UI or with `temporal schedule toggle`) is kept. */
export async function upsertSchedule(client: Client, s: OwnedSchedule): Promise<ScheduleOutcome> {
  const { scheduleId, note, ...rest } = s;
  const handle = client.schedule.getHandle(scheduleId);
  const update = () =>
    handle.update((prev) => ({
      spec: rest.spec,
      action: rest.action,
      policies: rest.policies,
      state: { paused: prev.state.paused, note: prev.state.paused ? prev.state.note : note },
    }));
  try {
    await update();
    return 'updated';
  } catch (e) {
    if (!(e instanceof ScheduleNotFoundError)) throw e;
  }
  try {
    await client.schedule.create({ scheduleId, ...rest, state: { note } });
    return 'created';
  } catch (e) {
    // Created meanwhile by another setup run: update it like the first branch would have.
    if (!(e instanceof ScheduleAlreadyRunning)) throw e;
    await update();
    return 'updated';
  }
}

/** Upserts every declared maintenance schedule and deletes undeclared `maintenance/…` ones,
 * except those under `keepPrefixes` (schedules this setup could not know: the scrub schedules
 * when it has no database). */
export async function reconcileMaintenanceSchedules(
  client: Client,
  declared: OwnedSchedule[] = MAINTENANCE_SCHEDULES,
  keepPrefixes: string[] = [],
): Promise<{ scheduleId: string; outcome: ScheduleOutcome }[]> {
  const results: { scheduleId: string; outcome: ScheduleOutcome }[] = [];
  for (const s of declared) results.push({ scheduleId: s.scheduleId, outcome: await upsertSchedule(client, s) });
  const wanted = new Set(declared.map((s) => s.scheduleId));
  for await (const listed of client.schedule.list()) {
    if (!listed.scheduleId.startsWith(MAINTENANCE_PREFIX) || wanted.has(listed.scheduleId)) continue;
    if (keepPrefixes.some((p) => listed.scheduleId.startsWith(p))) continue;
    try {
      await client.schedule.getHandle(listed.scheduleId).delete();
      results.push({ scheduleId: listed.scheduleId, outcome: 'deleted' });
    } catch (e) {
      if (!(e instanceof ScheduleNotFoundError)) throw e;
    }
  }
  return results;
}
