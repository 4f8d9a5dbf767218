// Integrity scrub activities: thin adapters over replication/scrub.ts. The page of re-reads runs
// on the location's own copy task queue (in its region, next to its storage: the bytes re-read
// never cross a region); the repair check only touches the database and Temporal.
import { Context } from '@temporalio/activity';
import { WorkflowIdConflictPolicy } from '@temporalio/common';
import { replicateBlobWorkflow } from '../contract/replication.ts';
import type { Services } from '../platform/services.ts';
import { startWorkflow } from '../platform/workflows.ts';
import { checkRepairs, type RepairCheck, type ScrubPage, type ScrubPageInput, scrubPage } from '../replication/scrub.ts';
import { WORKFLOW_IDS } from '../temporal.config.ts';
import { toFailure } from './replication.ts';

export function createScrubActivities(s: Pick<Services, 'db' | 'redis' | 'locations' | 'temporal' | 'logger' | 'metrics'>) {
  const deps = { db: s.db, redis: s.redis, locations: s.locations, metrics: s.metrics.replication };
  const log = s.logger.child({ component: 'scrub' });
  return {
    /** Re-reads a page of the location's copies; a retry continues from the last heartbeat. */
    async scrubPage(input: ScrubPageInput): Promise<ScrubPage> {
      const ctx = Context.current();
      try {
        const page = await scrubPage(deps, input, {
          checkpoint: ctx.info.heartbeatDetails as ScrubPage | undefined,
          heartbeat: (p) => ctx.heartbeat(p),
          signal: ctx.cancellationSignal,
        });
        for (const f of page.findings) log.warn({ location: input.location, ...f }, 'scrub found a damaged copy; re-copying it from a healthy replica');
        return page;
      } catch (e) {
        throw toFailure(e);
      }
    },

    /** Where the repairs stand; (re)starts the replication of copies still damaged. */
    async checkScrubRepairs(input: { location: string; digests: string[] }): Promise<RepairCheck> {
      const r = await checkRepairs(deps, input, async (digest) => {
        // Joins a replication already running for the digest; once that one has closed, starts
        // a new one, which plans the damaged copy as missing.
        await startWorkflow(s.temporal.client, replicateBlobWorkflow, {
          workflowId: WORKFLOW_IDS.replicateBlob(digest),
          args: [{ digest }],
          workflowIdConflictPolicy: WorkflowIdConflictPolicy.USE_EXISTING,
        });
      });
      for (const d of r.unrepairable) log.error({ location: input.location, digest: d }, 'damaged copy has no healthy replica to repair it from');
      return r;
    },

    async scrubFinished(input: { location: string }): Promise<void> {
      await s.metrics.replication.scrubFinished(input.location);
    },
  };
}
