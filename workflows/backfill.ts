// backfill (Quay's util.backfillreplication): walks every blob by id and copies each one to the
// locations that should hold it and do not, a bounded number of copies at a time (a sliding
// window). Idempotent: a second run finds nothing missing. Continues as new between pages so
// its history stays small; progress is a query and search attributes.
import {
  condition,
  continueAsNew,
  setCurrentDetails,
  setHandler,
  upsertSearchAttributes,
  workflowInfo,
} from '@temporalio/workflow';
import { type BackfillInput, type BackfillProgress, backfillProgressQuery } from '../contract/replication.ts';
import { SEARCH_ATTRIBUTES } from '../temporal.config.ts';
import { copyActivity, failureReason, scans } from './replication.ts';

const MAX_REPORTED_FAILURES = 50;

export async function backfill(input: BackfillInput): Promise<BackfillProgress> {
  const window = input.window ?? 8;
  const pageSize = input.pageSize ?? 200;
  const p: BackfillProgress = input.progress ?? { scanned: 0, queued: 0, copied: 0, failed: 0, bytes: 0, cursor: 0, done: false, failures: [] };
  setHandler(backfillProgressQuery, () => p);
  const show = (state: string) => {
    upsertSearchAttributes([
      { key: SEARCH_ATTRIBUTES.state, value: state },
      ...(input.location ? [{ key: SEARCH_ATTRIBUTES.location, value: input.location }] : []),
      { key: SEARCH_ATTRIBUTES.progressDone, value: p.copied },
      { key: SEARCH_ATTRIBUTES.progressFailed, value: p.failed },
      { key: SEARCH_ATTRIBUTES.bytes, value: p.bytes },
    ]);
    setCurrentDetails(
      `Backfill${input.location ? ` to ${input.location}` : ''}: scanned ${p.scanned} blobs, queued ${p.queued} copies, ` +
        `copied ${p.copied} (${p.bytes} bytes), failed ${p.failed}. State: ${state}.`,
    );
  };
  show('running');

  let inFlight = 0;
  const copy = async (item: { digest: string; size: number }, target: string) => {
    inFlight++;
    try {
      const r = await copyActivity(target, item.size)({ digest: item.digest, size: item.size, target });
      if (!r.alreadyPresent) {
        p.copied++;
        p.bytes += r.bytesTransferred;
      }
    } catch (e) {
      p.failed++;
      if (p.failures.length < MAX_REPORTED_FAILURES) p.failures.push({ digest: item.digest, target, reason: failureReason(e) });
    } finally {
      inFlight--;
    }
  };

  for (;;) {
    const page = await scans.scanForBackfill({ afterBlobId: p.cursor, limit: pageSize, location: input.location });
    p.scanned += page.scanned;
    p.cursor = page.nextCursor;
    for (const item of page.items) {
      for (const target of item.missing) {
        await condition(() => inFlight < window);
        p.queued++;
        void copy(item, target);
      }
    }
    show('running');
    if (page.done) break;
    if (workflowInfo().continueAsNewSuggested || workflowInfo().historyLength > 4000) {
      await condition(() => inFlight === 0);
      await continueAsNew<typeof backfill>({ ...input, progress: p });
    }
  }
  await condition(() => inFlight === 0);
  p.done = true;
  show(p.failed > 0 ? 'incomplete' : 'complete');
  return p;
}
