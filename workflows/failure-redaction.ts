// A workflow interceptor module (bundled into the workflow sandbox, workers/bundle.ts): what a
// failed workflow or a rejected update may say in Temporal's history. Workflow code quotes what
// it got — an activity's result, a signal's argument, a cause's message — into the failures it
// throws, and those are recorded for the namespace's retention like an activity's (see
// security/failure-redaction.ts, which redacts activity failures on the worker's side).
// Redaction is pure string work, so it changes nothing a replay compares.
import { ApplicationFailure, type Next, type UpdateInput, type WorkflowExecuteInput, type WorkflowInboundCallsInterceptor, type WorkflowInterceptorsFactory } from '@temporalio/workflow';
import { redactDetails, redactSecrets } from '../security/redact-secrets.ts';

/** `e`'s message, stack, causes and (ApplicationFailure) details redacted, in place: the SDK
 * tells a workflow failure from a task failure by the error's class, which must stay. */
export function redactWorkflowFailure(e: unknown, depth = 0): unknown {
  if (!(e instanceof Error) || depth > 8) return e;
  const writable = (key: string, value: unknown) => Object.defineProperty(e, key, { value, writable: true, configurable: true, enumerable: key === 'details' });
  writable('message', redactSecrets(e.message));
  if (e.stack) writable('stack', redactSecrets(e.stack));
  if (e.cause !== undefined) writable('cause', typeof e.cause === 'string' ? redactSecrets(e.cause) : redactWorkflowFailure(e.cause, depth + 1));
  if (e instanceof ApplicationFailure && e.details) writable('details', redactDetails(e.details));
  return e;
}

class RedactingWorkflowInbound implements WorkflowInboundCallsInterceptor {
  async execute(input: WorkflowExecuteInput, next: Next<WorkflowInboundCallsInterceptor, 'execute'>): Promise<unknown> {
    try {
      return await next(input);
    } catch (e) {
      throw redactWorkflowFailure(e);
    }
  }

  // A validator's rejection is not in the history, but the server passes it to the caller and
  // may log it.
  validateUpdate(input: UpdateInput, next: Next<WorkflowInboundCallsInterceptor, 'validateUpdate'>): void {
    try {
      next(input);
    } catch (e) {
      throw redactWorkflowFailure(e);
    }
  }

  async handleUpdate(input: UpdateInput, next: Next<WorkflowInboundCallsInterceptor, 'handleUpdate'>): Promise<unknown> {
    try {
      return await next(input);
    } catch (e) {
      throw redactWorkflowFailure(e);
    }
  }
}

export const interceptors: WorkflowInterceptorsFactory = () => ({ inbound: [new RedactingWorkflowInbound()] });
