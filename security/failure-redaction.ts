// What a failed activity may say in Temporal's history. A failure's message, stack and causes are
// stored there for the namespace's retention, shown by the UI and `temporal workflow show` to
// anyone with access to the namespace, and copied into mirror runs' reasons — none of which is a
// place for secrets. Domain code words its errors carefully (origins rather than URLs, codes
// rather than texts), but an error it did not word — a driver's, a library's, a failed query's —
// may quote a URL with a token in its query or a password in its user part, an Authorization
// header, or the parameters of a SQL statement (password hashes, sealed secrets). Every activity
// failure passes through `redactFailure` (an interceptor on every worker) on its way out.
import { ApplicationFailure } from '@temporalio/common';
import type { ActivityExecuteInput, ActivityInboundCallsInterceptor, Next } from '@temporalio/worker';
import { withoutQueryParameters } from '../platform/logger.ts';
import { redactDetails, redactSecrets } from './redact-secrets.ts';

export { REDACTED, redactSecrets } from './redact-secrets.ts';

/** The error as it may be recorded: messages and stacks of it and its causes redacted (in place
 * for Temporal's own failures, so their type and retry settings stay and their details are
 * redacted too; a copy otherwise). Failures thrown by workflow code: workflows/failure-redaction.ts. */
export function redactFailure(e: unknown, depth = 0): unknown {
  if (typeof e === 'string') return redactSecrets(e);
  if (!(e instanceof Error) || depth > 8) return e;
  // Drizzle and PostgreSQL errors: the statement without its parameters, values withheld.
  const err = withoutQueryParameters(e) as Error;
  const message = redactSecrets(err.message);
  const frames = (err.stack ?? '').split('\n').filter((l) => /^\s+at /.test(l));
  const cause = err.cause === undefined ? undefined : redactFailure(err.cause, depth + 1);
  if (err instanceof ApplicationFailure || err === e) {
    // Ours to change: a fresh error thrown by this activity (or one of Temporal's failures).
    err.message = message;
    err.stack = `${err.name}: ${message}\n${frames.join('\n')}`;
    if (cause !== err.cause) Object.defineProperty(err, 'cause', { value: cause, writable: true, configurable: true, enumerable: false });
    // ApplicationFailure.details are recorded beside the message (JSON payloads).
    if (err instanceof ApplicationFailure && err.details) Object.defineProperty(err, 'details', { value: redactDetails(err.details), writable: true, configurable: true, enumerable: true });
    return err;
  }
  const copy = new Error(message, cause === undefined ? undefined : { cause });
  copy.name = err.name;
  copy.stack = `${err.name}: ${message}\n${frames.join('\n')}`;
  return copy;
}

/** Redacts every failure an activity throws before the SDK records it. */
export class RedactingActivityInbound implements ActivityInboundCallsInterceptor {
  async execute(input: ActivityExecuteInput, next: Next<ActivityInboundCallsInterceptor, 'execute'>): Promise<unknown> {
    try {
      return await next(input);
    } catch (e) {
      throw redactFailure(e);
    }
  }
}

/** For Worker.create: `interceptors: redactingInterceptors`. */
export const redactingInterceptors = { activity: [() => ({ inbound: new RedactingActivityInbound() })] };
