// The local stack that `npm start` and the tests both run: a Temporal dev server and one S3
// server per simulated region, each its own process, port and data folder, with their buckets,
// registered as storage locations.
import path from 'node:path';
import { eq } from 'drizzle-orm';
import type { DbOrTx } from '../db/client.ts';
import { storageLocations } from '../db/schema.ts';
import { S3Driver } from '../storage/s3.ts';
import { DEV_CREDENTIALS_REF } from '../storage/locations.ts';
import { isPortFree, PortInUseError } from './ports.ts';
import type { ManagedProcess } from './process.ts';
import { s3Endpoint, s3Server } from './s3.ts';
import { temporalServer } from './temporal.ts';
import { realTemporal, type TemporalServerPorts } from './temporal-server.ts';

export interface DevRegion {
  /** Location name, also the simulated region. */
  name: string;
  port: number;
}

export const DEV_BUCKET = 'meridian';
export const DEV_REGION_NAMES = ['us-east', 'eu-west', 'ap-south'] as const;

export function devRegions(basePort: number, names: readonly string[] = DEV_REGION_NAMES): DevRegion[] {
  return names.map((name, i) => ({ name, port: basePort + i }));
}

export interface StackOptions {
  dataDir: string;
  logDir: string;
  temporalPort: number;
  /** Omit for a headless Temporal (tests). */
  temporalUiPort?: number;
  regions: DevRegion[];
  credentials: { accessKeyId: string; secretAccessKey: string };
  /** Run the real Temporal server (PostgreSQL, mutual TLS) instead of the dev server. */
  realTemporal?: {
    ports: TemporalServerPorts;
    postgresUrl: string;
    databasePrefix: string;
    dynamicConfig?: Record<string, unknown>;
  };
  /** Dynamic config values for the dev server (`--dynamic-config-value`). */
  devTemporalDynamicConfig?: Record<string, unknown>;
}

export interface LocalStack {
  temporal: ManagedProcess;
  /** The UI server next to the real Temporal server (the dev server serves its own UI). */
  temporalUi?: ManagedProcess;
  s3: Map<string, ManagedProcess>;
  stop(): Promise<void>;
}

/** Fails with PortInUseError naming the first taken port. */
export async function assertPortsFree(ports: { port: number; what: string; variable?: string }[]): Promise<void> {
  for (const p of ports) {
    if (!(await isPortFree(p.port))) throw new PortInUseError(p.port, p.what, p.variable);
  }
}

export async function startLocalStack(opts: StackOptions): Promise<LocalStack> {
  let temporal: ManagedProcess;
  let temporalUi: ManagedProcess | undefined;
  if (opts.realTemporal) {
    ({ server: temporal, ui: temporalUi } = await realTemporal({
      ...opts.realTemporal,
      dataDir: path.join(opts.dataDir, 'temporal-server'),
      logDir: opts.logDir,
      uiPort: opts.temporalUiPort,
    }));
  } else {
    temporal = temporalServer({
      port: opts.temporalPort,
      uiPort: opts.temporalUiPort,
      dataDir: path.join(opts.dataDir, 'temporal'),
      logFile: path.join(opts.logDir, 'temporal.log'),
      dynamicConfig: opts.devTemporalDynamicConfig,
    });
  }
  const s3 = new Map<string, ManagedProcess>();
  for (const r of opts.regions) {
    s3.set(
      r.name,
      s3Server({
        region: r.name,
        port: r.port,
        dataDir: path.join(opts.dataDir, 's3', r.name),
        logFile: path.join(opts.logDir, `s3-${r.name}.log`),
        ...opts.credentials,
      }),
    );
  }
  const all = [temporal, ...s3.values()];
  const stop = async () => {
    await temporalUi?.stop();
    await Promise.allSettled(all.map((p) => p.stop()));
  };
  try {
    await Promise.all(all.map((p) => p.start()));
    await temporalUi?.start();
    await Promise.all(opts.regions.map((r) => ensureDevBucket(r, opts.credentials)));
  } catch (e) {
    await stop();
    throw e;
  }
  return { temporal, temporalUi, s3, stop };
}

async function ensureDevBucket(r: DevRegion, credentials: StackOptions['credentials']): Promise<void> {
  const driver = new S3Driver({ name: r.name, endpoint: s3Endpoint(r.port), region: 'us-east-1', bucket: DEV_BUCKET, ...credentials });
  try {
    await driver.ensureBucket();
  } finally {
    driver.close();
  }
}

/** Registers (or updates the endpoint of) each dev region as a storage location replicated by
 * default. Existing locations keep their other settings. */
export async function registerDevLocations(db: DbOrTx, regions: DevRegion[]): Promise<void> {
  for (const r of regions) {
    const endpoint = s3Endpoint(r.port);
    const [existing] = await db.select().from(storageLocations).where(eq(storageLocations.name, r.name));
    if (existing) {
      if (existing.endpoint !== endpoint) await db.update(storageLocations).set({ endpoint }).where(eq(storageLocations.id, existing.id));
      continue;
    }
    await db
      .insert(storageLocations)
      .values({ name: r.name, region: r.name, endpoint, bucket: DEV_BUCKET, pathPrefix: '', credentialsRef: DEV_CREDENTIALS_REF, replicateByDefault: true })
      .onConflictDoNothing();
  }
}
