// The API as production runs it: compiled by `npm run build` into dist/ and started with plain
// node (`node dist/api/main.js --workers N`), pointed at this test file's stack.
import { type ChildProcess, spawn } from 'node:child_process';
import { readFileSync, readdirSync } from 'node:fs';
import { canConnect, freePort } from '../../devstack/ports.ts';
import { entryCommand } from '../../devstack/entrypoints.ts';
import { build } from '../../scripts/build.ts';
import { ensureTestLocations, testEnv } from './harness.ts';

export interface CompiledApi {
  url: string;
  port: number;
  /** The supervising primary (the process `npm start` runs). */
  primary: ChildProcess;
  output(): string;
  /** Pids of the serving workers (the primary's children). */
  workers(): number[];
  stop(): Promise<number | null>;
}

let built = false;
/** Builds dist/ once per test file (nothing when it is current). */
export async function ensureBuilt(): Promise<void> {
  if (!built) await build({ ifNeeded: true, log: () => {} });
  built = true;
}

export function childPids(pid: number): number[] {
  const out: number[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
      // pid (comm) state ppid …; comm may contain spaces, so parse after the last ')'.
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      if (ppid === pid) out.push(Number(entry));
    } catch {
      // exited meanwhile
    }
  }
  return out;
}

export function commandLine(pid: number): string[] {
  return readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').filter(Boolean);
}

export async function startCompiledApi(opts: { workers: number; env?: Record<string, string | undefined> }): Promise<CompiledApi> {
  await ensureBuilt();
  await ensureTestLocations();
  const port = await freePort();
  const { command, args, cwd } = entryCommand('api/main', ['--workers', String(opts.workers)], { compiled: true });
  const primary = spawn(command, args, {
    cwd,
    // At info level each worker says when it listens.
    env: { ...process.env, ...testEnv({ PORT: String(port), LOG_LEVEL: 'info', ...opts.env }) },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let output = '';
  primary.stdout!.on('data', (d: Buffer) => (output += d.toString()));
  primary.stderr!.on('data', (d: Buffer) => (output += d.toString()));
  const exited = new Promise<number | null>((resolve) => primary.once('exit', (code) => resolve(code)));
  const api: CompiledApi = {
    url: `http://127.0.0.1:${port}`,
    port,
    primary,
    output: () => output,
    workers: () => childPids(primary.pid!),
    async stop() {
      if (primary.exitCode === null && primary.signalCode === null) primary.kill('SIGTERM');
      return exited;
    },
  };
  const deadline = Date.now() + 60_000;
  // Ready when every worker listens.
  const listening = () => output.split('\n').filter((l) => l.includes('"msg":"registry API listening"')).length;
  while (!((await canConnect(port)) && listening() >= opts.workers)) {
    if (primary.exitCode !== null) throw new Error(`compiled API exited with ${primary.exitCode}: ${output}`);
    if (Date.now() > deadline) {
      await api.stop();
      throw new Error(`compiled API did not start: ${output}`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  return api;
}
