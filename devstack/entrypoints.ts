// How Meridian's own long-running processes are launched (by `npm start`, the benchmarks, the
// region stack): compiled from dist/ with plain node when the launcher itself runs compiled, as
// `npm start` does; from the TypeScript sources through tsx's loader otherwise (development,
// tests), with no tsx wrapper process in between.
import { existsSync } from 'node:fs';
import path from 'node:path';
import { DIST_DIR, PROJECT_ROOT } from './tools.ts';

export type EntryPoint = 'api/main' | 'workers/main' | 'cli/meridian';

/** True when this module was loaded from dist/ (the build), false under tsx or vitest. */
export const RUNNING_COMPILED = import.meta.url.endsWith('.js');

export interface EntryCommand {
  command: string;
  args: string[];
  /** Run it from here: tsx's loader and the packages resolve from the project. */
  cwd: string;
}

/** The command running `entry`; `compiled` defaults to how this process runs. */
export function entryCommand(entry: EntryPoint, args: string[] = [], opts: { compiled?: boolean } = {}): EntryCommand {
  if (opts.compiled ?? RUNNING_COMPILED) {
    const file = path.join(DIST_DIR, `${entry}.js`);
    if (!existsSync(file)) throw new Error(`${path.relative(PROJECT_ROOT, file)} is missing; run \`npm run build\``);
    return { command: process.execPath, args: [file, ...args], cwd: PROJECT_ROOT };
  }
  return { command: process.execPath, args: ['--import', 'tsx', path.join(PROJECT_ROOT, `${entry}.ts`), ...args], cwd: PROJECT_ROOT };
}
