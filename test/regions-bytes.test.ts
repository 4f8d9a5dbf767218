// Byte accounting: every blob pull is counted by where its bytes travelled, from the storage
// location that served it to the region of the API instance's clients, and every replication copy
// by the location it read from and the region it copied into — so "a replicated pull crosses no
// region" is a number on /metrics.
import { randomBytes } from 'node:crypto';
import type { Client, Connection } from '@temporalio/client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type ReplicateBlobResult, replicateBlobWorkflow } from '../contract/replication.ts';
import { workflowHandle } from '../platform/workflows.ts';
import { WORKFLOW_IDS } from '../temporal.config.ts';
import type { RunningWorkers } from '../workers/main.ts';
import { createTestUser, startTestApi, startTestWorkers, testTemporal } from './support/harness.ts';
import { OciClient, sha256 } from './support/oci-client.ts';

type Api = Awaited<ReturnType<typeof startTestApi>>;

/** The value of one sample of /metrics, 0 when absent. */
async function sample(api: Api, name: string, labels: Record<string, string>): Promise<number> {
  const text = await (await fetch(`${api.url}/metrics`)).text();
  const want = Object.entries(labels).map(([k, v]) => `${k}="${v}"`);
  for (const line of text.split('\n')) {
    const m = /^([a-z_]+)\{([^}]*)\} (\S+)$/.exec(line);
    if (!m || m[1] !== name) continue;
    const have = m[2]!.split(',');
    if (want.every((w) => have.includes(w)) && have.length === want.length) return Number(m[3]);
  }
  return 0;
}

describe('byte accounting per client region and storage location', () => {
  let temporal: Client;
  let connection: Connection;
  let apiUsEast: Api;
  let apiEuWest: Api;
  let workers: RunningWorkers | undefined;
  let user: Awaited<ReturnType<typeof createTestUser>>;
  let repo: string;

  beforeAll(async () => {
    ({ client: temporal, connection } = await testTemporal());
    apiUsEast = await startTestApi({ MERIDIAN_STORAGE_PREFERENCE: 'us-east,eu-west,ap-south' });
    apiEuWest = await startTestApi({ MERIDIAN_STORAGE_PREFERENCE: 'eu-west,us-east,ap-south', MERIDIAN_BLOB_SERVE_MODE: 'proxy' });
    user = await createTestUser('bytes');
    repo = `${user.username}/app`;
  });

  afterAll(async () => {
    await workers?.stop();
    for (const api of [apiUsEast, apiEuWest]) await api?.close();
    await connection?.close();
  });

  const clientFor = (api: Api) => new OciClient({ baseUrl: api.url, authorization: user.authorization });
  const served = (api: Api, clientRegion: string, location: string, mode: string) =>
    sample(api, 'meridian_blob_served_bytes_total', {
      client_region: clientRegion,
      location,
      location_region: location,
      cross_region: String(clientRegion !== location),
      mode,
    });

  it('counts a pull served from a remote region as cross-region bytes, and the same pull after replication as local', async () => {
    const bytes = randomBytes(250_000);
    // No copy worker runs yet: only us-east holds the blob.
    const digest = await clientFor(apiUsEast).pushBlob(repo, bytes);

    const remote = await clientFor(apiEuWest).pullBlob(repo, digest);
    expect(remote.status).toBe(200);
    expect(remote.response.headers.get('x-meridian-location')).toBe('us-east');
    expect(sha256(remote.body)).toBe(digest);
    expect(await served(apiEuWest, 'eu-west', 'us-east', 'proxy')).toBe(bytes.length);
    expect(await served(apiEuWest, 'eu-west', 'eu-west', 'proxy')).toBe(0);

    workers = await startTestWorkers({ control: true, mirror: false, copyLocations: ['us-east', 'eu-west', 'ap-south'] });
    const handle = workflowHandle(temporal, replicateBlobWorkflow, WORKFLOW_IDS.replicateBlob(digest));
    await expect.poll(() => handle.describe().then(() => true, () => false), { timeout: 30_000 }).toBe(true);
    const result: ReplicateBlobResult = await handle.result();
    expect(result.state).toBe('complete');

    const local = await clientFor(apiEuWest).pullBlob(repo, digest);
    expect(local.response.headers.get('x-meridian-location')).toBe('eu-west');
    expect(sha256(local.body)).toBe(digest);
    expect(await served(apiEuWest, 'eu-west', 'eu-west', 'proxy')).toBe(bytes.length);
    // Unchanged: the replicated pull crossed no region.
    expect(await served(apiEuWest, 'eu-west', 'us-east', 'proxy')).toBe(bytes.length);

    // Redirected pulls count what the client is sent to fetch, a range only its length.
    const redirected = await clientFor(apiUsEast).fetch(`/v2/${repo}/blobs/${digest}`, { headers: { Range: 'bytes=0-999' } });
    expect(redirected.status).toBe(307);
    expect(await served(apiUsEast, 'us-east', 'us-east', 'redirect')).toBe(1000);

    // The copies read from us-east, into each other region, each the whole blob once; every
    // API instance shows these cluster-wide counters.
    for (const target of ['eu-west', 'ap-south']) {
      const labels = { client_region: target, location: 'us-east', location_region: 'us-east', cross_region: 'true' };
      expect(await sample(apiUsEast, 'meridian_copied_bytes_total', labels), target).toBe(bytes.length);
      expect(await sample(apiEuWest, 'meridian_copied_bytes_total', labels), target).toBe(bytes.length);
    }
  });
});
