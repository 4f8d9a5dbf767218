// removeLocation (Quay's util.removelocation, made safe). Marks the location draining (no new
// writes, reads prefer other copies), makes sure every blob it holds has a verified copy
// elsewhere — copying the ones that do not — then deletes its placements in batches, optionally
// its objects, and finally the location. Refuses, listing the blobs at risk, when a blob exists
// nowhere else and cannot be copied; the location then keeps its previous state — as it does when
// the removal is cancelled.
import {
  ApplicationFailure,
  CancellationScope,
  condition,
  continueAsNew,
  isCancellation,
  patched,
  setCurrentDetails,
  setHandler,
  upsertSearchAttributes,
  workflowInfo,
} from '@temporalio/workflow';
import { REPLICATION_FAILURES, type RemoveLocationInput, type RemoveLocationProgress, removeLocationProgressQuery } from '../contract/replication.ts';
import { SEARCH_ATTRIBUTES } from '../temporal.config.ts';
import { control, copyActivity, failureReason, scans } from './replication.ts';


const WINDOW = 8;
const PAGE = 200;
/** Blobs at risk listed in the progress (and carried across continue-as-new); the rest are counted. */
export const MAX_LISTED_AT_RISK = 100;

export async function removeLocation(input: RemoveLocationInput): Promise<RemoveLocationProgress> {
  const p: RemoveLocationProgress = input.progress ?? { phase: 'protecting', scanned: 0, copied: 0, placementsDeleted: 0, atRisk: [], cursor: 0 };
  setHandler(removeLocationProgressQuery, () => p);
  try {
    return await remove(input, p);
  } catch (e) {
    // A cancelled removal gives the location back its previous state (not `draining` forever).
    if (isCancellation(e) && p.previousState !== undefined && p.phase !== 'done' && patched('removal-cancel-restores-location')) {
      await CancellationScope.nonCancellable(() => control.restoreLocationState({ name: input.name, state: p.previousState! }));
      p.phase = 'cancelled';
      upsertSearchAttributes([{ key: SEARCH_ATTRIBUTES.state, value: p.phase }]);
      setCurrentDetails(`Removal of ${input.name} cancelled; the location is ${p.previousState} again.`);
    }
    throw e;
  }
}

async function remove(input: RemoveLocationInput, p: RemoveLocationProgress): Promise<RemoveLocationProgress> {
  const atRiskCount = () => p.atRiskTotal ?? p.atRisk.length;
  const noteAtRisk = (digest: string, reason: string) => {
    p.atRiskTotal = atRiskCount() + 1;
    if (p.atRisk.length < MAX_LISTED_AT_RISK) p.atRisk.push({ digest, reason });
  };
  const show = () => {
    upsertSearchAttributes([
      { key: SEARCH_ATTRIBUTES.location, value: input.name },
      { key: SEARCH_ATTRIBUTES.state, value: p.phase },
      { key: SEARCH_ATTRIBUTES.progressDone, value: p.placementsDeleted },
      { key: SEARCH_ATTRIBUTES.progressFailed, value: atRiskCount() },
    ]);
    setCurrentDetails(
      `Removing location ${input.name}${input.purge ? ' (purging objects)' : ''}: ${p.phase}; scanned ${p.scanned} blobs, ` +
        `copied ${p.copied} elsewhere, deleted ${p.placementsDeleted} placements` +
        (p.atRisk.length ? `; ${atRiskCount()} blobs at risk: ${p.atRisk.slice(0, 5).map((b) => b.digest).join(', ')}` : ''),
    );
  };
  if (p.previousState === undefined) p.previousState = await control.markDraining(input.name);
  show();

  // Phase 1: every blob held here gets a verified copy elsewhere.
  while (p.phase === 'protecting') {
    const page = await scans.unprotectedBlobs({ location: input.name, afterBlobId: p.cursor, limit: PAGE });
    p.scanned += page.scanned;
    p.cursor = page.nextCursor;
    let inFlight = 0;
    for (const item of page.items) {
      await condition(() => inFlight < WINDOW);
      inFlight++;
      void (async () => {
        try {
          if (item.targets.length === 0) throw new Error('no other active location to copy it to');
          await copyActivity(item.targets[0]!, item.size)({ digest: item.digest, size: item.size, target: item.targets[0]! });
          p.copied++;
        } catch (e) {
          noteAtRisk(item.digest, failureReason(e));
        } finally {
          inFlight--;
        }
      })();
    }
    await condition(() => inFlight === 0);
    show();
    if (page.done) {
      if (p.atRisk.length > 0) {
        p.phase = 'refused';
        await control.restoreLocationState({ name: input.name, state: p.previousState });
        show();
        throw ApplicationFailure.nonRetryable(
          `refusing to remove ${input.name}: ${atRiskCount()} blobs exist nowhere else and could not be copied`,
          REPLICATION_FAILURES.blobsAtRisk,
          p.atRisk,
        );
      }
      p.phase = 'deleting';
      p.cursor = 0;
    } else if (workflowInfo().continueAsNewSuggested || workflowInfo().historyLength > 4000) {
      await continueAsNew<typeof removeLocation>({ ...input, progress: p });
    }
  }

  // Phase 2: placements (and objects) go, in batches, each re-checked against copies elsewhere.
  for (;;) {
    for (;;) {
      const batch = await scans.deletePlacementsBatch({ location: input.name, limit: 1000, purge: input.purge ?? false });
      p.placementsDeleted += batch.deleted;
      show();
      if (batch.blocked.length > 0) {
        // A blob landed here after phase 1 (an upload begun before draining): protect it first.
        await continueAsNew<typeof removeLocation>({ ...input, progress: { ...p, phase: 'protecting', cursor: 0 } });
      }
      if (!batch.remaining) break;
      if (workflowInfo().continueAsNewSuggested) await continueAsNew<typeof removeLocation>({ ...input, progress: p });
    }
    // Placements that appeared since the last batch send it back to deleting (earlier releases
    // returned nothing here and threw instead).
    const row = await control.deleteLocationRow(input.name);
    if (!row || row.deleted) break;
  }
  p.phase = 'done';
  show();
  return p;
}
