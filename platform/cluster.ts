// Several processes serving one port (node:cluster). The primary only supervises: it forks the
// workers, each of which runs the server; connections are handed to them round-robin. A worker
// that fails while the service starts stops them all with its exit code (it has already printed
// its one-line reason); one that dies later is replaced (in its slot), and a replacement that
// cannot start (PostgreSQL restarting) is tried again, backing off to every 5 s, until it does.
// SIGINT/SIGTERM stop every worker cleanly.
import cluster, { type Worker } from 'node:cluster';
import { runMain } from './main.ts';

/** Set in each worker's environment: its slot, 0 … count-1 (a replacement keeps the slot), so
 * that work one process per instance should do (the health probe) runs in slot 0 only. */
export const CLUSTER_SLOT_ENV = 'MERIDIAN_CLUSTER_SLOT';

/** This process's slot: 0 when it is not a cluster worker. */
export function clusterSlot(): number {
  return cluster.isWorker ? Number(process.env[CLUSTER_SLOT_ENV] ?? 0) : 0;
}

export interface ClusterOptions {
  /** Node/V8 flags for the workers, after the primary's own; a flag the operator already gives
   * (command line or NODE_OPTIONS) is left as they set it. */
  workerFlags?: string[];
}

/** Runs `main` in `count` processes behind one port; with count 1, in this process. */
export function runClustered(name: string, count: number, main: () => Promise<() => Promise<void>>, opts: ClusterOptions = {}): void {
  if (count <= 1 || cluster.isWorker) {
    // A worker whose primary is gone (killed without a chance to stop it) stops too.
    if (cluster.isWorker) process.once('disconnect', () => process.kill(process.pid, 'SIGTERM'));
    runMain(name, main);
    return;
  }
  const given = [...process.execArgv, ...(process.env.NODE_OPTIONS ?? '').split(/\s+/)].map((f) => f.split('=')[0]);
  const extra = (opts.workerFlags ?? []).filter((f) => !given.includes(f.split('=')[0]));
  if (extra.length > 0) cluster.setupPrimary({ execArgv: [...process.execArgv, ...extra] });
  supervise(name, count);
}

function supervise(name: string, count: number): void {
  const listening = new WeakSet<Worker>();
  const slots = new Map<Worker, number>();
  let stopping = false;
  let exitCode = 0;
  /** A worker has listened: the configuration and the port are good. */
  let started = false;
  /** Replacements in a row that died or failed to start, for the back-off. */
  let failures = 0;

  const fork = (slot: number, then?: () => void) => {
    const w = cluster.fork({ [CLUSTER_SLOT_ENV]: String(slot) });
    slots.set(w, slot);
    w.once('listening', () => {
      listening.add(w);
      started = true;
      failures = 0;
      then?.();
    });
  };

  cluster.on('exit', (w, code, signal) => {
    const slot = slots.get(w) ?? 0;
    slots.delete(w);
    if (stopping) {
      if (slots.size === 0) process.exit(exitCode);
      return;
    }
    if (!started) {
      // The service's start-up failed (bad configuration, port taken): the same would happen to
      // a new one.
      stopAll(code ?? 1);
      return;
    }
    failures++;
    const how = listening.has(w) ? 'exited' : 'failed to start';
    process.stderr.write(`${name}: worker ${w.process.pid} ${how} (${signal ?? `code ${code}`}); starting another\n`);
    // Back off when workers keep dying or cannot start (the database is down), so a crash loop
    // does not spin; the others keep serving meanwhile.
    setTimeout(() => !stopping && fork(slot), Math.min(failures * 200, 5000));
  });

  const stopAll = (code: number) => {
    if (stopping) return;
    stopping = true;
    exitCode = code;
    if (slots.size === 0) process.exit(code);
    for (const w of slots.keys()) w.process.kill('SIGTERM');
    const force = setTimeout(() => process.exit(code || 1), 20_000);
    force.unref();
  };
  process.on('SIGINT', () => stopAll(0));
  process.on('SIGTERM', () => stopAll(0));

  // The first worker alone, then the others once it listens: a start-up error (bad
  // configuration, port taken) is then reported once, not by every worker.
  fork(0, () => {
    for (let slot = 1; slot < count && !stopping; slot++) fork(slot);
  });
}
