// What the region-topology tests share: one topology per test file (devstack/regions.ts) on a
// topology id of its own, a user, OCI clients per region and the checks they make.
import { randomBytes, randomInt } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { sql } from 'drizzle-orm';
import { createUser } from '../../auth/accounts.ts';
import { connectDatabase, type DbHandle } from '../../db/client.ts';
import { startRegionTopology, type RegionTopology } from '../../devstack/regions.ts';
import { OciClient } from './oci-client.ts';

export interface TopologyFixture {
  topology: RegionTopology;
  db: DbHandle;
  user: { username: string; authorization: string };
  client(region: string): OciClient;
  /** Names of the regions holding a placement of `digest`, sorted. */
  holders(digest: string): Promise<string[]>;
  /** One sample of a region's /metrics (labels matched exactly), 0 when absent. */
  metric(region: string, name: string, labels: Record<string, string>): Promise<number>;
  close(): Promise<void>;
}

export async function startTopologyFixture(opts: { id?: number; log?: (line: string) => void } = {}): Promise<TopologyFixture> {
  const dataDir = mkdtempSync(path.join(tmpdir(), 'meridian-regions-'));
  // Ids 100–249 for tests: `npm run start:regions` uses 1, the benchmark 2.
  const id = opts.id ?? 100 + randomInt(150);
  const topology = await startRegionTopology({ id, dataDir, log: opts.log, env: process.env.LOG_LEVEL ? { LOG_LEVEL: process.env.LOG_LEVEL } : {} }).catch((e: unknown) => {
    rmSync(dataDir, { recursive: true, force: true });
    throw e;
  });
  const db = connectDatabase(topology.core.databaseUrl, { max: 4, applicationName: 'meridian-regions-test' });
  const username = `regions-${randomBytes(4).toString('hex')}`;
  const password = `pw-${randomBytes(8).toString('hex')}`;
  await db.db.transaction((tx) => createUser(tx, { username, password }));
  const authorization = `Basic ${Buffer.from(`${username}:${password}`).toString('base64')}`;
  const client = (region: string) => new OciClient({ baseUrl: topology.regions.get(region)!.apiUrl, authorization });
  return {
    topology,
    db,
    user: { username, authorization },
    client,
    async holders(digest) {
      const rows = await db.db.execute<{ name: string }>(sql`
        select l.name from blob_placements p join blobs b on b.id = p.blob_id join storage_locations l on l.id = p.location_id
        where b.digest = ${digest} order by l.name`);
      return rows.map((r) => r.name);
    },
    async metric(region, name, labels) {
      const text = await (await fetch(`${topology.regions.get(region)!.apiUrl}/metrics`)).text();
      const want = Object.entries(labels).map(([k, v]) => `${k}="${v}"`);
      for (const line of text.split('\n')) {
        const m = /^([a-z_]+)\{([^}]*)\} (\S+)$/.exec(line);
        if (!m || m[1] !== name) continue;
        const have = m[2]!.split(',');
        if (have.length === want.length && want.every((w) => have.includes(w))) return Number(m[3]);
      }
      return 0;
    },
    async close() {
      await db.close();
      await topology.stop();
      rmSync(dataDir, { recursive: true, force: true });
    },
  };
}
