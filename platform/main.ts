// Shared start-up for the long-running entry points (API, workers): configuration errors and
// taken ports end the process with one line, and SIGINT/SIGTERM shut down cleanly.
import { ConfigError } from '../config.ts';
import { PortInUseError } from '../devstack/ports.ts';

export function fatal(message: string, code = 2): never {
  process.stderr.write(`meridian: ${message}\n`);
  process.exit(code);
}

/** How a running entry point stops: its shutdown, and how long that may take before the process
 * is ended anyway (default 15 s). */
export type Shutdown = (() => Promise<void>) | { stop: () => Promise<void>; forceExitAfterMs: number };

/** Runs main; known start-up errors become a one-line message and a non-zero exit. */
export function runMain(name: string, main: () => Promise<Shutdown>): void {
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
