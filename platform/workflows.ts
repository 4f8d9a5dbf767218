// Typed starts, handles and schedule actions for the workflows declared in the contract: a
// client names a workflow by its definition, never by a string, and its arguments, result and
// queries are checked against the declared signature.
import type {
  Client,
  ScheduleOptionsStartWorkflowAction,
  WorkflowHandle,
  WorkflowHandleWithFirstExecutionRunId,
  WorkflowStartOptions,
} from '@temporalio/client';
import type { Workflow } from '@temporalio/common';
import type { WorkflowDefinition } from '../contract/index.ts';

/** Start options of a declared workflow; the task queue defaults to the declared one. */
export type StartOptions<F extends Workflow> = Omit<WorkflowStartOptions<F>, 'taskQueue'> & { taskQueue?: string };

export function startWorkflow<F extends Workflow>(
  client: Client,
  def: WorkflowDefinition<F>,
  options: StartOptions<F>,
): Promise<WorkflowHandleWithFirstExecutionRunId<F>> {
  return client.workflow.start<F>(def.name, { ...options, taskQueue: options.taskQueue ?? def.taskQueue } as WorkflowStartOptions<F>);
}

/** A handle to a workflow of the declared type (the latest run of its chain without runId). */
export function workflowHandle<F extends Workflow>(client: Client, _def: WorkflowDefinition<F>, workflowId: string, runId?: string): WorkflowHandle<F> {
  return client.workflow.getHandle<F>(workflowId, runId);
}

/** A Schedule's action starting a declared workflow. */
export function scheduledStart<F extends Workflow>(
  def: WorkflowDefinition<F>,
  action: Omit<ScheduleOptionsStartWorkflowAction<F>, 'type' | 'workflowType' | 'taskQueue'> & { taskQueue?: string },
): ScheduleOptionsStartWorkflowAction<F> {
  return { ...action, type: 'startWorkflow', workflowType: def.name, taskQueue: action.taskQueue ?? def.taskQueue } as ScheduleOptionsStartWorkflowAction<F>;
}
