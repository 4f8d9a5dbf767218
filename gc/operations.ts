// Operator actions on garbage collection, shared by the management API and the CLI: start a run
// (or a dry run) and read its progress or report.
import { WorkflowIdConflictPolicy } from '@temporalio/common';
import { type CollectGarbageInput, collectGarbageWorkflow, type GcProgress, gcProgressQuery } from '../contract/gc.ts';
import { DomainError } from '../platform/errors.ts';
import type { Services } from '../platform/services.ts';
import { type OperationStatus, operationStatus, startWorkflow, workflowHandle } from '../platform/workflows.ts';
import { WORKFLOW_IDS } from '../temporal.config.ts';

export class GcError extends DomainError {}

export interface StartedGc {
  workflowId: string;
  runId: string;
}

/** Starts a run, or joins the one already running with the same id. */
export async function startGc(s: Services, input: CollectGarbageInput): Promise<StartedGc> {
  const dryRun = input.dryRun ?? false;
  const workflowId = WORKFLOW_IDS.collectGarbage(dryRun);
  const handle = await startWorkflow(s.temporal.client, collectGarbageWorkflow, {
    workflowId,
    args: [{ dryRun, ...(input.graceSeconds !== undefined ? { graceSeconds: input.graceSeconds } : {}) }],
    workflowIdConflictPolicy: WorkflowIdConflictPolicy.USE_EXISTING,
    staticSummary: dryRun ? 'Garbage collection (dry run: report only)' : 'Garbage collection',
  });
  return { workflowId, runId: handle.firstExecutionRunId };
}

export type GcStatus = OperationStatus<GcProgress>;

/** The latest manual run (or dry run): its progress while running, its report once done. */
export function gcStatus(s: Pick<Services, 'temporal'>, dryRun: boolean): Promise<GcStatus> {
  return operationStatus(workflowHandle(s.temporal.client, collectGarbageWorkflow, WORKFLOW_IDS.collectGarbage(dryRun)), gcProgressQuery, {
    notFound: () => new GcError('not_found', dryRun ? 'no dry run has run' : 'no garbage collection has run'),
  });
}
