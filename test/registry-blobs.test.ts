// Blob push and pull through the OCI API against the real S3 regions.
import { randomBytes } from 'node:crypto';
import { and, eq, sql } from 'drizzle-orm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { blobPlacements, blobs, outbox, uploadSessions } from '../db/schema.ts';
import { S3Driver } from '../storage/s3.ts';
import { blobKey, placementKey } from '../storage/paths.ts';
import { DEV_BUCKET } from '../devstack/stack.ts';
import { createTestUser, stackInfo, startTestApi, testDatabase } from './support/harness.ts';
import { OciClient, sha256 } from './support/oci-client.ts';

const MiB = 1024 * 1024;

describe('blob uploads and downloads', () => {
  let api: Awaited<ReturnType<typeof startTestApi>>;
  let client: OciClient;
  let repo: string;
  const database = testDatabase();
  let usEast: S3Driver;

  beforeAll(async () => {
    api = await startTestApi({ MERIDIAN_STORAGE_PREFERENCE: 'us-east,eu-west,ap-south' });
    const user = await createTestUser('blobs');
    client = new OciClient({ baseUrl: api.url, authorization: user.authorization });
    repo = `${user.username}/app`;
    const r = stackInfo().regions.find((x) => x.name === 'us-east')!;
    usEast = new S3Driver({ name: 'us-east', endpoint: `http://127.0.0.1:${r.port}`, region: 'us-east-1', bucket: DEV_BUCKET, ...stackInfo().s3Credentials });
  });
  afterAll(async () => {
    usEast.close();
    await api?.close();
    await database.close();
  });

  /** The bytes us-east's placement of the blob points at (its content address unless the
   * placement records the key of the upload's own object). */
  async function objectBytes(digest: string): Promise<Buffer | null> {
    const [placement] = await database.db
      .select({ objectKey: blobPlacements.objectKey })
      .from(blobPlacements)
      .innerJoin(blobs, eq(blobs.id, blobPlacements.blobId))
      .where(and(eq(blobs.digest, digest), sql`${blobPlacements.locationId} = (select id from storage_locations where name = 'us-east')`));
    if (!placement) return null;
    const key = placementKey('', digest, placement.objectKey);
    if (!(await usEast.stat(key))) return null;
    const r = await usEast.read(key);
    const chunks: Buffer[] = [];
    for await (const c of r.body) chunks.push(c as Buffer);
    return Buffer.concat(chunks);
  }

  it('stores a monolithic upload under its content-addressed key in the preferred location, and serves it back', async () => {
    const bytes = randomBytes(100_000);
    const digest = await client.pushBlob(repo, bytes);
    expect(await objectBytes(digest)).toEqual(bytes);
    const head = await client.fetch(`/v2/${repo}/blobs/${digest}`, { method: 'HEAD' });
    expect(head.status).toBe(200);
    expect(head.headers.get('content-length')).toBe('100000');
    expect(head.headers.get('docker-content-digest')).toBe(digest);
    const got = await client.fetch(`/v2/${repo}/blobs/${digest}`);
    expect(got.status).toBe(307);
    expect(got.headers.get('location')).toMatch(/^http:\/\/127\.0\.0\.1:\d+\/meridian\/sha256\//);
    expect((await client.pullBlob(repo, digest)).body).toEqual(bytes);
  });

  it('assembles chunked PATCH uploads spanning several multipart parts, hashing as it goes', async () => {
    const bytes = randomBytes(37 * MiB + 123);
    const digest = await client.pushBlobChunked(repo, bytes, 7 * MiB);
    const stored = await objectBytes(digest);
    expect(stored?.length).toBe(bytes.length);
    expect(sha256(stored!)).toBe(digest);
  });

  it('reports upload progress, refuses an out-of-order chunk with 416 and the current range', async () => {
    const start = await client.fetch(`/v2/${repo}/blobs/uploads/`, { method: 'POST' });
    expect(start.status).toBe(202);
    expect(start.headers.get('docker-upload-uuid')).toMatch(/^[0-9a-f-]{36}$/);
    const location = start.headers.get('location')!;
    const first = await client.fetch(location, { method: 'PATCH', body: Buffer.alloc(10, 1), headers: { 'Content-Range': '0-9' } });
    expect(first.status).toBe(202);
    expect(first.headers.get('range')).toBe('0-9');
    const status = await client.fetch(location);
    expect(status.status).toBe(204);
    expect(status.headers.get('range')).toBe('0-9');
    const bad = await client.fetch(location, { method: 'PATCH', body: Buffer.alloc(10, 2), headers: { 'Content-Range': '20-29' } });
    expect(bad.status).toBe(416);
    expect(bad.headers.get('range')).toBe('0-9');
    // The upload is intact and can be finished.
    const rest = Buffer.alloc(5, 3);
    const whole = Buffer.concat([Buffer.alloc(10, 1), rest]);
    const put = await client.fetch(`${location}?digest=${sha256(whole)}`, { method: 'PUT', body: rest, headers: { 'Content-Range': '10-14' } });
    expect(put.status).toBe(201);
    expect(await objectBytes(sha256(whole))).toEqual(whole);
  });

  it('accepts a single POST with the digest', async () => {
    const bytes = randomBytes(5000);
    const digest = sha256(bytes);
    const r = await client.fetch(`/v2/${repo}/blobs/uploads/?digest=${digest}`, { method: 'POST', body: bytes, headers: { 'Content-Type': 'application/octet-stream' } });
    expect(r.status).toBe(201);
    expect(r.headers.get('location')).toBe(`/v2/${repo}/blobs/${digest}`);
    expect(await objectBytes(digest)).toEqual(bytes);
  });

  it('answers DIGEST_INVALID on a mismatch and leaves no object behind', async () => {
    for (const size of [1000, 20 * MiB]) {
      const bytes = randomBytes(size);
      const claimed = sha256(randomBytes(10));
      const start = await client.fetch(`/v2/${repo}/blobs/uploads/`, { method: 'POST' });
      const location = start.headers.get('location')!;
      const id = start.headers.get('docker-upload-uuid')!;
      await client.fetch(location, { method: 'PATCH', body: bytes });
      const put = await client.fetch(`${location}?digest=${claimed}`, { method: 'PUT' });
      expect(put.status).toBe(400);
      expect(((await put.json()) as { errors: { code: string }[] }).errors[0]!.code).toBe('DIGEST_INVALID');
      expect(await usEast.stat(blobKey('', claimed))).toBeNull();
      expect(await usEast.list(`_uploads/${id}/`)).toEqual([]);
      expect(await usEast.stat(`_blobs/${id}`)).toBeNull();
      expect(await database.db.select().from(uploadSessions).where(eq(uploadSessions.id, id))).toEqual([]);
    }
  });

  it('stores a blob pushed twice once, with one placement and one replication intent', async () => {
    const bytes = randomBytes(3000);
    const digest = await client.pushBlob(repo, bytes);
    await client.pushBlob(repo, bytes);
    await client.pushBlobChunked(repo, bytes, 1000);
    const [blob] = await database.db.select().from(blobs).where(eq(blobs.digest, digest));
    const placements = await database.db.select().from(blobPlacements).where(eq(blobPlacements.blobId, blob!.id));
    expect(placements).toHaveLength(1);
    const intents = await database.db.select().from(outbox).where(sql`${outbox.payload}->>'workflowId' = ${`replicate/${digest}`}`);
    expect(intents).toHaveLength(1);
  });

  it('mounts a blob from another repository the user can read, and falls back to an upload otherwise', async () => {
    const bytes = randomBytes(2000);
    const digest = await client.pushBlob(repo, bytes);
    const other = `${repo.split('/')[0]}/other`;
    const mounted = await client.fetch(`/v2/${other}/blobs/uploads/?mount=${digest}&from=${repo}`, { method: 'POST' });
    expect(mounted.status).toBe(201);
    expect(mounted.headers.get('location')).toBe(`/v2/${other}/blobs/${digest}`);
    expect((await client.fetch(`/v2/${other}/blobs/${digest}`, { method: 'HEAD' })).status).toBe(200);
    const unknown = sha256(randomBytes(10));
    const fallback = await client.fetch(`/v2/${other}/blobs/uploads/?mount=${unknown}&from=${repo}`, { method: 'POST' });
    expect(fallback.status).toBe(202);
    expect(fallback.headers.get('location')).toMatch(/\/blobs\/uploads\//);
  });

  it('cancels an upload', async () => {
    const start = await client.fetch(`/v2/${repo}/blobs/uploads/`, { method: 'POST' });
    const location = start.headers.get('location')!;
    await client.fetch(location, { method: 'PATCH', body: randomBytes(100) });
    expect((await client.fetch(location, { method: 'DELETE' })).status).toBe(204);
    const after = await client.fetch(location);
    expect(after.status).toBe(404);
    expect(((await after.json()) as { errors: { code: string }[] }).errors[0]!.code).toBe('BLOB_UPLOAD_UNKNOWN');
  });

  it('supports sha512 digests, chunked and monolithic', async () => {
    const { createHash } = await import('node:crypto');
    const bytes = randomBytes(9000);
    const digest = `sha512:${createHash('sha512').update(bytes).digest('hex')}`;
    const start = await client.fetch(`/v2/${repo}/blobs/uploads/`, { method: 'POST' });
    const location = start.headers.get('location')!;
    await client.fetch(location, { method: 'PATCH', body: bytes.subarray(0, 4000) });
    await client.fetch(location, { method: 'PATCH', body: bytes.subarray(4000) });
    const put = await client.fetch(`${location}?digest=${digest}`, { method: 'PUT' });
    expect(put.status).toBe(201);
    expect((await client.pullBlob(repo, digest)).body).toEqual(bytes);
    const other = randomBytes(100);
    const d2 = `sha512:${createHash('sha512').update(other).digest('hex')}`;
    expect((await client.fetch(`/v2/${repo}/blobs/uploads/?digest=${d2}`, { method: 'POST', body: other })).status).toBe(201);
  });

  it('deletes a blob from a repository', async () => {
    const digest = await client.pushBlob(repo, randomBytes(500));
    expect((await client.fetch(`/v2/${repo}/blobs/${digest}`, { method: 'DELETE' })).status).toBe(202);
    expect((await client.fetch(`/v2/${repo}/blobs/${digest}`, { method: 'HEAD' })).status).toBe(404);
  });

  it('refuses malformed input with OCI errors, never a 5xx', async () => {
    const cases: [string, RequestInit, number, string | null][] = [
      [`/v2/${repo}/blobs/sha256:nothex`, {}, 400, 'DIGEST_INVALID'],
      [`/v2/${repo}/blobs/md5:abc`, {}, 400, 'DIGEST_INVALID'],
      [`/v2/${repo}/blobs/${sha256(Buffer.from('none'))}`, {}, 404, 'BLOB_UNKNOWN'],
      ['/v2/a/..%2f..%2fetc/blobs/uploads/', { method: 'POST' }, 400, 'NAME_INVALID'],
      ['/v2/UPPER/case/blobs/uploads/', { method: 'POST' }, 400, 'NAME_INVALID'],
      [`/v2/${repo}/blobs/uploads/not-a-uuid`, {}, 404, 'BLOB_UPLOAD_UNKNOWN'],
      [`/v2/${repo}/blobs/uploads/00000000-0000-0000-0000-000000000000`, { method: 'PATCH', body: 'x' }, 404, 'BLOB_UPLOAD_UNKNOWN'],
      [`/v2/${repo}/blobs/uploads/?digest=sha256:zz`, { method: 'POST', body: 'x' }, 400, 'DIGEST_INVALID'],
      [`/v2/${repo}/manifests/${'x'.repeat(300)}`, {}, 400, 'MANIFEST_INVALID'],
      // Someone else's (possibly absent) repository: refused without saying whether it exists
      // (401 insufficient_scope, as for a token lacking the scope, so clients report the denial).
      ['/v2/nobody-here/app/tags/list', {}, 401, 'DENIED'],
      [`/v2/${repo.split('/')[0]}/never-pushed/tags/list`, {}, 404, 'NAME_UNKNOWN'],
    ];
    for (const [path, init, status, code] of cases) {
      const r = await client.fetch(path, init);
      expect(r.status, `${init.method ?? 'GET'} ${path}`).toBe(status);
      if (code) expect(((await r.json()) as { errors: { code: string }[] }).errors[0]!.code).toBe(code);
    }
    const digest = await client.pushBlob(repo, randomBytes(100));
    const proxy = await startTestApi({ MERIDIAN_BLOB_SERVE_MODE: 'proxy' });
    try {
      const pc = new OciClient({ baseUrl: proxy.url, authorization: client.opts.authorization });
      const bad = await pc.fetch(`/v2/${repo}/blobs/${digest}`, { headers: { Range: 'bytes=500-600' } });
      expect(bad.status).toBe(416);
      expect(bad.headers.get('content-range')).toBe('bytes */100');
    } finally {
      await proxy.close();
    }
  });

  it('streams through the registry with Range support in proxy mode', async () => {
    const bytes = randomBytes(50_000);
    const digest = await client.pushBlob(repo, bytes);
    const proxy = await startTestApi({ MERIDIAN_BLOB_SERVE_MODE: 'proxy' });
    try {
      const pc = new OciClient({ baseUrl: proxy.url, authorization: client.opts.authorization });
      const whole = await pc.fetch(`/v2/${repo}/blobs/${digest}`);
      expect(whole.status).toBe(200);
      expect(Buffer.from(await whole.arrayBuffer())).toEqual(bytes);
      const part = await pc.fetch(`/v2/${repo}/blobs/${digest}`, { headers: { Range: 'bytes=100-199' } });
      expect(part.status).toBe(206);
      expect(part.headers.get('content-range')).toBe('bytes 100-199/50000');
      expect(Buffer.from(await part.arrayBuffer())).toEqual(bytes.subarray(100, 200));
    } finally {
      await proxy.close();
    }
  });

  it('keeps upload sessions consistent: every session has its hash state saved', async () => {
    const start = await client.fetch(`/v2/${repo}/blobs/uploads/`, { method: 'POST' });
    const id = start.headers.get('docker-upload-uuid')!;
    await client.fetch(start.headers.get('location')!, { method: 'PATCH', body: randomBytes(1234) });
    const [row] = await database.db.select().from(uploadSessions).where(and(eq(uploadSessions.id, id)));
    expect(row?.size).toBe(1234);
    expect(row?.tailSize).toBe(1234);
    expect(row?.hashState?.length).toBeGreaterThan(0);
  });
});
