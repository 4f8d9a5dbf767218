// Chunked uploads write their bytes once: the upload's own object becomes the blob and its
// placement records the key. Through HTTP: where the bytes end up, that pulls and replication
// read them there, dedupe of a second push, verification, and crashes at each step losing nothing.
import { spawn, type ChildProcess } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import http from 'node:http';
import { eq, sql } from 'drizzle-orm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { blobPlacements, blobs, storageLocations, uploadSessions } from '../db/schema.ts';
import { canConnect, freePort } from '../devstack/ports.ts';
import { DEV_BUCKET } from '../devstack/stack.ts';
import { PROJECT_ROOT } from '../devstack/tools.ts';
import { ObjectNotFoundError } from '../storage/driver.ts';
import { blobKey } from '../storage/paths.ts';
import { S3Driver } from '../storage/s3.ts';
import type { RunningWorkers } from '../workers/main.ts';
import { createTestUser, stackInfo, startTestApi, startTestWorkers, testDatabase, testEnv } from './support/harness.ts';
import { OciClient, sha256 } from './support/oci-client.ts';

const MiB = 1024 * 1024;
type Api = Awaited<ReturnType<typeof startTestApi>>;

describe('chunked uploads become blobs where their parts are', () => {
  const database = testDatabase();
  const drivers = new Map<string, S3Driver>();
  let api: Api;
  let euWestApi: Api;
  let workers: RunningWorkers;
  let client: OciClient;
  let user: Awaited<ReturnType<typeof createTestUser>>;
  let repo: string;

  beforeAll(async () => {
    for (const r of stackInfo().regions) {
      drivers.set(r.name, new S3Driver({ name: r.name, endpoint: `http://127.0.0.1:${r.port}`, region: 'us-east-1', bucket: DEV_BUCKET, ...stackInfo().s3Credentials }));
    }
    api = await startTestApi({ MERIDIAN_STORAGE_PREFERENCE: 'us-east,eu-west,ap-south' });
    euWestApi = await startTestApi({ MERIDIAN_STORAGE_PREFERENCE: 'eu-west,us-east,ap-south', MERIDIAN_BLOB_SERVE_MODE: 'proxy' });
    user = await createTestUser('objects');
    client = new OciClient({ baseUrl: api.url, authorization: user.authorization });
    repo = `${user.username}/app`;
  });
  afterAll(async () => {
    await workers?.stop();
    await api?.close();
    await euWestApi?.close();
    for (const d of drivers.values()) d.close();
    await database.close();
  });

  const usEast = () => drivers.get('us-east')!;

  async function placementsOf(digest: string): Promise<{ location: string; objectKey: string | null }[]> {
    return database.db
      .select({ location: storageLocations.name, objectKey: blobPlacements.objectKey })
      .from(blobPlacements)
      .innerJoin(blobs, eq(blobs.id, blobPlacements.blobId))
      .innerJoin(storageLocations, eq(storageLocations.id, blobPlacements.locationId))
      .where(eq(blobs.digest, digest))
      .orderBy(storageLocations.name);
  }

  async function hashOf(driver: S3Driver, key: string): Promise<string> {
    const h = createHash('sha256');
    for await (const c of (await driver.read(key)).body) h.update(c as Buffer);
    return `sha256:${h.digest('hex')}`;
  }

  async function begin(): Promise<{ location: string; id: string }> {
    const start = await client.fetch(`/v2/${repo}/blobs/uploads/`, { method: 'POST' });
    expect(start.status).toBe(202);
    return { location: start.headers.get('location')!, id: start.headers.get('docker-upload-uuid')! };
  }

  async function patch(location: string, bytes: Buffer, offset: number, on = client): Promise<Response> {
    return on.fetch(location, {
      method: 'PATCH',
      body: bytes,
      headers: { 'Content-Type': 'application/octet-stream', 'Content-Range': `${offset}-${offset + bytes.length - 1}` },
    });
  }

  it('keeps a multipart upload where it was written, records that key, and serves it from there', async () => {
    // A first chunk of a part's minimum size goes out as a part; the rest waits as a tail.
    const bytes = randomBytes(6 * MiB + 7);
    const { location, id } = await begin();
    expect((await patch(location, bytes.subarray(0, 5 * MiB), 0)).status).toBe(202);
    expect((await patch(location, bytes.subarray(5 * MiB), 5 * MiB)).status).toBe(202);
    const digest = sha256(bytes);
    expect((await client.fetch(`${location}?digest=${digest}`, { method: 'PUT' })).status).toBe(201);

    expect(await placementsOf(digest)).toEqual([{ location: 'us-east', objectKey: `_blobs/${id}` }]);
    // Written once: nothing at the content address, no scratch left.
    expect(await usEast().stat(blobKey('', digest))).toBeNull();
    expect((await usEast().stat(`_blobs/${id}`))?.size).toBe(bytes.length);
    expect(await usEast().list(`_uploads/${id}/`)).toEqual([]);
    expect(await database.db.select().from(uploadSessions).where(eq(uploadSessions.id, id))).toEqual([]);

    // Redirected (presigned URL of the recorded key) and proxied pulls, with a range.
    const redirect = await client.fetch(`/v2/${repo}/blobs/${digest}`);
    expect(redirect.status).toBe(307);
    expect(redirect.headers.get('location')).toContain(`/_blobs/${id}?`);
    expect(sha256((await client.pullBlob(repo, digest)).body)).toBe(digest);
    const proxy = new OciClient({ baseUrl: euWestApi.url, authorization: user.authorization });
    const part = await proxy.fetch(`/v2/${repo}/blobs/${digest}`, { headers: { Range: 'bytes=10-19' } });
    expect(part.status).toBe(206);
    expect(Buffer.from(await part.arrayBuffer())).toEqual(bytes.subarray(10, 20));
  });

  it('appends chunks shorter than a part as side objects, never reading them back until a part is due', async () => {
    const bytes = randomBytes(7 * MiB + 5);
    const start = await client.fetch(`/v2/${repo}/blobs/uploads/`, { method: 'POST' });
    expect(start.headers.get('oci-chunk-min-length')).toBe(String(5 * MiB));
    const location = start.headers.get('location')!;
    const id = start.headers.get('docker-upload-uuid')!;
    const session = async () => (await database.db.select().from(uploadSessions).where(eq(uploadSessions.id, id)))[0]!;
    for (let i = 0; i < 3; i++) expect((await patch(location, bytes.subarray(i * MiB, (i + 1) * MiB), i * MiB)).status).toBe(202);
    let row = await session();
    expect(row.tailKeys).toHaveLength(3);
    expect(row.tailSize).toBe(3 * MiB);
    expect(row.multipartUploadId).toBeNull();
    const pieces = await usEast().list(`_uploads/${id}/`);
    expect(pieces.map((p) => p.size)).toEqual([MiB, MiB, MiB]);

    // Two more make a part's minimum: the tail goes into part 1, its side objects away.
    expect((await patch(location, bytes.subarray(3 * MiB, 5 * MiB), 3 * MiB)).status).toBe(202);
    row = await session();
    expect(row.parts.map((p) => p.size)).toEqual([5 * MiB]);
    expect(row.tailKeys).toEqual([]);
    await expect.poll(() => usEast().list(`_uploads/${id}/`)).toEqual([]);

    expect((await patch(location, bytes.subarray(5 * MiB), 5 * MiB)).status).toBe(202);
    const digest = sha256(bytes);
    expect((await client.fetch(`${location}?digest=${digest}`, { method: 'PUT' })).status).toBe(201);
    expect((await client.pullBlob(repo, digest)).body.equals(bytes)).toBe(true);
    expect(await usEast().list(`_uploads/${id}/`)).toEqual([]);
  });

  it('stores a second push of the same digest nowhere: its parts are dropped, the first object stays the blob', async () => {
    const bytes = randomBytes(6 * MiB);
    const digest = await client.pushBlobChunked(repo, bytes, 6 * MiB);
    const [first] = await placementsOf(digest);
    const { location, id } = await begin();
    expect((await patch(location, bytes, 0)).status).toBe(202);
    const [session] = await database.db.select().from(uploadSessions).where(eq(uploadSessions.id, id));
    expect((await client.fetch(`${location}?digest=${digest}`, { method: 'PUT' })).status).toBe(201);

    expect(await placementsOf(digest)).toEqual([first]);
    expect(await usEast().stat(`_blobs/${id}`)).toBeNull();
    await expect(usEast().listParts(session!.objectKey, session!.multipartUploadId!)).rejects.toBeInstanceOf(ObjectNotFoundError);
    expect(await hashOf(usEast(), first!.objectKey!)).toBe(digest);
  });

  it('verifies the digest before anything is stored, also for an algorithm the upload was not hashed with', async () => {
    const bytes = randomBytes(6 * MiB);
    const wrong = await begin();
    await patch(wrong.location, bytes, 0);
    const claimed = sha256(randomBytes(8));
    const refused = await client.fetch(`${wrong.location}?digest=${claimed}`, { method: 'PUT' });
    expect(refused.status).toBe(400);
    expect(((await refused.json()) as { errors: { code: string }[] }).errors[0]!.code).toBe('DIGEST_INVALID');
    expect(await usEast().stat(`_blobs/${wrong.id}`)).toBeNull();
    expect(await placementsOf(claimed)).toEqual([]);

    // sha512 on an upload begun without saying so: hashed sha256 as it came, checked by reading back.
    const sha512 = `sha512:${createHash('sha512').update(bytes).digest('hex')}`;
    const bad = await begin();
    await patch(bad.location, bytes, 0);
    const wrong512 = `sha512:${createHash('sha512').update(randomBytes(8)).digest('hex')}`;
    expect((await client.fetch(`${bad.location}?digest=${wrong512}`, { method: 'PUT' })).status).toBe(400);
    expect(await usEast().stat(`_blobs/${bad.id}`)).toBeNull();
    const good = await begin();
    await patch(good.location, bytes, 0);
    expect((await client.fetch(`${good.location}?digest=${sha512}`, { method: 'PUT' })).status).toBe(201);
    expect(await placementsOf(sha512)).toEqual([{ location: 'us-east', objectKey: `_blobs/${good.id}` }]);
    expect((await client.pullBlob(repo, sha512)).body.equals(bytes)).toBe(true);
  });

  it('loses nothing when the commit fails after the object is complete, and the retried PUT finishes it', async () => {
    const bytes = randomBytes(6 * MiB + 3);
    const digest = sha256(bytes);
    const { location, id } = await begin();
    await patch(location, bytes, 0);
    // The database refuses this blob's placement once the object is complete: as if the process
    // died between completing the multipart upload and committing.
    await database.db.execute(
      sql.raw(`create function refuse_placement() returns trigger language plpgsql as $$ begin raise exception 'simulated crash'; end $$;
        create trigger refuse_placement before insert on blob_placements for each row execute function refuse_placement();`),
    );
    try {
      const failed = await client.fetch(`${location}?digest=${digest}`, { method: 'PUT' });
      expect(failed.status).toBe(500);
      await failed.body?.cancel();
    } finally {
      await database.db.execute(sql.raw('drop trigger refuse_placement on blob_placements; drop function refuse_placement();'));
    }
    expect(await placementsOf(digest)).toEqual([]);
    expect((await client.fetch(location)).headers.get('range')).toBe(`0-${bytes.length - 1}`);

    const retried = await client.fetch(`${location}?digest=${digest}`, { method: 'PUT' });
    expect(retried.status).toBe(201);
    expect(await placementsOf(digest)).toEqual([{ location: 'us-east', objectKey: `_blobs/${id}` }]);
    expect(sha256((await client.pullBlob(repo, digest)).body)).toBe(digest);
  });

  it('resumes after the API process is killed mid-PATCH: the session holds exactly what was acknowledged', async () => {
    const port = await freePort();
    const child: ChildProcess = spawn(process.execPath, ['--import', 'tsx', 'api/main.ts', '--workers', '1'], {
      cwd: PROJECT_ROOT,
      env: { ...process.env, ...testEnv({ PORT: String(port), MERIDIAN_STORAGE_PREFERENCE: 'us-east,eu-west,ap-south' }) } as NodeJS.ProcessEnv,
      stdio: ['ignore', 'ignore', 'inherit'],
    });
    try {
      await expect.poll(() => canConnect(port), { timeout: 60_000, interval: 200 }).toBe(true);
      const doomed = new OciClient({ baseUrl: `http://127.0.0.1:${port}`, authorization: user.authorization });
      const bytes = randomBytes(24 * MiB);
      const digest = sha256(bytes);
      const start = await doomed.fetch(`/v2/${repo}/blobs/uploads/`, { method: 'POST' });
      const location = start.headers.get('location')!;
      const acknowledged = 5 * MiB;
      expect((await patch(location, bytes.subarray(0, acknowledged), 0, doomed)).status).toBe(202);

      // A second chunk: 17 MiB sent (a 16 MiB part reaches storage), then the process dies.
      const req = http.request(`http://127.0.0.1:${port}${location}`, {
        method: 'PATCH',
        headers: { Authorization: user.authorization, 'Content-Range': `${acknowledged}-${bytes.length - 1}`, 'Content-Length': String(bytes.length - acknowledged) },
      });
      req.on('error', () => {});
      req.write(bytes.subarray(acknowledged, acknowledged + 17 * MiB));
      await new Promise((r) => setTimeout(r, 1500));
      child.kill('SIGKILL');
      await new Promise((r) => child.once('exit', r));
      req.destroy();

      // Another instance: the session is as the first PATCH left it. Its request lease would
      // run out after a minute; the test moves time on instead of waiting.
      const status = await client.fetch(location);
      expect(status.status).toBe(204);
      expect(status.headers.get('range')).toBe(`0-${acknowledged - 1}`);
      await database.db.update(uploadSessions).set({ busyUntil: null }).where(eq(uploadSessions.id, start.headers.get('docker-upload-uuid')!));
      expect((await patch(location, bytes.subarray(acknowledged), acknowledged)).status).toBe(202);
      expect((await client.fetch(`${location}?digest=${digest}`, { method: 'PUT' })).status).toBe(201);
      expect((await client.pullBlob(repo, digest)).body.equals(bytes)).toBe(true);
    } finally {
      if (child.exitCode === null) child.kill('SIGKILL');
    }
  });

  it('replicates from the recorded key to the content address of the other regions', async () => {
    workers = await startTestWorkers({ control: true, mirror: false, copyLocations: ['eu-west', 'ap-south'] });
    const bytes = randomBytes(6 * MiB);
    const digest = await client.pushBlobChunked(repo, bytes, 6 * MiB);
    await expect.poll(async () => (await placementsOf(digest)).length, { timeout: 90_000, interval: 500 }).toBe(3);
    const placed = await placementsOf(digest);
    expect(placed.find((p) => p.location === 'us-east')?.objectKey).toMatch(/^_blobs\//);
    for (const region of ['eu-west', 'ap-south']) {
      expect(placed.find((p) => p.location === region)?.objectKey, region).toBeNull();
      expect(await hashOf(drivers.get(region)!, blobKey('', digest)), region).toBe(digest);
    }
    // eu-west's instance now serves its own copy.
    const proxy = new OciClient({ baseUrl: euWestApi.url, authorization: user.authorization });
    const pulled = await proxy.fetch(`/v2/${repo}/blobs/${digest}`);
    expect(pulled.headers.get('x-meridian-location')).toBe('eu-west');
    expect(sha256(Buffer.from(await pulled.arrayBuffer()))).toBe(digest);
  });
});
