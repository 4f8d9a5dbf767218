// Structured logs. Secrets are redacted by key name wherever they appear in a logged object;
// code must still never pass a secret in a message string.
import pino, { type Logger } from 'pino';

export type { Logger };

export const REDACT_PATHS = [
  'password',
  '*.password',
  'secret',
  '*.secret',
  'token',
  '*.token',
  'authorization',
  '*.authorization',
  'headers.authorization',
  'req.headers.authorization',
  'secretAccessKey',
  '*.secretAccessKey',
  'accessKeyId',
  '*.accessKeyId',
  'external_registry_password',
  '*.external_registry_password',
];

/**
 * A failed database query as it may be logged: the statement, never its parameters. Drizzle's
 * DrizzleQueryError puts the parameters (password hashes, sealed secrets, proxy URLs…) in its
 * message, stack and `params`; PostgreSQL's `detail` can quote a row's values (a unique key), and
 * its data exceptions the value refused.
 * Errors anywhere in the `cause` chain are rewritten; others pass unchanged. Applied to whatever
 * is logged as `err`.
 */
export function withoutQueryParameters(e: unknown, depth = 0): unknown {
  // Code that logs `err: e.message` hands over the message alone.
  if (typeof e === 'string') return e.startsWith('Failed query:') ? e.replace(/\nparams:[\s\S]*$/, '') : e;
  if (!(e instanceof Error) || depth > 8) return e;
  const isDrizzle = 'params' in e && typeof (e as { query?: unknown }).query === 'string' && e.message.startsWith('Failed query:');
  const hasDetail = typeof (e as { detail?: unknown }).detail === 'string';
  // PostgreSQL's data exceptions (class 22: invalid input syntax, bad encoding…) quote the value.
  const quotesValue = /^22/.test(String((e as { code?: unknown }).code ?? '')) && typeof (e as { severity?: unknown }).severity === 'string';
  const cause = e.cause === undefined ? undefined : withoutQueryParameters(e.cause, depth + 1);
  if (!isDrizzle && !hasDetail && !quotesValue && cause === e.cause) return e;
  const message = isDrizzle ? `Failed query: ${(e as unknown as { query: string }).query}` : quotesValue ? e.message.replace(/"[\s\S]*"/, '"[withheld]"') : e.message;
  const copy = new Error(message, cause === undefined ? undefined : { cause });
  copy.name = e.name;
  // The stack's first line repeats the message (with the parameters); keep only the frames.
  copy.stack = `${e.name}: ${message}\n${(e.stack ?? '').split('\n').filter((l) => /^\s+at /.test(l)).join('\n')}`;
  for (const k of ['code', 'severity', 'table_name', 'constraint_name', 'column_name', 'routine'] as const) {
    const v = (e as unknown as Record<string, unknown>)[k];
    if (v !== undefined) (copy as unknown as Record<string, unknown>)[k] = v;
  }
  if (hasDetail) (copy as unknown as Record<string, unknown>).detail = '[withheld]';
  return copy;
}

/** A logger writing JSON lines to stdout, or to `destination` (tests read what was logged). */
export function createLogger(name: string, level = process.env.LOG_LEVEL ?? 'info', destination?: pino.DestinationStream): Logger {
  const options: pino.LoggerOptions = {
    name,
    level,
    redact: { paths: REDACT_PATHS, censor: '[redacted]' },
    serializers: {
      err: (e: unknown) => {
        const clean = withoutQueryParameters(e);
        return clean instanceof Error ? pino.stdSerializers.err(clean) : clean;
      },
    },
  };
  return destination ? pino(options, destination) : pino(options);
}
