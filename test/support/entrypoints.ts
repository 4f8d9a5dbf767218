// Running a real entry point (api/main.ts, workers/main.ts…) against the test stack, for tests of
// how a process starts or refuses to.
import { spawn } from 'node:child_process';
import { ConfigError } from '../../config.ts';
import { PROJECT_ROOT } from '../../devstack/tools.ts';
import { testEnv } from './harness.ts';

/** Runs `entry` under tsx with the test stack's environment plus `env` (undefined unsets); killed
 * after a minute. Resolves with its exit code and its trimmed standard error. */
export function runEntryPoint(entry: string, args: string[], env: Record<string, string | undefined>): Promise<{ code: number | null; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, ['--import', 'tsx', entry, ...args], {
      cwd: PROJECT_ROOT,
      env: { ...process.env, ...testEnv(), ...env } as NodeJS.ProcessEnv,
    });
    let stderr = '';
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), 60_000);
    child.on('exit', (code) => {
      clearTimeout(timer);
      resolve({ code, stderr: stderr.trim() });
    });
  });
}

/** The ConfigError `load(env)` throws; fails the test if it loads. */
export function configErrorOf(load: (env: Record<string, string>) => unknown, env: Record<string, string>): ConfigError {
  try {
    load(env);
  } catch (e) {
    if (e instanceof ConfigError) return e;
    throw e;
  }
  throw new Error('expected a ConfigError');
}
