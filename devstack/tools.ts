// Where the Go-built servers and clients live: a project-local, git-ignored folder filled by
// scripts/setup.sh. The pins are in scripts/tools.env, read by both.
import { existsSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import path from 'node:path';

export const PROJECT_ROOT = fileURLToPath(new URL('..', import.meta.url));
export const TOOLS_BIN = path.join(PROJECT_ROOT, '.tools', 'bin');
export const DATA_DIR = process.env.MERIDIAN_DATA_DIR ?? path.join(PROJECT_ROOT, '.data');

export type ToolName = 'temporal' | 'versitygw' | 'registry' | 'crane' | 'conformance';

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
    const m = /^([a-z]+)=(.*)$/.exec(line.trim());
    if (m) pins[m[1]!] = m[2]!;
  }
  return pins;
}
