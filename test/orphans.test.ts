// Orphans with the three real regions' S3 servers: objects and multipart uploads written behind
// Meridian's back (as a crash between write and commit leaves them) are reported by a dry run,
// kept within the grace period, and removed by `meridian orphans` — while every stored blob, an
// upload in progress and its multipart upload stay. The locations get a prefix of their own
// here, so the sweep sees only this file's objects in the shared test buckets.
import { randomBytes, randomUUID } from 'node:crypto';
import { GetBucketLifecycleConfigurationCommand } from '@aws-sdk/client-s3';
import { sql } from 'drizzle-orm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DEV_BUCKET } from '../devstack/stack.ts';
import { blobKey, uploadDataKey, uploadTailKey } from '../storage/paths.ts';
import type { S3Driver } from '../storage/s3.ts';
import { createTestUser, ensureTestLocations, stackInfo, testDatabase } from './support/harness.ts';
import { type GcTestStack, meridian, startGcTestStack } from './support/gc-helpers.ts';
import { waitFor } from './support/mirror-helpers.ts';
import { OciClient, pushRandomImage, sha256 } from './support/oci-client.ts';

interface Sweep {
  location: string;
  orphanObjects: number;
  orphanMultipart: number;
  objectsListed: number;
  sample: string[];
  lifecycleRule?: string;
}

