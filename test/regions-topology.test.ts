// Regions as separate hosts (issue 9): each region a network namespace with its S3 server, API
// instance and copy worker, the shared core across a simulated WAN. Run by `npm run
// test:regions` (vitest.regions.config.ts): it needs root for the namespaces.
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { sha256 } from './support/oci-client.ts';
import { startTopologyFixture, type TopologyFixture } from './support/regions-topology.ts';

const exec = promisify(execFile);

describe('regions as separate hosts', () => {
  let f: TopologyFixture;
  let repo: string;

  beforeAll(async () => {
    f = await startTopologyFixture();
    repo = `${f.user.username}/app`;
  });

  afterAll(async () => {
    await f?.close();
  });

  it('keeps each region on its own network: another region is reachable only through the WAN', async () => {
    const ap = f.topology.regions.get('ap-south')!;
    const us = f.topology.regions.get('us-east')!;
    // Straight to us-east's S3 server: no route from ap-south.
    await expect(exec('ip', ['netns', 'exec', ap.netns, 'bash', '-c', `exec 3<>/dev/tcp/${us.nsIp}/9000`])).rejects.toThrow(/unreachable/i);
    // Through the name every region uses for it: the relay, 120 ms away.
    await exec('ip', ['netns', 'exec', ap.netns, 'bash', '-c', 'exec 3<>/dev/tcp/s3-us-east.meridian.internal/9000']);
    // The database is 60 ms each way from ap-south: its health check cannot take less.
    const health = (await (await fetch(`${ap.apiUrl}/health/instance`)).json()) as { checks: { name: string; latencyMs: number }[] };
    expect(health.checks.find((c) => c.name === 'database')!.latencyMs).toBeGreaterThanOrEqual(110);
  });

  it('replicates a push across the WAN, then serves every region from its own copy: 0 cross-region bytes', async () => {
    const bytes = randomBytes(1_500_000);
    const digest = await f.client('us-east').pushBlob(repo, bytes);
    await expect.poll(() => f.holders(digest), { timeout: 120_000, interval: 1000 }).toEqual(['ap-south', 'eu-west', 'us-east']);
    for (const region of ['eu-west', 'ap-south']) {
      const pulled = await f.client(region).pullBlob(repo, digest);
      expect(pulled.status, region).toBe(200);
      expect(pulled.response.headers.get('x-meridian-location'), region).toBe(region);
      expect(sha256(pulled.body), region).toBe(digest);
      const served = { client_region: region, location: region, location_region: region, cross_region: 'false', mode: 'proxy' };
      expect(await f.metric(region, 'meridian_blob_served_bytes_total', served), region).toBe(bytes.length);
      for (const remote of ['us-east', 'eu-west', 'ap-south'].filter((r) => r !== region)) {
        const crossed = { client_region: region, location: remote, location_region: remote, cross_region: 'true', mode: 'proxy' };
        expect(await f.metric(region, 'meridian_blob_served_bytes_total', crossed), `${region} from ${remote}`).toBe(0);
      }
      // The copy into this region read the blob over the WAN, from us-east (nearest holder).
      const copied = { client_region: region, location: 'us-east', location_region: 'us-east', cross_region: 'true' };
      expect(await f.metric(region, 'meridian_copied_bytes_total', copied), region).toBeGreaterThan(0);
    }
  });
});
