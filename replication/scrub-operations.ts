// Operator actions on the integrity scrub, shared by the management API and the CLI: start a
// location's scrub (or join the one running) and read its progress or report.
import { WorkflowIdConflictPolicy } from '@temporalio/common';
import { type ScrubProgress, scrubLocationWorkflow, scrubProgressQuery } from '../contract/scrub.ts';
import { DomainError } from '../platform/errors.ts';
import type { Services } from '../platform/services.ts';
import { type OperationStatus, operationStatus, startWorkflow, workflowHandle } from '../platform/workflows.ts';
import { WORKFLOW_IDS } from '../temporal.config.ts';

export class ScrubError extends DomainError {}

/** Starts a scrub of the location, or joins the one already running there (whatever its options). */
export async function startScrub(
  s: Pick<Services, 'temporal' | 'locations'>,
  input: { location: string; sample?: number; rateBytesPerSecond?: number },
): Promise<{ workflowId: string; runId: string }> {
  await s.locations.refresh();
  if (!s.locations.byName(input.location)) throw new ScrubError('not_found', `no storage location named ${input.location}`);
  const workflowId = WORKFLOW_IDS.scrubLocation(input.location);
  const handle = await startWorkflow(s.temporal.client, scrubLocationWorkflow, {
    workflowId,
    args: [
      {
        location: input.location,
        ...(input.sample !== undefined ? { sample: input.sample } : {}),
        ...(input.rateBytesPerSecond !== undefined ? { rateBytesPerSecond: input.rateBytesPerSecond } : {}),
      },
    ],
    workflowIdConflictPolicy: WorkflowIdConflictPolicy.USE_EXISTING,
    staticSummary: `Integrity scrub of ${input.location}`,
  });
  return { workflowId, runId: handle.firstExecutionRunId };
}

export type ScrubStatus = OperationStatus<ScrubProgress>;

/** The location's latest manual scrub: its progress while running, its report once done. */
export function scrubStatus(s: Pick<Services, 'temporal'>, location: string): Promise<ScrubStatus> {
  return operationStatus(workflowHandle(s.temporal.client, scrubLocationWorkflow, WORKFLOW_IDS.scrubLocation(location)), scrubProgressQuery, {
    notFound: () => new ScrubError('not_found', `no scrub of ${location} has run`),
  });
}
