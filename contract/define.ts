// How a workflow type is declared in the contract: its name (the export of workflows/index.ts
// that implements it), the task queue it runs on, and its signature, which typed starts,
// handles and schedule actions check arguments and results against. Sandbox-safe: workflow code
// imports the contract too.
import type { Workflow } from '@temporalio/common';

export interface WorkflowDefinition<F extends Workflow = Workflow, N extends string = string> {
  /** The workflow type name. */
  readonly name: N;
  /** The task queue its workflow tasks go to. */
  readonly taskQueue: string;
  /** Type only, never set: the signature that starts and handles are typed by. */
  readonly signature?: F;
}

export function defineWorkflow<F extends Workflow>() {
  return <N extends string>(name: N, taskQueue: string): WorkflowDefinition<F, N> => ({ name, taskQueue });
}

/** The signature of a declared workflow. */
export type WorkflowOf<D> = D extends WorkflowDefinition<infer F> ? F : never;
