// Real clients against Meridian: skopeo (Debian) and crane push, pull and copy a multi-architecture
// image through the registry's token auth, and every byte comes back identical; oras and regctl
// push artifacts, attach and list referrers, and delete a tag as a write robot.
import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { and, eq } from 'drizzle-orm';
import { createRobot, namespaceByName } from '../auth/accounts.ts';
import { setPermission } from '../auth/grants.ts';
import { manifests } from '../db/schema.ts';
import { toolPath } from '../devstack/tools.ts';
import { createRepository } from '../registry/repositories.ts';
import { createTestUser, startTestApi } from './support/harness.ts';
import { OciClient, pushRandomImage } from './support/oci-client.ts';
import { writeMultiArchLayout } from './support/oci-layout.ts';

const run = promisify(execFile);

function blobsOf(layoutDir: string): Map<string, Buffer> {
  const dir = path.join(layoutDir, 'blobs', 'sha256');
  return new Map(readdirSync(dir).map((f) => [`sha256:${f}`, readFileSync(path.join(dir, f))]));
}

describe('real clients: skopeo, crane, oras and regctl', () => {
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

  it('oras: pushes an artifact with its type, attaches a signature to it and discovers it through the referrers API', async () => {
    const oras = toolPath('oras');
    const work = mkdtempSync(path.join(tmpdir(), 'meridian-oras-'));
    writeFileSync(path.join(work, 'report.txt'), 'scan: clean\n');
    writeFileSync(path.join(work, 'sig.txt'), 'signed by ci\n');
    const auth = ['--plain-http', '-u', user.username, '-p', user.password, '--registry-config', path.join(work, 'auth.json')];
    const ref = `${host}/${user.username}/artifacts:report`;
    const opts = { env: env(), cwd: work };
    await run(oras, ['push', ...auth, '--artifact-type', 'application/vnd.meridian.report.v1', ref, 'report.txt:text/plain'], opts);
    const manifest = JSON.parse((await run(oras, ['manifest', 'fetch', ...auth, ref], opts)).stdout) as { artifactType: string; layers: { mediaType: string }[] };
    expect(manifest.artifactType).toBe('application/vnd.meridian.report.v1');
    expect(manifest.layers.map((l) => l.mediaType)).toEqual(['text/plain']);

    await run(oras, ['attach', ...auth, '--artifact-type', 'application/vnd.meridian.signature.v1', ref, 'sig.txt:text/plain'], opts);
    const discovered = JSON.parse((await run(oras, ['discover', ...auth, '--format', 'json', ref], opts)).stdout) as { referrers?: { artifactType: string }[]; manifests?: { artifactType: string }[] };
    expect((discovered.referrers ?? discovered.manifests ?? []).map((r) => r.artifactType)).toEqual(['application/vnd.meridian.signature.v1']);

    const out = mkdtempSync(path.join(tmpdir(), 'meridian-oras-pull-'));
    await run(oras, ['pull', ...auth, '-o', out, ref], opts);
    expect(readFileSync(path.join(out, 'report.txt'), 'utf8')).toBe('scan: clean\n');
  }, 180_000);

  it('regctl: puts an artifact with a subject and shows it in the tree; a write robot removes a tag without leaving a dummy manifest', async () => {
    const regctl = toolPath('regctl');
    const s = api.services;
    const repoName = `${user.username}/regctl`;
    await pushRandomImage(new OciClient({ baseUrl: api.url, authorization: user.authorization }), repoName, 'v1');
    await pushRandomImage(new OciClient({ baseUrl: api.url, authorization: user.authorization }), repoName, 'to-remove');
    const asUser = ['--host', `reg=${host},tls=disabled,user=${user.username},pass=${user.password}`];
    const work = mkdtempSync(path.join(tmpdir(), 'meridian-regctl-'));
    writeFileSync(path.join(work, 'sbom.json'), '{"spdxVersion":"SPDX-2.3"}');
    const opts = { env: env(), cwd: work };
    await run(regctl, [...asUser, 'artifact', 'put', '--artifact-type', 'application/spdx+json', '--subject', `${host}/${repoName}:v1`, '-f', 'sbom.json', '-m', 'application/spdx+json'], opts);
    const tree = (await run(regctl, [...asUser, 'artifact', 'tree', '--format', '{{jsonPretty .}}', `${host}/${repoName}:v1`], opts)).stdout;
    const referrers = (JSON.parse(tree) as { referrer?: { manifest?: { artifactType?: string } }[] }).referrer ?? [];
    expect(referrers.map((r) => r.manifest?.artifactType)).toEqual(['application/spdx+json']);

    // A robot with write permission (Quay's rule: write deletes tags).
    const repo = (await createRepository(s.db, { fullName: repoName }, 'return'))!;
    const bot = await s.db.transaction(async (tx) => createRobot(tx, { namespace: (await namespaceByName(tx, user.username))!, shortName: 'regctl' }));
    await setPermission(s.db, repo, bot.name, 'write');
    const countManifests = async () => (await s.db.select({ id: manifests.id }).from(manifests).where(and(eq(manifests.repositoryId, repo.id)))).length;
    const before = await countManifests();
    await run(regctl, ['--host', `reg=${host},tls=disabled,user=${bot.name},pass=${bot.token}`, 'tag', 'rm', `${host}/${repoName}:to-remove`], opts);
    const tags = (await run(regctl, [...asUser, 'tag', 'ls', `${host}/${repoName}`], opts)).stdout.trim().split('\n');
    expect(tags).toContain('v1');
    expect(tags).not.toContain('to-remove');
    // No dummy manifest was pushed over the tag to delete it by digest.
    expect(await countManifests()).toBe(before);
  }, 180_000);

  // A user who may only pull asks to push (a manifest PUT to a repository it reads): each client is
  // a child process (the API keeps serving) and what it prints must tell the user it was refused
  // and why, not a retry loop or a bare status.
  it('crane, oras, regctl and skopeo tell a read-only user that the push was denied', async () => {
    const s = api.services;
    const repoName = `${user.username}/read-only`;
    await pushRandomImage(new OciClient({ baseUrl: api.url, authorization: user.authorization }), repoName, 'v1');
    const repo = (await createRepository(s.db, { fullName: repoName }, 'return'))!;
    const reader = await createTestUser('clients-reader');
    await setPermission(s.db, repo, reader.username, 'read');
    const readerConfig = mkdtempSync(path.join(tmpdir(), 'meridian-reader-config-'));
    const opts = { env: { ...process.env, DOCKER_CONFIG: readerConfig, HOME: readerConfig }, timeout: 60_000 };
    const refused = async (cmd: string, args: string[]) => {
      const r = await run(cmd, args, opts).then(() => ({ code: 0, stderr: '' }), (e: { code?: number; stderr?: string }) => ({ code: e.code, stderr: e.stderr ?? '' }));
      return { code: r.code, said: r.stderr.trim() };
    };
    const src = `${host}/${repoName}:v1`;
    const dst = `${host}/${repoName}:pushed`;
    const crane = toolPath('crane');
    await run(crane, ['auth', 'login', host, '-u', reader.username, '-p', reader.password], opts);
    const said = {
      crane: await refused(crane, ['copy', '--insecure', src, dst]),
      oras: await refused(toolPath('oras'), ['tag', '--plain-http', '-u', reader.username, '-p', reader.password, src, 'pushed']),
      regctl: await refused(toolPath('regctl'), ['--host', `reg=${host},tls=disabled,user=${reader.username},pass=${reader.password}`, 'image', 'copy', src, dst]),
      skopeo: await refused('skopeo', ['copy', '--src-tls-verify=false', '--dest-tls-verify=false', '--src-creds', `${reader.username}:${reader.password}`, '--dest-creds', `${reader.username}:${reader.password}`, `docker://${src}`, `docker://${dst}`]),
    };
    for (const [client, r] of Object.entries(said)) expect(r.code, client).not.toBe(0);
    // crane, oras and skopeo print the registry's own words: what was refused and why.
    for (const client of ['crane', 'oras', 'skopeo'] as const) {
      expect(said[client].said, client).toContain(`push access to repository ${repoName} is denied: ${reader.username} has read permission there, push needs write`);
    }
    // regctl (v0.11.7) prints only its own word for the status, never the registry's message.
    expect(said.regctl.said).toMatch(/failed to put manifest .*:pushed: unauthorized/);
    const pushed = await fetch(`${api.url}/v2/${repoName}/manifests/pushed`, { method: 'HEAD', headers: { authorization: user.authorization } });
    expect(pushed.status).toBe(404);
  }, 180_000);
});
