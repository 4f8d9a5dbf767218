// Real clients against Meridian: skopeo (Debian) and crane push, pull and copy a multi-architecture
// image through the registry's token auth, and every byte comes back identical.
import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { toolPath } from '../devstack/tools.ts';
import { createTestUser, startTestApi } from './support/harness.ts';
import { writeMultiArchLayout } from './support/oci-layout.ts';

const run = promisify(execFile);

function blobsOf(layoutDir: string): Map<string, Buffer> {
  const dir = path.join(layoutDir, 'blobs', 'sha256');
  return new Map(readdirSync(dir).map((f) => [`sha256:${f}`, readFileSync(path.join(dir, f))]));
}

describe('real clients: skopeo and crane', () => {
  let api: Awaited<ReturnType<typeof startTestApi>>;
  let host: string;
  let user: Awaited<ReturnType<typeof createTestUser>>;
  const dockerConfig = mkdtempSync(path.join(tmpdir(), 'meridian-docker-config-'));
  const env = () => ({ ...process.env, DOCKER_CONFIG: dockerConfig, HOME: dockerConfig });

  beforeAll(async () => {
    api = await startTestApi();
    host = api.url.replace(/^http:\/\//, '');
    user = await createTestUser('clients');
  });
  afterAll(async () => api?.close());

  it('pushes a two-platform index with skopeo, reads and copies it with crane, pulls it back with skopeo, byte for byte', async () => {
    const source = writeMultiArchLayout(mkdtempSync(path.join(tmpdir(), 'meridian-layout-')), 'v1');
    const creds = `${user.username}:${user.password}`;
    const repo = `${host}/${user.username}/multi`;

    await run('skopeo', ['copy', '--all', '--dest-tls-verify=false', '--dest-creds', creds, `oci:${source.dir}:v1`, `docker://${repo}:v1`], { env: env() });

    const crane = toolPath('crane');
    await run(crane, ['auth', 'login', host, '-u', user.username, '-p', user.password], { env: env() });
    const digest = (await run(crane, ['digest', '--insecure', `${repo}:v1`], { env: env() })).stdout.trim();
    expect(digest).toBe(source.indexDigest);
    const manifest = (await run(crane, ['manifest', '--insecure', `${repo}:v1`], { env: env() })).stdout;
    expect(Buffer.from(manifest)).toEqual(blobsOf(source.dir).get(source.indexDigest));

    await run(crane, ['copy', '--insecure', `${repo}:v1`, `${host}/${user.username}/copied:v2`], { env: env() });
    expect((await run(crane, ['digest', '--insecure', `${host}/${user.username}/copied:v2`], { env: env() })).stdout.trim()).toBe(source.indexDigest);
    expect((await run(crane, ['ls', '--insecure', `${host}/${user.username}/copied`], { env: env() })).stdout.trim()).toBe('v2');

    const pulledByCrane = mkdtempSync(path.join(tmpdir(), 'meridian-crane-pull-'));
    await run(crane, ['pull', '--insecure', '--format', 'oci', `${host}/${user.username}/copied:v2`, pulledByCrane], { env: env() });
    const pulledBySkopeo = mkdtempSync(path.join(tmpdir(), 'meridian-skopeo-pull-'));
    await run('skopeo', ['copy', '--all', '--src-tls-verify=false', '--src-creds', creds, `docker://${host}/${user.username}/copied:v2`, `oci:${pulledBySkopeo}:v2`], { env: env() });

    const original = blobsOf(source.dir);
    for (const pulled of [blobsOf(pulledByCrane), blobsOf(pulledBySkopeo)]) {
      for (const [digest, bytes] of original) {
        expect(pulled.get(digest), digest).toEqual(bytes);
      }
    }
  }, 180_000);
});
