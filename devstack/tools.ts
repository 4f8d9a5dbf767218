// Where the Go-built servers and clients live: a project-local, git-ignored folder filled by
// scripts/setup.sh. The pins are in scripts/tools.env, read by both.
import { existsSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import path from 'node:path';

/** The folder holding package.json: one level up from this file in the sources, two when it
 * runs compiled from dist/. */
export const PROJECT_ROOT = findProjectRoot(fileURLToPath(new URL('.', import.meta.url)));
/** Where `npm run build` (scripts/build.ts) compiles to. */
export const DIST_DIR = path.join(PROJECT_ROOT, 'dist');
export const TOOLS_BIN = path.join(PROJECT_ROOT, '.tools', 'bin');
export const DATA_DIR = process.env.MERIDIAN_DATA_DIR ?? path.join(PROJECT_ROOT, '.data');

function findProjectRoot(from: string): string {
  for (let dir = from; ; dir = path.dirname(dir)) {
    if (existsSync(path.join(dir, 'package.json'))) return dir;
    if (path.dirname(dir) === dir) throw new Error(`no package.json above ${from}`);
  }
}

export type ToolName = 'temporal' | 'temporal-server' | 'temporal-sql-tool' | 'temporal-ui-server' | 'versitygw' | 'registry' | 'crane' | 'conformance' | 'oras' | 'regctl';

/** The certificates setup.sh generates for the real Temporal server (a CA, server, client). */
export const TLS_DIR = path.join(PROJECT_ROOT, '.tools', 'tls');

export function toolPath(name: ToolName): string {
  const p = path.join(TOOLS_BIN, name);
  if (!existsSync(p)) {
    throw new Error(`${name} is not installed in ${TOOLS_BIN}; run \`npm run setup\``);
  }
  return p;
}

export function toolPins(): Record<string, string> {
  const text = readFileSync(path.join(PROJECT_ROOT, 'scripts', 'tools.env'), 'utf8');
  const pins: Record<string, string> = {};
  for (const line of text.split('\n')) {
    const m = /^([a-z-]+)=(.*)$/.exec(line.trim());
    if (m) pins[m[1]!] = m[2]!;
  }
  return pins;
}
