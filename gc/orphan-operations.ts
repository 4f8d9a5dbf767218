// Operator actions on the orphan sweep, shared by the management API and the CLI: start a sweep
// (or a dry run) and read its progress or report.
import { WorkflowIdConflictPolicy } from '@temporalio/common';
import { orphansProgressQuery, type SweepOrphansInput, type SweepOrphansProgress, sweepOrphansWorkflow } from '../contract/orphans.ts';
import { DomainError } from '../platform/errors.ts';
import type { Services } from '../platform/services.ts';
import { type OperationStatus, operationStatus, startWorkflow, workflowHandle } from '../platform/workflows.ts';
import { WORKFLOW_IDS } from '../temporal.config.ts';

export class OrphanSweepError extends DomainError {}

/** Starts a sweep, or joins the one already running with the same id. */
export async function startOrphanSweep(s: Pick<Services, 'temporal'>, input: SweepOrphansInput): Promise<{ workflowId: string; runId: string }> {
  const dryRun = input.dryRun ?? false;
  const workflowId = WORKFLOW_IDS.sweepOrphans(dryRun);
  const handle = await startWorkflow(s.temporal.client, sweepOrphansWorkflow, {
    workflowId,
    args: [{ dryRun, ...(input.graceSeconds !== undefined ? { graceSeconds: input.graceSeconds } : {}) }],
    workflowIdConflictPolicy: WorkflowIdConflictPolicy.USE_EXISTING,
    staticSummary: dryRun ? 'Orphan sweep (dry run: report only)' : 'Orphan sweep',
  });
  return { workflowId, runId: handle.firstExecutionRunId };
}

export type OrphanSweepStatus = OperationStatus<SweepOrphansProgress>;

/** The latest manual sweep (or dry run): its progress while running, its report once done. */
export function orphanSweepStatus(s: Pick<Services, 'temporal'>, dryRun: boolean): Promise<OrphanSweepStatus> {
  return operationStatus(workflowHandle(s.temporal.client, sweepOrphansWorkflow, WORKFLOW_IDS.sweepOrphans(dryRun)), orphansProgressQuery, {
    notFound: () => new OrphanSweepError('not_found', dryRun ? 'no orphan dry run has run' : 'no orphan sweep has run'),
  });
}
