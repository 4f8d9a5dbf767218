// Typed starts, handles and schedule actions for the workflows declared in the contract: a
// client names a workflow by its definition, never by a string, and its arguments, result and
// queries are checked against the declared signature.
import {
  type Client,
  isGrpcDeadlineError,
  isGrpcServiceError,
  QueryNotRegisteredError,
  type ScheduleOptionsStartWorkflowAction,
  ServiceError,
  type WorkflowHandle,
  type WorkflowHandleWithFirstExecutionRunId,
  WorkflowNotFoundError,
  type WorkflowStartOptions,
} from '@temporalio/client';
import type { QueryDefinition, Workflow } from '@temporalio/common';
import type { WorkflowDefinition } from '../contract/index.ts';
import { DomainError } from './errors.ts';

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

/** What an operator reads about a long-running operation: its progress while it runs, its report
 * (the workflow's result) once it has completed, why it ended otherwise. */
export interface OperationStatus<P> {
  workflowId: string;
  status: string;
  progress: P | null;
  /** Why `progress` is null for a running workflow: the progress query was not answered in time
   * (no worker is polling its task queue, or every one is busy) or the workflow has not run its
   * first task yet. Asking again later may answer. */
  progressUnavailable?: string;
  error?: string;
}

/** How long a progress query may take. A query is answered by a worker, so with none polling the
 * workflow's queue Temporal holds it until the caller gives up: without a deadline of our own a
 * status request waited 30 s (and tied up an API connection) for an answer that never came. */
export const PROGRESS_QUERY_DEADLINE_MS = 2_000;
/** Describe and the result of a closed run are answered by Temporal itself, no worker needed. */
const TEMPORAL_CALL_DEADLINE_MS = 10_000;

/** The status of the latest run of `handle`'s workflow. Never waits on the result of a running
 * workflow (only a closed run's, pinned to the run described); never waits on a worker longer than
 * `queryDeadlineMs`. `notFound` is thrown when no run with that id exists; Temporal not answering
 * in time is `unavailable` (503), not a server fault. */
export async function operationStatus<P>(
  handle: WorkflowHandle,
  progressQuery: QueryDefinition<P, []>,
  opts: { notFound: () => Error; queryDeadlineMs?: number },
): Promise<OperationStatus<P>> {
  const client = handle.client;
  const workflowId = handle.workflowId;
  const within = <T>(ms: number, fn: () => Promise<T>) => client.withDeadline(Date.now() + ms, fn);
  let d: Awaited<ReturnType<WorkflowHandle['describe']>>;
  try {
    d = await within(TEMPORAL_CALL_DEADLINE_MS, () => handle.describe());
  } catch (e) {
    if (e instanceof WorkflowNotFoundError) throw opts.notFound();
    throw temporalUnavailable(e);
  }
  const status = d.status.name;
  if (status === 'RUNNING') {
    try {
      const progress = await within(opts.queryDeadlineMs ?? PROGRESS_QUERY_DEADLINE_MS, () => handle.query(progressQuery));
      return { workflowId, status, progress };
    } catch (e) {
      return { workflowId, status, progress: null, progressUnavailable: progressUnavailableReason(e) };
    }
  }
  // The run just described, and only it: following the chain could land on a run started since,
  // whose result would be waited for.
  const closed = client.getHandle(workflowId, d.runId, { followRuns: false });
  try {
    const report = (await within(TEMPORAL_CALL_DEADLINE_MS, () => closed.result())) as P;
    return { workflowId, status, progress: report ?? null };
  } catch (e) {
    if (e instanceof ServiceError || isGrpcServiceError(e)) throw temporalUnavailable(e);
    const cause = (e as { cause?: { message?: string } }).cause;
    return { workflowId, status, progress: null, error: cause?.message ?? (e as Error).message };
  }
}

function progressUnavailableReason(e: unknown): string {
  if (isGrpcDeadlineError(e)) return `no worker answered the progress query within ${PROGRESS_QUERY_DEADLINE_MS / 1000} s (is a worker polling the workflow's task queue?)`;
  if (e instanceof QueryNotRegisteredError) return 'the workflow has not started running yet';
  return 'the progress query could not be answered';
}

function temporalUnavailable(e: unknown): unknown {
  return isTemporalUnavailable(e) ? new DomainError('unavailable', 'Temporal did not answer in time, retry later') : e;
}

/** Temporal unreachable or not answering within the deadline: a 503 for the caller, not a fault. */
export function isTemporalUnavailable(e: unknown): boolean {
  // The client wraps a failed call's gRPC error in its own ServiceError (as `cause`).
  const grpc = isGrpcServiceError(e) ? e : isGrpcServiceError((e as { cause?: unknown })?.cause) ? (e as { cause: { code: number } }).cause : undefined;
  return isGrpcDeadlineError(e) || grpc?.code === GRPC_UNAVAILABLE;
}

// grpc.status.UNAVAILABLE, without importing @grpc/grpc-js for one number.
const GRPC_UNAVAILABLE = 14;
