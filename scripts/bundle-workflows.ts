// Bundles the workflow code once, at build time: `npx tsx scripts/bundle-workflows.ts [--out FILE]`
// (default dist/workflow-bundle.js). Production workers load the file (MERIDIAN_WORKFLOW_BUNDLE),
// so every worker of a release runs byte-identical workflow code and none bundles at start-up.
import path from 'node:path';
import { DEFAULT_BUNDLE_PATH, writeWorkflowBundle } from '../workers/bundle.ts';

const i = process.argv.indexOf('--out');
const out = i >= 0 && process.argv[i + 1] ? path.resolve(process.argv[i + 1]!) : DEFAULT_BUNDLE_PATH;
const started = Date.now();
const b = await writeWorkflowBundle(out);
console.log(`workflow bundle ${b.id}: ${path.relative(process.cwd(), b.path)} (${Math.round(b.bytes / 1024)} KiB, ${((Date.now() - started) / 1000).toFixed(1)} s)`);
