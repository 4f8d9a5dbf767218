// Operator actions on garbage collection, shared by the management API and the CLI: start a run
// (or a dry run) and read its progress or report.
import { WorkflowIdConflictPolicy } from '@temporalio/common';
import { WorkflowNotFoundError } from '@temporalio/client';
import { type CollectGarbageInput, collectGarbageWorkflow, type GcProgress, gcProgressQuery } from '../contract/gc.ts';
import { DomainError } from '../platform/errors.ts';
import type { Services } from '../platform/services.ts';
import { startWorkflow, workflowHandle } from '../platform/workflows.ts';
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

export interface GcStatus {
  workflowId: string;
  status: string;
  progress: GcProgress | null;
  error?: string;
}

/** The latest manual run (or dry run): its progress while running, its report once done. */
export async function gcStatus(s: Services, dryRun: boolean): Promise<GcStatus> {
  const workflowId = WORKFLOW_IDS.collectGarbage(dryRun);
  const handle = workflowHandle(s.temporal.client, collectGarbageWorkflow, workflowId);
  try {
    const d = await handle.describe();
    if (d.status.name === 'RUNNING') {
      // Null until its first workflow task has run (no query handler yet).
      const progress = await handle.query(gcProgressQuery).catch(() => null);
      return { workflowId, status: 'RUNNING', progress };
    }
    try {
      return { workflowId, status: d.status.name, progress: await handle.result() };
    } catch (e) {
      const cause = (e as { cause?: { message?: string } }).cause;
      return { workflowId, status: d.status.name, progress: null, error: cause?.message ?? (e as Error).message };
    }
  } catch (e) {
    if (e instanceof WorkflowNotFoundError) throw new GcError('not_found', dryRun ? 'no dry run has run' : 'no garbage collection has run');
    throw e;
  }
}
