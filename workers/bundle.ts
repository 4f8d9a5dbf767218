// The workflow bundle: workflows/index.ts and everything it imports, packed once into the code
// the workers' deterministic sandbox runs. `npm run build` writes it (scripts/bundle-workflows.ts)
// and production workers load that file (MERIDIAN_WORKFLOW_BUNDLE), so every worker of a release
// runs byte-identical workflow code and none spends its start-up bundling. Without a bundle (a
// development checkout) a worker bundles workflows/ itself. The replay tests replay the committed
// histories against this same bundle.
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { WorkflowBundleOption } from '@temporalio/worker';
import { ConfigError } from '../config.ts';
import { DIST_DIR } from '../devstack/tools.ts';

// .ts from the sources, .js when this runs compiled from dist/.
export const WORKFLOWS_PATH = fileURLToPath(new URL(`../workflows/index${path.extname(fileURLToPath(import.meta.url))}`, import.meta.url));
/** Workflow interceptor modules every bundle carries: failures thrown by workflow code are redacted. */
export const WORKFLOW_INTERCEPTOR_MODULES = [fileURLToPath(new URL(`../workflows/failure-redaction${path.extname(fileURLToPath(import.meta.url))}`, import.meta.url))];
/** Where `npm run build` puts the bundle. */
export const DEFAULT_BUNDLE_PATH = path.join(DIST_DIR, 'workflow-bundle.js');

export async function bundleWorkflows(): Promise<{ code: string }> {
  // Loaded here, not with this module: `npm start` reads the bundle's id and path from this
  // module and, compiled, never bundles — the worker SDK (native core, webpack) would only sit
  // in its memory for as long as the stack runs.
  const { bundleWorkflowCode } = await import('@temporalio/worker');
  return bundleWorkflowCode({ workflowsPath: WORKFLOWS_PATH, workflowInterceptorModules: WORKFLOW_INTERCEPTOR_MODULES, logger: quietLogger });
}

/** Writes the bundle; returns its id (the first 12 hex digits of its SHA-256), which workers log. */
export async function writeWorkflowBundle(outPath: string = DEFAULT_BUNDLE_PATH): Promise<{ path: string; id: string; bytes: number }> {
  const { code } = await bundleWorkflows();
  mkdirSync(path.dirname(outPath), { recursive: true });
  const tmp = `${outPath}.${process.pid}.tmp`;
  writeFileSync(tmp, code);
  // Atomic: a worker starting meanwhile reads the old bundle or the new one, never half of one.
  renameSync(tmp, outPath);
  return { path: outPath, id: bundleId(code), bytes: Buffer.byteLength(code) };
}

export function bundleId(code: string | Buffer): string {
  return createHash('sha256').update(code).digest('hex').slice(0, 12);
}

/** The id of the bundle file a worker is about to load. */
export function bundleFileId(codePath: string): string {
  return bundleId(readFileSync(codePath));
}

/** What Worker.create gets: an explicit bundle (tests), the configured bundle file, or the
 * workflow sources to bundle at start-up (development). */
export function workflowSource(
  explicit: WorkflowBundleOption | undefined,
  configuredPath: string | undefined,
): { workflowBundle: WorkflowBundleOption } | { workflowsPath: string; workflowModules: string[] } {
  if (explicit) return { workflowBundle: explicit };
  if (configuredPath) {
    if (!existsSync(configuredPath)) throw new ConfigError('MERIDIAN_WORKFLOW_BUNDLE', `${configuredPath} does not exist; run \`npm run build\``);
    return { workflowBundle: { codePath: configuredPath } };
  }
  // The worker bundles these sources itself, with the interceptor modules it is given.
  return { workflowsPath: WORKFLOWS_PATH, workflowModules: WORKFLOW_INTERCEPTOR_MODULES };
}

const noop = () => {};
const quietLogger = { trace: noop, debug: noop, info: noop, warn: noop, error: (m: string) => console.error(m), log: noop };
