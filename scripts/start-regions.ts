// `npm run start:regions`: Meridian as a multi-region deployment on one machine — each region
// its own network namespace (S3 server, API instance, copy worker), a shared core (PostgreSQL,
// Redis, Temporal) in us-east, WAN latency and bandwidth between them (devstack/regions.ts).
// Needs root. `npm run start:regions -- --down` removes what a killed run left behind.
// Ctrl-C stops everything and removes the namespaces; data stays in .data/regions/.
import path from 'node:path';
import { createUser, userByName } from '../auth/accounts.ts';
import { generateToken } from '../auth/passwords.ts';
import { connectDatabase } from '../db/client.ts';
import { startRegionTopology, removeRegionTopology, type RegionTopology } from '../devstack/regions.ts';
import { DATA_DIR } from '../devstack/tools.ts';
import { fatal } from '../platform/main.ts';

const id = Number(process.env.MERIDIAN_REGIONS_ID ?? 1);
const dataDir = path.join(DATA_DIR, 'regions');

async function main(): Promise<void> {
  if (process.getuid?.() !== 0) fatal('start:regions creates network namespaces: run it as root', 2);
  if (process.argv.includes('--down')) {
    await removeRegionTopology(id);
    console.log(`meridian: removed region topology ${id} (data kept in ${path.relative(process.cwd(), dataDir)}/)`);
    return;
  }
  let stopTopology: (() => Promise<void>) | undefined;
  let stopping = false;
  const stop = async () => {
    if (stopping) return;
    stopping = true;
    console.log('\nmeridian: stopping');
    await stopTopology?.();
    process.exit(0);
  };
  process.on('SIGINT', () => void stop());
  process.on('SIGTERM', () => void stop());
  const topology: RegionTopology = await startRegionTopology({ id, dataDir, log: (l) => console.log(`meridian: ${l}`), onStop: (s) => (stopTopology = s) });
  const admin = await bootstrapAdmin(topology.core.databaseUrl);
  const first = [...topology.regions.values()][0]!;
  const rows = [...topology.regions.values()].map(
    (r) =>
      `  ${r.region.padEnd(9)} namespace ${r.netns.padEnd(14)} API ${r.apiUrl}  S3 ${r.s3Endpoint}  WAN to core ${topology.rttMs(r.region, 'us-east')} ms round trip`,
  );
  console.log(`
Meridian is running in ${topology.regions.size} regions.

${rows.join('\n')}
  core (us-east)  PostgreSQL ${topology.core.databaseUrl}  Redis ${topology.core.redisUrl}  Temporal ${topology.core.temporalAddress}
  Superuser       admin${admin ? ` / password ${admin}  (generated; shown once)` : ' (password from MERIDIAN_ADMIN_PASSWORD or set earlier)'}
  Logs            ${path.relative(process.cwd(), path.join(dataDir, 'logs'))}/
  Shell in a region: ip netns exec ${first.netns} bash
  Push and pull (plain HTTP): .tools/bin/oras push --plain-http -u admin -p <password> ${first.apiUrl.replace('http://', '')}/admin/hello:v1 <file>

Press Ctrl-C to stop.`);
}

/** The superuser `admin`, as `npm start` makes it: MERIDIAN_ADMIN_PASSWORD, or a password
 * generated on the first start and returned to be shown once. */
async function bootstrapAdmin(databaseUrl: string): Promise<string | undefined> {
  const database = connectDatabase(databaseUrl, { max: 1, applicationName: 'meridian-start-regions' });
  try {
    if (await userByName(database.db, 'admin')) return undefined;
    const password = process.env.MERIDIAN_ADMIN_PASSWORD || generateToken(18);
    await database.db.transaction((tx) => createUser(tx, { username: 'admin', password }));
    return process.env.MERIDIAN_ADMIN_PASSWORD ? undefined : password;
  } finally {
    await database.close();
  }
}

main().catch((e: unknown) => fatal(`start:regions failed: ${(e as Error).message}`, 1));
