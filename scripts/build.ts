// `npm run build`: compiles Meridian once into dist/ so that its processes (the API, the workers,
// the `npm start` launcher) run with plain `node` — no TypeScript loader in production, no
// compiling at start-up. The build is a list of steps run in order; extend it by adding a step
// to BUILD_STEPS.
//
//   npm run build                      build now
//   tsx scripts/build.ts --if-needed   build only when an input changed since the last build
//                                      (what `npm start` runs)
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { DIST_DIR, PROJECT_ROOT } from '../devstack/tools.ts';

export interface BuildStep {
  name: string;
  run(): Promise<void>;
}

/** Source folders and files whose changes make dist/ stale. */
const INPUT_EXCLUDES = new Set(['node_modules', 'dist', '.data', '.tools', '.git', 'test', 'bench']);
const INPUT_FILES = ['package-lock.json', 'tsconfig.json', 'tsconfig.build.json'];
const FINGERPRINT = path.join(DIST_DIR, '.build-fingerprint');

export const BUILD_STEPS: BuildStep[] = [
  {
    name: 'compile TypeScript (tsc -p tsconfig.build.json)',
    async run() {
      // From scratch: a module deleted from the sources must not linger in dist/.
      rmSync(DIST_DIR, { recursive: true, force: true });
      await exec(process.execPath, [path.join(PROJECT_ROOT, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', 'tsconfig.build.json']);
    },
  },
  {
    name: 'link the files compiled modules read beside them',
    async run() {
      // registry/hashing.ts loads ../native/sha/build/sha.node and db/migrate.ts reads
      // ./migrations relative to themselves; linked (not copied) so that setup's later rebuild
      // of the native addon and new migrations are seen.
      link(path.join(DIST_DIR, 'native'), path.join(PROJECT_ROOT, 'native'));
      link(path.join(DIST_DIR, 'db', 'migrations'), path.join(PROJECT_ROOT, 'db', 'migrations'));
    },
  },
  {
    name: 'bundle the workflows (dist/workflow-bundle.js, what MERIDIAN_WORKFLOW_BUNDLE names)',
    async run() {
      // Imported here: the Temporal worker package is slow to load, and `--if-needed` usually
      // has nothing to do.
      const { DEFAULT_BUNDLE_PATH, writeWorkflowBundle } = await import('../workers/bundle.ts');
      await writeWorkflowBundle(DEFAULT_BUNDLE_PATH);
    },
  },
];

function link(at: string, target: string): void {
  mkdirSync(path.dirname(at), { recursive: true });
  symlinkSync(path.relative(path.dirname(at), target), at);
}

function exec(command: string, args: string[]): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { cwd: PROJECT_ROOT, stdio: 'inherit' });
    child.once('error', reject);
    child.once('exit', (code, signal) => (code === 0 ? resolve() : reject(new Error(`${path.basename(args[0] ?? command)} failed (${signal ?? `exit ${code}`})`))));
  });
}

function* inputs(dir: string): Generator<string> {
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    if (INPUT_EXCLUDES.has(entry.name)) continue;
    const p = path.join(dir, entry.name);
    if (entry.isDirectory()) yield* inputs(p);
    else if (entry.name.endsWith('.ts')) yield p;
  }
}

/** A hash of every input's path, size and modification time. */
export function sourceFingerprint(): string {
  const files = [...inputs(PROJECT_ROOT), ...INPUT_FILES.map((f) => path.join(PROJECT_ROOT, f)).filter(existsSync)].sort();
  const h = createHash('sha256');
  for (const f of files) {
    const st = statSync(f);
    h.update(`${path.relative(PROJECT_ROOT, f)}\0${st.size}\0${st.mtimeMs}\n`);
  }
  return h.digest('hex');
}

export function buildIsCurrent(): boolean {
  return existsSync(FINGERPRINT) && readFileSync(FINGERPRINT, 'utf8') === sourceFingerprint();
}

/** Runs every step; with ifNeeded, nothing when dist/ was built from the current sources. */
export async function build(opts: { ifNeeded?: boolean; log?: (line: string) => void } = {}): Promise<'built' | 'current'> {
  const log = opts.log ?? ((l: string) => console.log(l));
  const fingerprint = sourceFingerprint();
  if (opts.ifNeeded && existsSync(FINGERPRINT) && readFileSync(FINGERPRINT, 'utf8') === fingerprint) return 'current';
  const started = performance.now();
  for (const step of BUILD_STEPS) {
    log(`build: ${step.name}`);
    await step.run();
  }
  writeFileSync(FINGERPRINT, fingerprint);
  log(`build: dist/ ready in ${((performance.now() - started) / 1000).toFixed(1)} s`);
  return 'built';
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const ifNeeded = process.argv.includes('--if-needed');
  build({ ifNeeded }).catch((e: unknown) => {
    process.stderr.write(`meridian: build failed: ${(e as Error).message}\n`);
    process.exit(1);
  });
}
