// The copy activity resuming from crafted heartbeat details (MockActivityEnvironment), against
// the real database and S3 servers: a multipart upload a "previous attempt" left behind in
// eu-west, and the checkpoint that attempt would have heartbeated. Covers the cases where a
// resume used to retry forever (416 after the last part, a hash state this process cannot load),
// restarted from byte 0 (another holder) or leaked uploads (superseded checkpoints).
import { createHash, randomBytes } from 'node:crypto';
import { ApplicationFailure } from '@temporalio/common';
import { MockActivityEnvironment } from '@temporalio/testing';
import { and, eq } from 'drizzle-orm';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { createReplicationActivities, toFailure } from '../activities/replication.ts';
import { blobPlacements, blobs } from '../db/schema.ts';
import { createServices, type Services } from '../platform/services.ts';
import { createResumableHasher } from '../registry/hashing.ts';
import { type CopyCheckpoint, partsDigestOf } from '../replication/copy.ts';
import { placementsRemoved } from '../replication/placements.ts';
import { type CompletedPart, DEFAULT_PART_SIZE, ObjectNotFoundError } from '../storage/driver.ts';
import type { Location } from '../storage/locations.ts';
import { blobKey } from '../storage/paths.ts';
import { createTestUser, startTestApi, testConfig } from './support/harness.ts';
import { OciClient } from './support/oci-client.ts';

const MiB = 1024 * 1024;
const SIZE = 2 * DEFAULT_PART_SIZE + 3 * MiB; // three parts: 16 + 16 + 3 MiB

