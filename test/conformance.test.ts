// The OCI distribution-spec conformance program (built from the pinned commit in
// scripts/tools.env) against Meridian with authentication on: every pull, push, content
// discovery, content management and referrers test must pass.
import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { toolPath } from '../devstack/tools.ts';
import { createTestUser, startTestApi } from './support/harness.ts';

const run = promisify(execFile);

describe('OCI distribution-spec conformance', () => {
  let api: Awaited<ReturnType<typeof startTestApi>>;
  beforeAll(async () => {
    api = await startTestApi();
  });
  afterAll(async () => api?.close());

  it('passes every conformance test', async () => {
    const user = await createTestUser('conformance');
    const results = mkdtempSync(path.join(tmpdir(), 'oci-conformance-'));
    const env = {
      ...process.env,
      OCI_REGISTRY: api.url.replace(/^http:\/\//, ''),
      OCI_TLS: 'disabled',
      OCI_REPO1: `${user.username}/repo1`,
      OCI_REPO2: `${user.username}/repo2`,
      OCI_USERNAME: user.username,
      OCI_PASSWORD: user.password,
      OCI_RESULTS_DIR: results,
      OCI_LOG: 'error',
      OCI_API_BLOBS_UPLOAD_CANCEL: 'true',
      OCI_API_MANIFESTS_TAG_PARAM: 'true',
    };
    const out = await run(toolPath('conformance'), [], { env, cwd: results, maxBuffer: 64 * 1024 * 1024 }).catch(
      (e: { stdout?: string; stderr?: string }) => e,
    );
    const summary = readFileSync(path.join(results, 'results.yaml'), 'utf8');
    const failing = summary.split('\n').filter((l) => /:\s*(FAIL|Error)\s*$/.test(l));
    expect(failing, `${(out.stdout ?? '').slice(-4000)}\nresults in ${results}`).toEqual([]);
    // Only the mount without a source repository is skipped (we fall back to an upload, as the
    // spec allows); every other test ran.
    const junit = readFileSync(path.join(results, 'junit.xml'), 'utf8');
    const skipped = [...junit.matchAll(/<testcase name="([^"]+)"[^>]*status="skipped"/g)].map((m) => m[1]!);
    expect(skipped.filter((n) => !n.endsWith('/blob-mount-anonymous'))).toEqual([]);
    for (const area of ['Blob push', 'Blob chunked', 'Blob get', 'Manifest put by tag', 'Manifest get by digest', 'Tag listing', 'Tag delete', 'Manifest delete', 'Blob delete', 'Referrers', 'Blob mount']) {
      expect(summary).toMatch(new RegExp(`\\n\\s*${area}: Pass`));
    }
  }, 600_000);
});
