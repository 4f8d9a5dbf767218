// Regions as separate hosts (issue 9): each region a network namespace with its S3 server, API
// instance and copy worker, the shared core across a simulated WAN. Run by `npm run
// test:regions` (vitest.regions.config.ts): it needs root for the namespaces.
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { promisify } from 'node:util';
import { setTimeout as sleep } from 'node:timers/promises';
import { Client, Connection } from '@temporalio/client';
import { sql } from 'drizzle-orm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { sha256 } from './support/oci-client.ts';
import { faultUnderLoad, onlyRetryableFailures } from './support/regions-faults.ts';
import { startTopologyFixture, type TopologyFixture } from './support/regions-topology.ts';

const REGIONS = ['us-east', 'eu-west', 'ap-south'];

const exec = promisify(execFile);

/** A shared service (PostgreSQL, Redis) stopped for `ms`, then started again. */
async function outage(service: { stop(): Promise<unknown>; start(): Promise<unknown> }, ms: number): Promise<void> {
  await service.stop();
  await sleep(ms);
  await service.start();
}

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


  it('takes the same blob pushed at the same moment through two regions as one blob, one replication (under load)', async () => {
    let digest = '';
    const run = await faultUnderLoad(f, 'double-push', { faulted: [] }, async () => {
      const bytes = randomBytes(400_000);
      const digests = await Promise.all(['us-east', 'eu-west'].map((r) => f.client(r).pushBlob(repo, bytes)));
      expect(digests[0]).toBe(digests[1]);
      digest = digests[0]!;
    });
    expect(run.failedOutside).toBe(0);
    const rows = await f.db.db.execute<{ n: number }>(sql`select count(*)::int as n from blobs where digest = ${digest}`);
    expect(rows[0]!.n).toBe(1);
    await expect.poll(() => f.holders(digest), { timeout: 120_000, interval: 1000 }).toEqual(['ap-south', 'eu-west', 'us-east']);
    const connection = await Connection.connect({ address: f.topology.core.temporalAddress });
    try {
      const client = new Client({ connection });
      const runs = async () => {
        const found: string[] = [];
        for await (const w of client.workflow.list({ query: `MeridianBlobDigest = "${digest}"` })) found.push(w.workflowId);
        return found;
      };
      await expect.poll(runs, { timeout: 30_000 }).toEqual([`replicate/${digest}`]);
    } finally {
      await connection.close();
    }
    for (const region of REGIONS) {
      const pulled = await f.client(region).pullBlob(repo, digest);
      expect(sha256(pulled.body), region).toBe(digest);
    }
  });

  it("keeps replicating among the others while one region's copy worker is killed, and catches up when it is back", async () => {
    const worker = f.topology.regions.get('eu-west')!.copyWorker;
    const run = await faultUnderLoad(f, 'copy-worker-killed', { faulted: ['eu-west'], replaced: ['worker-copy-eu-west'] }, async () => {
      // kill(), not a crash: the topology's supervisor leaves a process it was asked to stop alone.
      await worker.kill();
      try {
        const digest = await f.client('us-east').pushBlob(repo, randomBytes(300_000));
        await expect.poll(() => f.holders(digest), { timeout: 120_000, interval: 1000 }).toEqual(['ap-south', 'us-east']);
        await sleep(3000);
        expect(await f.holders(digest)).not.toContain('eu-west');
        await worker.start();
        await expect.poll(() => f.holders(digest), { timeout: 120_000, interval: 1000 }).toEqual(['ap-south', 'eu-west', 'us-east']);
      } finally {
        if (!worker.running) await worker.start();
      }
    });
    expect(run.failedOutside).toBe(0);
  });

  it("brings a region's API back when its process dies (supervised), while the other regions never fail", async () => {
    const region = f.topology.regions.get('eu-west')!;
    const run = await faultUnderLoad(f, 'api-killed', { faulted: ['eu-west'], replaced: ['api-eu-west'] }, async () => {
      const pid = region.api.pid!;
      process.kill(pid, 'SIGKILL');
      const killed = Date.now();
      const answers = async () => region.api.pid !== pid && region.api.running && (await fetch(`${region.apiUrl}/health/instance`).then((r) => r.status, () => 0)) === 200;
      await expect.poll(answers, { timeout: 240_000, interval: 500 }).toBe(true);
      console.log(`[regions] api-killed: eu-west's API (pid ${pid}) killed with SIGKILL; its replacement (pid ${region.api.pid}) answered ${Math.round((Date.now() - killed) / 1000)} s later`);
    });
    expect(run.failedOutside).toBe(0);
  });

  it('serves each region from its own location under load, also while that location stalls for 4 s at a time: 0 cross-region bytes', async () => {
    // Slow but alive: us-east's S3 server stopped (SIGSTOP) for 4 s out of every 6, under the
    // load. A probe used to get 2.5 s, and one that ran out opened the breaker for every instance:
    // us-east's own pushes and pulls then went to eu-west.
    const s3 = f.topology.regions.get('us-east')!.s3Server;
    const run = await faultUnderLoad(f, 'slow-local-storage', { faulted: ['us-east'] }, async () => {
      for (let i = 0; i < 6; i++) {
        process.kill(s3.pid!, 'SIGSTOP');
        try {
          await sleep(4000);
        } finally {
          process.kill(s3.pid!, 'SIGCONT');
        }
        await sleep(2000);
      }
    });
    expect(run.failedOutside).toBe(0);
    for (const region of REGIONS) {
      const pulls = run.load.requests.filter((q) => q.region === region && q.kind === 'pull blob' && q.ok);
      expect(pulls.length, region).toBeGreaterThan(5);
      expect(pulls.filter((q) => q.location !== region).map((q) => q.location), `${region}: pulls served elsewhere`).toEqual([]);
      expect(run.crossRegionBytes[region], `${region}: cross-region bytes`).toBe(0);
    }
  });

  // A restart drops every connection of every process's pool mid-query: those requests fail
  // (503) and the pools reconnect. Unpatched postgres.js crashed the API here (a write to the
  // closed socket from a setImmediate; patches/postgres+3.4.9.patch).
  it('rides out 15 s without PostgreSQL under load without restarting Meridian, losing no acknowledged push', async () => {
    const run = await faultUnderLoad(f, 'postgres-down-15s', { faulted: REGIONS }, () => outage(f.topology.core.postgres, 15_000));
    onlyRetryableFailures(run.during);
    // The outage was felt: nothing is pushed without the database.
    expect(REGIONS.reduce((n, r) => n + run.during[r]!.failed, 0)).toBeGreaterThan(0);
  });

  it('rides out 15 s without Redis under load without restarting Meridian, losing no acknowledged push', async () => {
    const run = await faultUnderLoad(f, 'redis-down-15s', { faulted: REGIONS }, () => outage(f.topology.core.redis, 15_000));
    onlyRetryableFailures(run.during);
  });

  it('partitions ap-south for 60 s under load: the other regions never fail, ap-south catches up, nothing is lost', async () => {
    const run = await faultUnderLoad(f, 'partition', { faulted: ['ap-south'] }, async () => {
      await f.topology.partition('ap-south');
      try {
        await sleep(60_000);
      } finally {
        await f.topology.heal('ap-south');
      }
    });
    for (const r of ['us-east', 'eu-west']) expect(run.during[r]!.total, r).toBeGreaterThan(5);
    expect(run.failedOutside).toBe(0);
    expect(run.during['ap-south']!.failed).toBeGreaterThan(0);
  }, 600_000);
});
