// scrubLocation: started weekly per location by its `maintenance/scrub/<location>` schedule and by
// `meridian scrub <location>`. Re-reads the location's copies (all, or a sample) page by page on
// the location's own task queue, held to a byte rate, recomputing each digest; a missing or
// corrupt copy is marked damaged (no longer served) and re-copied by the replication workflow.
// The run then waits, for a bounded time, until those copies are available again.
import { continueAsNew, proxyActivities, setCurrentDetails, setHandler, sleep, upsertSearchAttributes, workflowInfo } from '@temporalio/workflow';
import type * as activities from '../activities/scrub.ts';
import { DEFAULT_SCRUB_RATE, type ScrubLocationInput, type ScrubProgress, scrubProgressQuery } from '../contract/scrub.ts';
import { copyTaskQueue, SEARCH_ATTRIBUTES } from '../temporal.config.ts';

type Activities = ReturnType<typeof activities.createScrubActivities>;

const control = proxyActivities<Activities>({
  startToCloseTimeout: '2 minutes',
  retry: { initialInterval: '1 second', maximumInterval: '30 seconds', maximumAttempts: 20 },
});

/** A page of re-reads on the location's queue. One big object can take long at a low rate; the
 * heartbeat notices a dead worker. Retried while the storage is down, for up to 6 hours (the run
 * then fails; the next scheduled one starts over). */
const scrubAt = (location: string) =>
  proxyActivities<Activities>({
    taskQueue: copyTaskQueue(location),
    startToCloseTimeout: '6 hours',
    heartbeatTimeout: '1 minute',
    scheduleToCloseTimeout: '6 hours',
    retry: { initialInterval: '1 second', backoffCoefficient: 2, maximumInterval: '30 seconds' },
  }).scrubPage;

const PAGE = 500;
const PAGE_SECONDS = 60;
const REPAIR_CHECK_EVERY = '10 seconds';
/** About an hour of waiting for repairs; what is still damaged then is left to replication
 * (its copies retry for a day) and shows in the report. */
const MAX_REPAIR_CHECKS = 360;
const MAX_AWAITING = 300;

export async function scrubLocation(input: ScrubLocationInput): Promise<ScrubProgress> {
  const p: ScrubProgress = input.progress ?? {
    location: input.location,
    sample: input.sample ?? 1,
    rateBytesPerSecond: input.rateBytesPerSecond ?? DEFAULT_SCRUB_RATE,
    // Deterministic in a workflow (seeded by the run): fixes this run's sample.
    seed: Math.floor(Math.random() * 2 ** 31),
    phase: 'scan',
    examined: 0,
    scrubbed: 0,
    bytes: 0,
    missing: 0,
    corrupt: 0,
    repaired: 0,
    unrepairable: [],
    findings: [],
    awaitingRepair: [],
    repairChecks: 0,
    cursor: 0,
  };
  setHandler(scrubProgressQuery, () => p);
  const show = () => {
    upsertSearchAttributes([
      { key: SEARCH_ATTRIBUTES.location, value: p.location },
      { key: SEARCH_ATTRIBUTES.state, value: p.phase },
      { key: SEARCH_ATTRIBUTES.progressDone, value: p.scrubbed },
      { key: SEARCH_ATTRIBUTES.progressFailed, value: p.missing + p.corrupt },
      { key: SEARCH_ATTRIBUTES.bytes, value: p.bytes },
    ]);
    setCurrentDetails(
      `Scrub of ${p.location} (${p.sample < 1 ? `sample ${p.sample}` : 'every copy'}, ${p.rateBytesPerSecond ? `${p.rateBytesPerSecond} bytes/s` : 'no rate limit'}): ${p.phase}; ` +
        `re-read ${p.scrubbed} of ${p.examined} copies (${p.bytes} bytes); missing ${p.missing}, corrupt ${p.corrupt}, repaired ${p.repaired}` +
        (p.awaitingRepair.length ? `; waiting for ${p.awaitingRepair.length} repairs` : '') +
        (p.unrepairable.length ? `; NO HEALTHY REPLICA: ${p.unrepairable.join(', ')}` : ''),
    );
  };
  const maybeContinue = async () => {
    if (workflowInfo().continueAsNewSuggested) await continueAsNew<typeof scrubLocation>({ ...input, progress: p });
  };
  show();

  while (p.phase === 'scan') {
    const page = await scrubAt(p.location)({
      location: p.location,
      afterBlobId: p.cursor,
      limit: PAGE,
      sample: p.sample,
      seed: p.seed,
      rateBytesPerSecond: p.rateBytesPerSecond,
      maxSeconds: PAGE_SECONDS,
    });
    p.examined += page.examined;
    p.scrubbed += page.scrubbed;
    p.bytes += page.bytes;
    p.missing += page.missing;
    p.corrupt += page.corrupt;
    p.findings = [...p.findings, ...page.findings].slice(0, 100);
    for (const d of page.awaitingRepair) if (!p.awaitingRepair.includes(d) && p.awaitingRepair.length < MAX_AWAITING) p.awaitingRepair.push(d);
    p.cursor = page.nextCursor;
    if (page.done) p.phase = 'repair';
    show();
    await maybeContinue();
  }

  while (p.phase === 'repair') {
    if (p.awaitingRepair.length > 0) {
      const r = await control.checkScrubRepairs({ location: p.location, digests: p.awaitingRepair });
      p.repaired += r.repaired.length;
      p.unrepairable = r.unrepairable;
      p.awaitingRepair = r.waiting;
      p.repairChecks++;
    }
    if (p.awaitingRepair.length === 0 || p.repairChecks >= MAX_REPAIR_CHECKS) p.phase = 'done';
    show();
    if (p.phase === 'repair') {
      await sleep(REPAIR_CHECK_EVERY);
      await maybeContinue();
    }
  }
  await control.scrubFinished({ location: p.location });
  return p;
}