describe('orphan sweep', () => {
  const database = testDatabase();
  const prefix = `orphans-${randomBytes(4).toString('hex')}`;
  let stack: GcTestStack;
  let api: GcTestStack['api'];
  let drivers: Map<string, S3Driver>;
  let env: Record<string, string>;
  let regions: string[];
  const root = `root-${randomBytes(3).toString('hex')}`;
  const rootPassword = `pw-${randomBytes(8).toString('hex')}`;

  beforeAll(async () => {
    await ensureTestLocations();
    await database.db.execute(sql`update storage_locations set path_prefix = ${prefix}`);
    regions = stackInfo().regions.map((r) => r.name);
    stack = await startGcTestStack(root, rootPassword);
    ({ api, drivers, env } = stack);
  });
  afterAll(async () => {
    await stack?.close();
    await database.close();
  });

  async function multipartIds(region: string): Promise<string[]> {
    return (await drivers.get(region)!.listMultipartUploads(`${prefix}/`)).uploads.map((u) => u.uploadId);
  }

  it('reports, keeps within the grace period, then removes objects and multipart uploads no row accounts for', async () => {
    const user = await createTestUser('orphans');
    const repo = `${user.username}/app`;
    const client = new OciClient({ baseUrl: api.url, authorization: user.authorization });
    const image = await pushRandomImage(client, repo, 'v1', { layers: 2, layerSize: 20_000 });
    const digests = image.blobs.map(sha256);
    for (const d of digests) {
      await waitFor(`${d} in every region`, async () => {
        const [r] = await database.db.execute<{ n: number }>(sql`
          select count(*)::int as n from blob_placements p join blobs b on b.id = p.blob_id where b.digest = ${d} and p.state = 'available'`);
        return r?.n === regions.length;
      });
    }

    // An upload in progress: its tail object (and nothing else) is in the first region.
    const start = await client.fetch(`/v2/${repo}/blobs/uploads/`, { method: 'POST' });
    expect(start.status).toBe(202);
    const pending = randomBytes(5000);
    const patched = await client.fetch(start.headers.get('location')!, { method: 'PATCH', body: pending, headers: { 'Content-Type': 'application/octet-stream' } });
    expect(patched.status).toBe(202);

    // Orphans in two regions, as crashes leave them.
    const orphanRegions = regions.slice(0, 2);
    const orphans = new Map<string, { keys: string[]; uploadIds: string[] }>();
    for (const region of orphanRegions) {
      const d = drivers.get(region)!;
      const lostBlob = randomBytes(3000);
      const keys = [blobKey(prefix, sha256(lostBlob)), uploadDataKey(prefix, randomUUID()), uploadTailKey(prefix, randomUUID(), 1)];
      await d.write(keys[0]!, lostBlob);
      await d.write(keys[1]!, randomBytes(2000));
      await d.write(keys[2]!, randomBytes(100));
      // A multipart upload of a session that is gone, and one of a copy whose blob is placed by now.
      const uploadIds: string[] = [];
      for (const key of [uploadDataKey(prefix, randomUUID()), blobKey(prefix, digests[1]!)]) {
        const id = await d.createMultipart(key);
        await d.uploadPart(key, id, 1, randomBytes(1000));
        uploadIds.push(id);
      }
      orphans.set(region, { keys, uploadIds });
    }

    // Dry run: reported per location, nothing removed.
    const dry = await meridian(['orphans', '--dry-run', '--grace', '0', '--json'], env);
    expect(dry.code, dry.err).toBe(0);
    const report = JSON.parse(dry.out) as { locations: Sweep[]; failedLocations: unknown[] };
    console.log(JSON.stringify(report.locations.map(({ sample: _s, ...l }) => l)));
    expect(report.failedLocations).toEqual([]);
    for (const region of regions) {
      const l = report.locations.find((x) => x.location === region)!;
      const expected = orphanRegions.includes(region) ? { orphanObjects: 3, orphanMultipart: 2 } : { orphanObjects: 0, orphanMultipart: 0 };
      expect(l).toMatchObject(expected);
    }
    for (const [region, o] of orphans) {
      for (const k of o.keys) expect(await drivers.get(region)!.stat(k)).not.toBeNull();
      expect(await multipartIds(region)).toEqual(expect.arrayContaining(o.uploadIds));
    }

    // Within the grace period (a day by default) nothing is an orphan yet.
    const kept = await meridian(['orphans'], env);
    expect(kept.code, kept.err).toBe(0);
    expect(kept.out).toContain('orphan sweep done (grace 86400 s)');
    expect(kept.out).toMatch(new RegExp(`${regions[0]}\\s+removed 0 of \\d+ objects`));

    const run = await meridian(['orphans', '--grace', '0'], env);
    console.log(run.out);
    expect(run.code, run.err).toBe(0);
    for (const region of orphanRegions) expect(run.out).toMatch(new RegExp(`${region}\\s+removed 3 of \\d+ objects .*aborted 2 of \\d+ multipart uploads`));
    for (const [region, o] of orphans) {
      for (const k of o.keys) expect(await drivers.get(region)!.stat(k)).toBeNull();
      const left = await multipartIds(region);
      for (const id of o.uploadIds) expect(left).not.toContain(id);
    }
    // The lifecycle rule: added where the server has lifecycle configuration, reported otherwise.
    const rules = [...run.out.matchAll(/lifecycle rule: (\w+)/g)].map((m) => m[1]);
    expect(rules.length).toBe(regions.length);
    for (const r of rules) expect(['added', 'present', 'unsupported']).toContain(r);
    if (rules[0] !== 'unsupported') {
      const lc = await drivers.get(regions[0]!)!.client.send(new GetBucketLifecycleConfigurationCommand({ Bucket: DEV_BUCKET }));
      expect(lc.Rules?.some((r) => r.AbortIncompleteMultipartUpload?.DaysAfterInitiation === 7 && r.Filter?.Prefix === `${prefix}/`)).toBe(true);
    }

    // What rows account for stayed: every blob in every region, and the upload in progress.
    for (const region of regions) for (const d of digests) expect(await drivers.get(region)!.stat(blobKey(prefix, d))).not.toBeNull();
    for (const [i, d] of digests.entries()) expect((await client.pullBlob(repo, d)).body.equals(image.blobs[i]!)).toBe(true);
    const put = await client.fetch(`${patched.headers.get('location')!}${patched.headers.get('location')!.includes('?') ? '&' : '?'}digest=${sha256(pending)}`, { method: 'PUT' });
    expect(put.status).toBe(201);
    expect((await client.pullBlob(repo, sha256(pending))).body.equals(pending)).toBe(true);
  });
});
