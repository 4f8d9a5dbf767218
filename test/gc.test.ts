// Garbage collection with the three real regions: deletion semantics (a deleted tag's manifest
// stays reachable by digest until the grace period passes), `meridian gc run [--dry-run]`, unique
// layers gone from every bucket while shared ones stay.
import { randomBytes } from 'node:crypto';
import type { Connection } from '@temporalio/client';
import { sql } from 'drizzle-orm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { blobKey } from '../storage/paths.ts';
import type { S3Driver } from '../storage/s3.ts';
import { basic, createTestUser, testDatabase, testTemporal } from './support/harness.ts';
import { type GcTestStack, meridian, startGcTestStack } from './support/gc-helpers.ts';
import { waitFor } from './support/mirror-helpers.ts';
import { OciClient, pushRandomImage, sha256 } from './support/oci-client.ts';

describe('garbage collection', () => {
  const database = testDatabase();
  let stack: GcTestStack;
  let api: GcTestStack['api'];
  let connection: Connection;
  let drivers: Map<string, S3Driver>;
  let env: Record<string, string>;
  const root = `root-${randomBytes(3).toString('hex')}`;
  const rootPassword = `pw-${randomBytes(8).toString('hex')}`;

  beforeAll(async () => {
    stack = await startGcTestStack(root, rootPassword);
    ({ api, drivers, env } = stack);
    ({ connection } = await testTemporal());
  });
  afterAll(async () => {
    await stack?.close();
    await connection?.close();
    await database.close();
  });

  /** Which regions hold an object at the blob's content address. */
  async function regionsHolding(digest: string): Promise<string[]> {
    const out: string[] = [];
    for (const [name, d] of drivers) if (await d.stat(blobKey('', digest))) out.push(name);
    return out.sort();
  }

  async function placements(digest: string): Promise<number> {
    const [r] = await database.db.execute<{ n: number }>(sql`
      select count(*)::int as n from blob_placements p join blobs b on b.id = p.blob_id where b.digest = ${digest} and p.state = 'available'`);
    return r?.n ?? 0;
  }

  const allRegions = () => [...drivers.keys()].sort();

  async function waitReplicated(digests: string[]): Promise<void> {
    for (const d of digests) await waitFor(`${d} in every region`, async () => (await placements(d)) === drivers.size);
  }

  it('keeps a deleted tag reachable by digest within the grace period, then deletes its unique layers from every bucket', async () => {
    const user = await createTestUser('gc');
    const repo = `${user.username}/app`;
    const client = new OciClient({ baseUrl: api.url, authorization: user.authorization });
    const old = await pushRandomImage(client, repo, 'old', { layers: 2 });
    // `new` shares old's first layer and has one of its own.
    const sharedLayer = old.blobs[1]!;
    const ownLayer = randomBytes(3000);
    const config = Buffer.from(JSON.stringify({ architecture: 'arm64', os: 'linux', nonce: randomBytes(4).toString('hex') }));
    for (const b of [config, ownLayer]) await client.pushBlob(repo, b);
    const manifest = {
      schemaVersion: 2,
      mediaType: 'application/vnd.oci.image.manifest.v1+json',
      config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: sha256(config), size: config.length },
      layers: [sharedLayer, ownLayer].map((b) => ({ mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', digest: sha256(b), size: b.length })),
    };
    expect((await client.pushManifest(repo, 'new', manifest, manifest.mediaType)).response.status).toBe(201);
    const unique = [old.blobs[0]!, old.blobs[2]!].map(sha256);
    const kept = [config, sharedLayer, ownLayer].map(sha256);
    await waitReplicated([...unique, ...kept]);
    for (const d of [...unique, ...kept]) expect(await regionsHolding(d)).toEqual(allRegions());

    expect((await client.fetch(`/v2/${repo}/manifests/old`, { method: 'DELETE' })).status).toBe(202);
    expect((await client.fetch(`/v2/${repo}/manifests/old`)).status).toBe(404);

    // Within the default grace period (a day) nothing goes: the manifest is reachable by digest.
    const dry = await meridian(['gc', 'run', '--dry-run'], env);
    expect(dry.code, dry.err).toBe(0);
    expect(dry.out).toContain('dry run — nothing was deleted (grace 86400 s)');
    expect(dry.out).toContain('unreferenced blobs: 0 of');
    const byDigest = await client.fetch(`/v2/${repo}/manifests/${old.manifestDigest}`, { headers: { Accept: manifest.mediaType } });
    expect(byDigest.status).toBe(200);

    // With no grace: the dry run reports what each location would reclaim and deletes nothing.
    const dry0 = await meridian(['gc', 'run', '--dry-run', '--grace', '0', '--json'], env);
    expect(dry0.code, dry0.err).toBe(0);
    const report = JSON.parse(dry0.out) as { manifestsDeleted: number; markedPerLocation: { location: string; blobs: number }[] };
    expect(report.manifestsDeleted).toBe(1);
    expect(report.markedPerLocation.map((t) => t.location).sort()).toEqual(allRegions());
    for (const d of unique) expect(await regionsHolding(d)).toEqual(allRegions());
    expect((await client.fetch(`/v2/${repo}/manifests/${old.manifestDigest}`, { headers: { Accept: manifest.mediaType } })).status).toBe(200);

    const run = await meridian(['gc', 'run', '--grace', '0'], env);
    expect(run.code, run.err).toBe(0);
    expect(run.out).toContain('garbage collection done');
    expect(run.out).toMatch(/untagged manifests expired: 1\b/);
    for (const region of allRegions()) expect(run.out).toMatch(new RegExp(`${region}\\s+reclaimed\\s+2 copies`));

    expect((await client.fetch(`/v2/${repo}/manifests/${old.manifestDigest}`, { headers: { Accept: manifest.mediaType } })).status).toBe(404);
    for (const d of unique) {
      expect(await regionsHolding(d)).toEqual([]);
      expect(await database.db.execute(sql`select 1 from blobs where digest = ${d}`)).toHaveLength(0);
      expect((await client.pullBlob(repo, d)).status).toBe(404);
    }
    for (const [i, d] of kept.entries()) {
      expect(await regionsHolding(d)).toEqual(allRegions());
      expect((await client.pullBlob(repo, d)).body.equals([config, sharedLayer, ownLayer][i]!)).toBe(true);
    }
    expect((await client.fetch(`/v2/${repo}/manifests/new`, { headers: { Accept: manifest.mediaType } })).status).toBe(200);

    // Operators only.
    const denied = await fetch(`${api.url}/api/v1/gc`, { method: 'POST', headers: { Authorization: user.authorization, 'Content-Type': 'application/json' }, body: '{}' });
    expect(denied.status).toBe(403);
    const bad = await fetch(`${api.url}/api/v1/gc`, { method: 'POST', headers: { Authorization: basic(root, rootPassword), 'Content-Type': 'application/json' }, body: '{"grace_seconds": -1}' });
    expect(bad.status).toBe(400);
  });

  it('deletes every copy of an unreferenced blob, a damaged one (scrub-marked) included', async () => {
    const user = await createTestUser('gcdmg');
    const repo = `${user.username}/app`;
    const client = new OciClient({ baseUrl: api.url, authorization: user.authorization });
    const image = await pushRandomImage(client, repo, 'v1', { layers: 1, layerSize: 5000 });
    const digests = image.blobs.map(sha256);
    await waitReplicated(digests);
    // The scrub found the layer's copy in one region bit-flipped and marked it damaged; its repair
    // has not landed yet (none was asked for here, so none will).
    const layer = digests[1]!;
    const region = allRegions()[1]!;
    const flipped = Buffer.from(image.blobs[1]!);
    flipped[100]! ^= 0x40;
    await drivers.get(region)!.write(blobKey('', layer), flipped);
    await database.db.execute(sql`
      update blob_placements p set state = 'damaged' from blobs b, storage_locations l
      where b.id = p.blob_id and l.id = p.location_id and b.digest = ${layer} and l.name = ${region}`);
    expect((await client.fetch(`/v2/${repo}/manifests/v1`, { method: 'DELETE' })).status).toBe(202);

    const run = await meridian(['gc', 'run', '--grace', '0'], env);
    expect(run.code, run.err).toBe(0);
    for (const d of digests) {
      expect(await regionsHolding(d), d).toEqual([]);
      expect(await database.db.execute(sql`select 1 from blobs where digest = ${d}`), d).toHaveLength(0);
    }
  });
});
