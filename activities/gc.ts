// Garbage collection activities: thin adapters over gc/. Purges run on the location's own copy
// task queue (in its region, next to its storage); the rest only touch the database.
import { Context } from '@temporalio/activity';
import type { Services } from '../platform/services.ts';
import { placementsRemoved, placementsRemovedBeforeDeleting } from '../replication/placements.ts';
import { deleteUnplacedBlobPage, deleteUnplacedBlobs, locationsWithPendingDeletions, markGarbage, type PurgeBatch, purgeLocationBatch } from '../gc/blobs.ts';
import { expireUntaggedManifests } from '../gc/manifests.ts';
import { type GcRunRecord, recordGcRun } from '../gc/runs.ts';

/** Longer than a purge batch takes when storage and database answer (see purgeLocation). */
const STUCK_BATCH_MS = 3 * 60_000;

export function createGcActivities(s: Pick<Services, 'db' | 'redis' | 'locations' | 'config' | 'logger'>) {
  const deps = { db: s.db, locations: s.locations };
  const log = s.logger.child({ component: 'gc' });
  return {
    /** MERIDIAN_GC_GRACE of the workers (the workflow cannot read the environment). */
    gcGraceSeconds: async (): Promise<number> => s.config.gcGraceSeconds,

    expireUntaggedManifests: (input: { graceSeconds: number; limit: number; dryRun: boolean; afterId?: number }) => expireUntaggedManifests(s.db, input),

    async markGarbage(input: { graceSeconds: number; afterBlobId: number; limit: number; dryRun: boolean }) {
      const page = await markGarbage(deps, input);
      // Marked copies are no longer served: cached answers naming them must go.
      if (!input.dryRun && page.marked > 0) await placementsRemoved(s.redis);
      return page;
    },

    gcPendingLocations: () => locationsWithPendingDeletions(deps),

    /** Purges the location's marked copies, batch after batch, for up to a few minutes. Beats
     * every few seconds, also while a batch waits on storage or a row lock, so a worker that
     * died is noticed by the short heartbeat timeout rather than after minutes — but not for a
     * batch stuck longer than any healthy one takes (one DeleteObjects request gives up after
     * 2 × 60 s): such a hang used to be kept alive until the 10-minute start-to-close timeout,
     * a stalled sweep; now the heartbeat timeout retries it within half a minute. */
    async purgeLocation(input: { location: string; batch: number; maxBatches: number }): Promise<PurgeBatch> {
      const ctx = Context.current();
      const total: PurgeBatch = { deleted: 0, bytes: 0, remaining: true };
      let batchStarted = Date.now();
      const beat = setInterval(() => Date.now() - batchStarted < STUCK_BATCH_MS && ctx.heartbeat(total), 5000);
      try {
        for (let i = 0; i < input.maxBatches && total.remaining; i++) {
          batchStarted = Date.now();
          ctx.heartbeat(total);
          // Pull paths cache placements: the claimed copies must not be served from the cache
          // once their objects go (invalidated before the deletes, not after the rows: a redirect
          // in between pointed at a deleted object). Without Redis the batch fails before any
          // delete and is retried; its claimed copies stay GC's (gcPurgeable).
          const b = await purgeLocationBatch(deps, { location: input.location, limit: input.batch }, () => placementsRemovedBeforeDeleting(s.redis));
          total.deleted += b.deleted;
          total.bytes += b.bytes;
          total.remaining = b.remaining;
        }
      } finally {
        clearInterval(beat);
      }
      if (total.deleted > 0) log.info({ location: input.location, deleted: total.deleted, bytes: total.bytes }, 'garbage deleted');
      return total;
    },

    /** Runs started before the 'gc-finish-cursor' patch only. */
    deleteUnplacedBlobs: (input: { limit: number }) => deleteUnplacedBlobs(deps, input),

    deleteUnplacedBlobPage: (input: { afterBlobId: number; limit: number }) => deleteUnplacedBlobPage(deps, input),

    /** The finished run, for the API's last run and the metrics. */
    recordGcRun: (run: GcRunRecord) => recordGcRun(s.db, run),
  };
}
