// Manifests, tags, referrers and listings through the OCI API.
import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestUser, startTestApi } from './support/harness.ts';
import { OciClient, pushRandomImage, sha256 } from './support/oci-client.ts';

const OCI_MANIFEST = 'application/vnd.oci.image.manifest.v1+json';
const OCI_INDEX = 'application/vnd.oci.image.index.v1+json';
const DOCKER_MANIFEST = 'application/vnd.docker.distribution.manifest.v2+json';
const DOCKER_LIST = 'application/vnd.docker.distribution.manifest.list.v2+json';

type ErrorBody = { errors: { code: string }[] };

describe('manifests, tags and referrers', () => {
  let api: Awaited<ReturnType<typeof startTestApi>>;
  let client: OciClient;
  let ns: string;

  beforeAll(async () => {
    api = await startTestApi();
    const user = await createTestUser('manifests');
    ns = user.username;
    client = new OciClient({ baseUrl: api.url, authorization: user.authorization });
  });
  afterAll(async () => api?.close());

  it('stores a manifest byte for byte and serves it by tag and by digest', async () => {
    const repo = `${ns}/img`;
    const { manifestDigest, manifest } = await pushRandomImage(client, repo, 'v1');
    for (const ref of ['v1', manifestDigest]) {
      const r = await client.fetch(`/v2/${repo}/manifests/${ref}`, { headers: { Accept: OCI_MANIFEST } });
      expect(r.status).toBe(200);
      expect(r.headers.get('content-type')).toBe(OCI_MANIFEST);
      expect(r.headers.get('docker-content-digest')).toBe(manifestDigest);
      const bytes = Buffer.from(await r.arrayBuffer());
      expect(bytes.equals(Buffer.from(JSON.stringify(manifest)))).toBe(true);
      const head = await client.fetch(`/v2/${repo}/manifests/${ref}`, { method: 'HEAD' });
      expect(head.status).toBe(200);
      expect(head.headers.get('content-length')).toBe(String(bytes.length));
    }
  });

  it('keeps unusual formatting: the digest is of the exact bytes sent', async () => {
    const repo = `${ns}/fmt`;
    const { manifest } = await pushRandomImage(client, repo, 'base');
    const pretty = Buffer.from(JSON.stringify(manifest, null, 3) + '\n\n');
    const r = await client.fetch(`/v2/${repo}/manifests/pretty`, { method: 'PUT', body: pretty, headers: { 'Content-Type': OCI_MANIFEST } });
    expect(r.status).toBe(201);
    expect(r.headers.get('docker-content-digest')).toBe(sha256(pretty));
    const back = await client.fetch(`/v2/${repo}/manifests/pretty`);
    expect(Buffer.from(await back.arrayBuffer()).equals(pretty)).toBe(true);
  });

  it('refuses a manifest whose blobs the repository does not have', async () => {
    const repo = `${ns}/missing`;
    const { manifest } = await pushRandomImage(client, repo, 'ok');
    const layers = [...(manifest.layers as object[]), { mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', digest: sha256(randomBytes(8)), size: 8 }];
    const r = await client.pushManifest(repo, 'bad', { ...manifest, layers }, OCI_MANIFEST);
    expect(r.response.status).toBe(400);
    expect(((await r.response.json()) as ErrorBody).errors[0]!.code).toBe('MANIFEST_BLOB_UNKNOWN');
    // A blob in another repository does not count either.
    const other = `${ns}/elsewhere`;
    const img = await pushRandomImage(client, other, 'x');
    const r2 = await client.pushManifest(`${ns}/third`, 'y', img.manifest, OCI_MANIFEST);
    expect(r2.response.status).toBe(400);
  });

  it('accepts indexes whose children are present, refuses those with a missing child', async () => {
    const repo = `${ns}/multi`;
    const amd = await pushRandomImage(client, repo, 'amd64');
    const arm = await pushRandomImage(client, repo, 'arm64');
    const index = {
      schemaVersion: 2,
      mediaType: OCI_INDEX,
      manifests: [
        { mediaType: OCI_MANIFEST, digest: amd.manifestDigest, size: JSON.stringify(amd.manifest).length, platform: { architecture: 'amd64', os: 'linux' } },
        { mediaType: OCI_MANIFEST, digest: arm.manifestDigest, size: JSON.stringify(arm.manifest).length, platform: { architecture: 'arm64', os: 'linux' } },
      ],
    };
    const ok = await client.pushManifest(repo, 'latest', index, OCI_INDEX);
    expect(ok.response.status).toBe(201);
    const missing = { ...index, manifests: [...index.manifests, { mediaType: OCI_MANIFEST, digest: sha256(randomBytes(4)), size: 4 }] };
    const bad = await client.pushManifest(repo, 'bad', missing, OCI_INDEX);
    expect(bad.response.status).toBe(400);
    expect(((await bad.response.json()) as ErrorBody).errors[0]!.code).toBe('MANIFEST_BLOB_UNKNOWN');
  });

  it('accepts Docker schema 2 manifests and manifest lists', async () => {
    const repo = `${ns}/docker`;
    const img = await pushRandomImage(client, repo, 'oci');
    const docker = {
      schemaVersion: 2,
      mediaType: DOCKER_MANIFEST,
      config: { ...(img.manifest.config as object), mediaType: 'application/vnd.docker.container.image.v1+json' },
      layers: (img.manifest.layers as { digest: string; size: number }[]).map((l) => ({ ...l, mediaType: 'application/vnd.docker.image.rootfs.diff.tar.gzip' })),
    };
    const m = await client.pushManifest(repo, 'docker', docker, DOCKER_MANIFEST);
    expect(m.response.status).toBe(201);
    const list = { schemaVersion: 2, mediaType: DOCKER_LIST, manifests: [{ mediaType: DOCKER_MANIFEST, digest: m.digest, size: JSON.stringify(docker).length, platform: { architecture: 'amd64', os: 'linux' } }] };
    const l = await client.pushManifest(repo, 'list', list, DOCKER_LIST);
    expect(l.response.status).toBe(201);
    const got = await client.fetch(`/v2/${repo}/manifests/list`);
    expect(got.headers.get('content-type')).toBe(DOCKER_LIST);
  });

  it('refuses invalid manifests clearly', async () => {
    const repo = `${ns}/invalid`;
    const cases: [Buffer, string, number, string][] = [
      [Buffer.from('{not json'), OCI_MANIFEST, 400, 'MANIFEST_INVALID'],
      [Buffer.from('[]'), OCI_MANIFEST, 400, 'MANIFEST_INVALID'],
      [Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: OCI_MANIFEST, layers: [] })), OCI_MANIFEST, 400, 'MANIFEST_INVALID'],
      [Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: OCI_INDEX, manifests: [] })), OCI_MANIFEST, 400, 'MANIFEST_INVALID'],
      [Buffer.from(JSON.stringify({ schemaVersion: 1, name: 'x', tag: 'y', fsLayers: [] })), 'application/vnd.docker.distribution.manifest.v1+prettyjws', 400, 'MANIFEST_INVALID'],
      [Buffer.alloc(4 * 1024 * 1024 + 1, 32), OCI_MANIFEST, 413, 'SIZE_INVALID'],
    ];
    for (const [body, type, status, code] of cases) {
      const r = await client.fetch(`/v2/${repo}/manifests/t`, { method: 'PUT', body, headers: { 'Content-Type': type } });
      expect(r.status).toBe(status);
      expect(((await r.json()) as ErrorBody).errors[0]!.code).toBe(code);
    }
    const empty = await pushRandomImage(client, repo, 'fine');
    const wrongDigest = await client.pushManifest(repo, sha256(Buffer.from('other')), empty.manifest, OCI_MANIFEST);
    expect(wrongDigest.response.status).toBe(400);
    expect(((await wrongDigest.response.json()) as ErrorBody).errors[0]!.code).toBe('DIGEST_INVALID');
  });

  it('deletes tags and manifests', async () => {
    const repo = `${ns}/del`;
    const img = await pushRandomImage(client, repo, 'a');
    await client.pushManifest(repo, 'b', img.manifest, OCI_MANIFEST);
    expect((await client.fetch(`/v2/${repo}/manifests/a`, { method: 'DELETE' })).status).toBe(202);
    expect((await client.fetch(`/v2/${repo}/manifests/a`)).status).toBe(404);
    expect((await client.fetch(`/v2/${repo}/manifests/b`)).status).toBe(200);
    expect((await client.fetch(`/v2/${repo}/manifests/${img.manifestDigest}`, { method: 'DELETE' })).status).toBe(202);
    expect((await client.fetch(`/v2/${repo}/manifests/b`)).status).toBe(404);
    const gone = await client.fetch(`/v2/${repo}/manifests/${img.manifestDigest}`);
    expect(gone.status).toBe(404);
    expect(((await gone.json()) as ErrorBody).errors[0]!.code).toBe('MANIFEST_UNKNOWN');
  });

  it('lists tags in lexical order with n/last pagination and Link headers', async () => {
    const repo = `${ns}/tags`;
    const img = await pushRandomImage(client, repo, 'c');
    for (const t of ['a', 'B', 'b', 'd', 'e']) await client.pushManifest(repo, t, img.manifest, OCI_MANIFEST);
    const all = await client.fetch(`/v2/${repo}/tags/list`);
    expect(await all.json()).toEqual({ name: repo, tags: ['B', 'a', 'b', 'c', 'd', 'e'] });
    const p1 = await client.fetch(`/v2/${repo}/tags/list?n=2`);
    expect(((await p1.json()) as { tags: string[] }).tags).toEqual(['B', 'a']);
    const link = p1.headers.get('link')!;
    expect(link).toBe(`</v2/${repo}/tags/list?n=2&last=a>; rel="next"`);
    const p2 = await client.fetch(link.slice(1, link.indexOf('>')));
    expect(((await p2.json()) as { tags: string[] }).tags).toEqual(['b', 'c']);
    const p4 = await client.fetch(`/v2/${repo}/tags/list?n=2&last=d`);
    expect(((await p4.json()) as { tags: string[] }).tags).toEqual(['e']);
    expect(p4.headers.get('link')).toBeNull();
  });

  it('answers the referrers API, with artifactType filtering and OCI-Subject on push', async () => {
    const repo = `${ns}/refs`;
    const subject = await pushRandomImage(client, repo, 'app');
    const emptyConfig = Buffer.from('{}');
    await client.pushBlob(repo, emptyConfig);
    const subjectDesc = { mediaType: OCI_MANIFEST, digest: subject.manifestDigest, size: JSON.stringify(subject.manifest).length };
    const sig = {
      schemaVersion: 2,
      mediaType: OCI_MANIFEST,
      artifactType: 'application/vnd.example.signature',
      config: { mediaType: 'application/vnd.oci.empty.v1+json', digest: sha256(emptyConfig), size: 2 },
      layers: [],
      subject: subjectDesc,
      annotations: { 'org.example.signer': 'ci' },
    };
    const sbom = { ...sig, artifactType: undefined, config: { mediaType: 'application/vnd.example.sbom', digest: sha256(emptyConfig), size: 2 }, annotations: undefined };
    const s1 = await client.pushManifest(repo, sha256(Buffer.from(JSON.stringify(sig))), sig, OCI_MANIFEST);
    expect(s1.response.status).toBe(201);
    expect(s1.response.headers.get('oci-subject')).toBe(subject.manifestDigest);
    const s2 = await client.pushManifest(repo, sha256(Buffer.from(JSON.stringify(sbom))), sbom, OCI_MANIFEST);
    expect(s2.response.status).toBe(201);

    const all = await client.fetch(`/v2/${repo}/referrers/${subject.manifestDigest}`);
    expect(all.headers.get('content-type')).toBe(OCI_INDEX);
    const body = (await all.json()) as { manifests: { digest: string; artifactType: string; annotations?: Record<string, string> }[] };
    expect(body.manifests.map((m) => [m.digest, m.artifactType])).toEqual([
      [s1.digest, 'application/vnd.example.signature'],
      [s2.digest, 'application/vnd.example.sbom'],
    ]);
    expect(body.manifests[0]!.annotations).toEqual({ 'org.example.signer': 'ci' });
    const filtered = await client.fetch(`/v2/${repo}/referrers/${subject.manifestDigest}?artifactType=application/vnd.example.sbom`);
    expect(filtered.headers.get('oci-filters-applied')).toBe('artifactType');
    expect(((await filtered.json()) as { manifests: { digest: string }[] }).manifests.map((m) => m.digest)).toEqual([s2.digest]);
    // A referrer may be pushed before its subject exists.
    const orphan = { ...sig, subject: { mediaType: OCI_MANIFEST, digest: sha256(randomBytes(5)), size: 5 } };
    expect((await client.pushManifest(repo, sha256(Buffer.from(JSON.stringify(orphan))), orphan, OCI_MANIFEST)).response.status).toBe(201);
    const none = await client.fetch(`/v2/${repo}/referrers/${sha256(randomBytes(3))}`);
    expect(none.status).toBe(200);
    expect(((await none.json()) as { manifests: unknown[] }).manifests).toEqual([]);
  });

  it('sets extra tags given as ?tag= parameters on a push by digest', async () => {
    const repo = `${ns}/tagparam`;
    const img = await pushRandomImage(client, repo, 'first');
    const bytes = Buffer.from(JSON.stringify(img.manifest));
    const r = await client.fetch(`/v2/${repo}/manifests/${sha256(bytes)}?tag=x1&tag=x2`, { method: 'PUT', body: bytes, headers: { 'Content-Type': OCI_MANIFEST } });
    expect(r.status).toBe(201);
    const list = await client.fetch(`/v2/${repo}/tags/list`);
    expect(((await list.json()) as { tags: string[] }).tags).toEqual(['first', 'x1', 'x2']);
  });
});
