// Child processes for the local stack: started with their output going to a log file, awaited
// until ready, stopped with SIGTERM (then SIGKILL) — data folders are left on disk.
import { type ChildProcess, spawn } from 'node:child_process';
import { createWriteStream, mkdirSync } from 'node:fs';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';

export interface ServiceSpec {
  name: string;
  command: string;
  args: string[];
  env?: Record<string, string | undefined>;
  cwd?: string;
  /** Run as this user (a server that refuses root, such as PostgreSQL). */
  uid?: number;
  gid?: number;
  logFile: string;
  /** What stop() sends first; SIGTERM by default (PostgreSQL's fast shutdown is SIGINT). */
  stopSignal?: NodeJS.Signals;
  /** Resolves true once the service answers. */
  ready: () => Promise<boolean>;
  readyTimeoutMs?: number;
}

export class ManagedProcess {
  private child: ChildProcess | undefined;
  private exited: Promise<number | null> = Promise.resolve(null);
  private stopping = false;
  private exitListeners: ((code: number | null) => void)[] = [];

  constructor(readonly spec: ServiceSpec) {}

  get pid(): number | undefined {
    return this.child?.pid;
  }

  get running(): boolean {
    return this.child !== undefined && this.child.exitCode === null && this.child.signalCode === null;
  }

  async start(): Promise<void> {
    const { spec } = this;
    mkdirSync(path.dirname(spec.logFile), { recursive: true });
    const log = createWriteStream(spec.logFile, { flags: 'a' });
    await new Promise((r) => log.once('open', r));
    this.stopping = false;
    const child = spawn(spec.command, spec.args, {
      cwd: spec.cwd,
      ...(spec.uid !== undefined ? { uid: spec.uid, gid: spec.gid } : {}),
      env: { ...process.env, ...spec.env },
      stdio: ['ignore', log, log],
      detached: false,
    });
    this.child = child;
    this.exited = new Promise((resolve) =>
      child.once('exit', (code) => {
        resolve(code);
        if (!this.stopping) for (const l of this.exitListeners) l(code);
      }),
    );
    const spawnError = new Promise<never>((_, reject) => child.once('error', reject));
    const deadline = Date.now() + (spec.readyTimeoutMs ?? 60_000);
    let exitCode: number | null | undefined;
    void this.exited.then((c) => (exitCode = c));
    for (;;) {
      if (exitCode !== undefined) {
        throw new Error(`${spec.name} exited with code ${exitCode} during start-up; see ${spec.logFile}`);
      }
      const ok = await Promise.race([spec.ready().catch(() => false), spawnError]);
      if (ok) return;
      if (Date.now() > deadline) {
        await this.stop();
        throw new Error(`${spec.name} did not become ready in time; see ${spec.logFile}`);
      }
      await sleep(150);
    }
  }

  /** SIGTERM, then SIGKILL after graceMs. */
  async stop(graceMs = 10_000): Promise<void> {
    const child = this.child;
    if (!child || !this.running) return;
    this.stopping = true;
    child.kill(this.spec.stopSignal ?? 'SIGTERM');
    const timer = setTimeout(() => child.kill('SIGKILL'), graceMs);
    await this.exited;
    clearTimeout(timer);
  }

  /** Simulates a crash: SIGKILL, no chance to clean up. */
  async kill(): Promise<void> {
    if (!this.child || !this.running) return;
    this.stopping = true;
    this.child.kill('SIGKILL');
    await this.exited;
  }

  /** Called whenever the process exits without stop() or kill() having been asked for. */
  onUnexpectedExit(cb: (code: number | null) => void): void {
    this.exitListeners.push(cb);
  }

  async restart(): Promise<void> {
    await this.stop();
    await this.start();
  }
}
