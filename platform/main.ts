// Shared start-up for the long-running entry points (API, workers): configuration errors and
// taken ports end the process with one line, and SIGINT/SIGTERM shut down cleanly.
import { ConfigError } from '../config.ts';
import { isDatabaseUnavailable } from '../db/client.ts';
import { PortInUseError } from '../devstack/ports.ts';

let droppedConnectionRejections = 0;

/**
 * postgres.js 3.4.9 can still reject a promise of its own that nobody holds when a backend dies
 * mid-transaction (seen once in CI under test/database-reconnect.test.ts, beyond what
 * patches/postgres+3.4.9.patch covers): Node would end the process for it although the caller's
 * own query already failed with the same error. A lost database connection is an outage the
 * callers answer (503, retry), not a reason to crash; any other unhandled rejection still ends
 * the process as Node's default does. Returns how many were let through so far.
 */
export function surviveDroppedDatabaseConnections(): () => number {
  if (!process.listeners('unhandledRejection').includes(onUnhandledRejection)) process.on('unhandledRejection', onUnhandledRejection);
  return () => droppedConnectionRejections;
}

function onUnhandledRejection(reason: unknown): void {
  if (isDatabaseUnavailable(reason)) {
    droppedConnectionRejections++;
    process.stderr.write(`meridian: a database connection closed under a query nobody awaited (${(reason as Error).message}); continuing\n`);
    return;
  }
  throw reason;
}

export function fatal(message: string, code = 2): never {
  process.stderr.write(`meridian: ${message}\n`);
  process.exit(code);
}

/** How a running entry point stops: its shutdown, and how long that may take before the process
 * is ended anyway (default 15 s). */
export type Shutdown = (() => Promise<void>) | { stop: () => Promise<void>; forceExitAfterMs: number };

/** Runs main; known start-up errors become a one-line message and a non-zero exit. */
export function runMain(name: string, main: () => Promise<Shutdown>): void {
  surviveDroppedDatabaseConnections();
  main()
    .then((running) => {
      const shutdown = typeof running === 'function' ? running : running.stop;
      const forceExitAfterMs = typeof running === 'function' ? 15_000 : running.forceExitAfterMs;
      let stopping = false;
      const stop = (signal: string) => {
        if (stopping) return;
        stopping = true;
        process.stderr.write(`${name}: ${signal}, shutting down\n`);
        const force = setTimeout(() => process.exit(1), forceExitAfterMs);
        force.unref();
        shutdown().then(
          () => process.exit(0),
          (e: unknown) => fatal(`${name}: shutdown failed: ${(e as Error).message}`, 1),
        );
      };
      process.on('SIGINT', () => stop('SIGINT'));
      process.on('SIGTERM', () => stop('SIGTERM'));
    })
    .catch((e: unknown) => {
      if (e instanceof ConfigError || e instanceof PortInUseError) fatal(e.message);
      const err = e as NodeJS.ErrnoException;
      if (err?.code === 'EADDRINUSE') fatal(`${name}: address already in use (${err.message.replace(/^listen EADDRINUSE: address already in use /, '')}); set PORT to use another`);
      fatal(`${name}: ${err?.stack ?? String(e)}`, 1);
    });
}