describe('copy resume from heartbeat details', () => {
  let api: Awaited<ReturnType<typeof startTestApi>>;
  let services: Services;
  let activities: ReturnType<typeof createReplicationActivities>;
  let bytes: Buffer;
  let digest: string;
  let euWest: Location;
  let key: string;

  beforeAll(async () => {
    // No workers: nothing replicates the blob but the activity under test.
    api = await startTestApi({ MERIDIAN_STORAGE_PREFERENCE: 'us-east,eu-west,ap-south' });
    services = createServices(testConfig(), 'copy-resume-test');
    await services.locations.refresh();
    activities = createReplicationActivities(services);
    const user = await createTestUser('copyresume');
    bytes = randomBytes(SIZE);
    digest = await new OciClient({ baseUrl: api.url, authorization: user.authorization }).pushBlob(`${user.username}/big`, bytes);
    euWest = services.locations.byName('eu-west')!;
    key = blobKey(euWest.pathPrefix, digest);
  });

  afterAll(async () => {
    await services?.close();
    await api?.close();
  });

  // Each case starts with the blob only where it was pushed.
  beforeEach(async () => {
    const [blob] = await services.db.select().from(blobs).where(eq(blobs.digest, digest));
    await services.db.delete(blobPlacements).where(and(eq(blobPlacements.blobId, blob!.id), eq(blobPlacements.locationId, euWest.id)));
    await placementsRemoved(services.redis);
    await euWest.driver.delete(key);
  });

  /** What an attempt that uploaded the first `n` parts (from `source`) heartbeated last. */
  async function leftBehind(n: number, source = 'us-east'): Promise<CopyCheckpoint> {
    const uploadId = await euWest.driver.createMultipart(key);
    const parts: CompletedPart[] = [];
    const hasher = await createResumableHasher('sha256');
    let offset = 0;
    for (let i = 1; i <= n; i++) {
      const part = bytes.subarray(offset, Math.min(SIZE, offset + DEFAULT_PART_SIZE));
      parts.push({ partNumber: i, etag: await euWest.driver.uploadPart(key, uploadId, i, part), size: part.length });
      hasher.update(part);
      offset += part.length;
    }
    return { source, target: 'eu-west', uploadId, partCount: n, partsDigest: partsDigestOf(parts), offset, hashState: hasher.save().toString('base64') };
  }

  async function runCopy(checkpoint: CopyCheckpoint) {
    const env = new MockActivityEnvironment({ heartbeatDetails: checkpoint });
    const beats: unknown[] = [];
    env.on('heartbeat', (d: unknown) => beats.push(d));
    const result = await env.run(activities.copyBlobToLocation, { digest, size: SIZE, target: 'eu-west' });
    return { result, beats };
  }

  async function expectCopiedIntact() {
    const read = await euWest.driver.read(key);
    const h = createHash('sha256');
    for await (const c of read.body) h.update(c as Buffer);
    expect(`sha256:${h.digest('hex')}`).toBe(digest);
  }

  async function expectUploadGone(uploadId: string) {
    await expect(euWest.driver.listParts(key, uploadId)).rejects.toBeInstanceOf(ObjectNotFoundError);
  }

  it('completes a copy whose worker died after uploading the last part, reading nothing again', async () => {
    const cp = await leftBehind(3);
    expect(cp.offset).toBe(SIZE);
    const { result } = await runCopy(cp);
    expect(result).toMatchObject({ target: 'eu-west', resumedFrom: SIZE, bytesTransferred: 0, alreadyPresent: false });
    await expectCopiedIntact();
    await expectUploadGone(cp.uploadId);
  });

  it('continues from another holder when the checkpointed source is gone, sending only the rest', async () => {
    const cp = await leftBehind(1, 'ap-south'); // ap-south never held the blob (down, or removed)
    const { result, beats } = await runCopy(cp);
    expect(result).toMatchObject({ source: 'us-east', resumedFrom: DEFAULT_PART_SIZE, bytesTransferred: SIZE - DEFAULT_PART_SIZE });
    await expectCopiedIntact();
    await expectUploadGone(cp.uploadId);
    // Heartbeats are compact (no parts list) and always carry a checkpoint while one exists.
    expect(beats.length).toBeGreaterThan(0);
    for (const b of beats) {
      expect(b).toBeDefined();
      expect(b).not.toHaveProperty('parts');
      expect(JSON.stringify(b).length).toBeLessThan(1024);
    }
  });

  it('starts over, aborting the old upload, when the hash state cannot be restored in this process', async () => {
    const cp = await leftBehind(1);
    // A state saved by another hasher build (e.g. native, restored where only WebAssembly loads).
    const foreign = { ...cp, hashState: Buffer.concat([Buffer.from('ossl1:sha256:'), randomBytes(7)]).toString('base64') };
    const { result } = await runCopy(foreign);
    expect(result).toMatchObject({ resumedFrom: 0, bytesTransferred: SIZE });
    await expectCopiedIntact();
    await expectUploadGone(cp.uploadId);
  });

  it('aborts a superseded upload whose parts are not as checkpointed', async () => {
    const cp = await leftBehind(2);
    const { result } = await runCopy({ ...cp, partsDigest: partsDigestOf([{ partNumber: 1, etag: '"other"', size: 1 }]) });
    expect(result).toMatchObject({ resumedFrom: 0, bytesTransferred: SIZE });
    await expectCopiedIntact();
    await expectUploadGone(cp.uploadId);
  });

  it('keeps the checkpoint in every heartbeat while it verifies an unrecorded object, then drops the finished upload', async () => {
    const cp = await leftBehind(1);
    await euWest.driver.write(key, bytes);
    const { result, beats } = await runCopy(cp);
    expect(result).toMatchObject({ alreadyPresent: true, bytesTransferred: 0 });
    expect(beats.length).toBeGreaterThan(1);
    for (const b of beats.slice(0, -1)) expect(b).toEqual(cp);
    await expectUploadGone(cp.uploadId);
  });

  it('does not retry a storage 4xx (credentials, bucket): it fails the same way every time', () => {
    const refused = Object.assign(new Error('storage location eu-west: AccessDenied (403) on x'), { name: 'StorageRequestError' });
    const f = toFailure(refused);
    expect(f).toBeInstanceOf(ApplicationFailure);
    expect(f).toMatchObject({ type: 'StorageRefused', nonRetryable: true });
  });
});
