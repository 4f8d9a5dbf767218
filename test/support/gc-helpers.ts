// What the garbage-collection tests share: each region's bucket read directly (what is really
// stored, not what the database says), the placements of a blob by state, pushes that retry a
// 503 as registry clients do, and GC runs started and followed through the management API.
import { spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import path from 'node:path';
import { sql } from 'drizzle-orm';
import { createUser } from '../../auth/accounts.ts';
import type { DbHandle } from '../../db/client.ts';
import { DEV_BUCKET } from '../../devstack/stack.ts';
import { PROJECT_ROOT } from '../../devstack/tools.ts';
import { placementKey } from '../../storage/paths.ts';
import { S3Driver } from '../../storage/s3.ts';
import type { RunningWorkers } from '../../workers/main.ts';
import { basic, stackInfo, startTestApi, startTestWorkers } from './harness.ts';
import { waitFor } from './mirror-helpers.ts';
import { type OciClient, sha256 } from './oci-client.ts';

/** `bin/meridian <args>` as an operator runs it (env: MERIDIAN_URL and the credentials). */
export function meridian(args: string[], env: Record<string, string>): Promise<{ code: number | null; out: string; err: string }> {
  return new Promise((resolve) => {
    const child = spawn(path.join(PROJECT_ROOT, 'bin', 'meridian'), args, { env: { ...process.env, ...env }, cwd: '/' });
    let out = '';
    let err = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (err += d.toString()));
    child.stdin.end();
    child.on('exit', (code) => resolve({ code, out: out.trim(), err: err.trim() }));
  });
}

export function regionDrivers(): Map<string, S3Driver> {
  return new Map(
    stackInfo().regions.map((r) => [
      r.name,
      new S3Driver({ name: r.name, endpoint: `http://127.0.0.1:${r.port}`, region: 'us-east-1', bucket: DEV_BUCKET, ...stackInfo().s3Credentials }),
    ]),
  );
}

/** What the GC and orphan tests run against: a management API with a superuser of the test's
 * own, the control worker (the tests push no mirrors), and each region's bucket read directly. */
export interface GcTestStack {
  api: Awaited<ReturnType<typeof startTestApi>>;
  workers: RunningWorkers;
  drivers: Map<string, S3Driver>;
  /** MERIDIAN_URL and the superuser's credentials, for `meridian()`. */
  env: Record<string, string>;
  close(): Promise<void>;
}

export async function startGcTestStack(root: string, rootPassword: string): Promise<GcTestStack> {
  const api = await startTestApi({ MERIDIAN_SUPERUSERS: root });
  const workers = await startTestWorkers({ control: true, mirror: false });
  await api.services.db.transaction((tx) => createUser(tx, { username: root, password: rootPassword }));
  const drivers = regionDrivers();
  return {
    api,
    workers,
    drivers,
    env: { MERIDIAN_URL: api.url, MERIDIAN_USERNAME: root, MERIDIAN_PASSWORD: rootPassword },
    async close() {
      for (const d of drivers.values()) d.close();
      await workers.stop();
      await api.close();
    },
  };
}

export interface PlacementRow {
  location: string;
  state: string;
  key: string;
}

export async function placementsByDigest(db: DbHandle, digest: string): Promise<PlacementRow[]> {
  const rows = await db.db.execute<{ location: string; state: string; object_key: string | null; path_prefix: string }>(sql`
    select l.name as location, p.state, p.object_key, l.path_prefix
    from blob_placements p join blobs b on b.id = p.blob_id join storage_locations l on l.id = p.location_id
    where b.digest = ${digest} order by l.name`);
  return rows.map((r) => ({ location: r.location, state: r.state, key: placementKey(r.path_prefix, digest, r.object_key) }));
}

/** The SHA-256 digest of the object at `key` in a region's bucket, or null when it is missing. */
export async function storedDigest(driver: S3Driver, key: string): Promise<string | null> {
  if (!(await driver.stat(key))) return null;
  const read = await driver.read(key);
  const h = createHash('sha256');
  for await (const c of read.body) h.update(c as Buffer);
  return `sha256:${h.digest('hex')}`;
}

/** Waits until every region has an available placement of each digest. */
export async function waitEverywhere(db: DbHandle, digests: string[], regions: number, timeoutMs = 120_000): Promise<void> {
  await waitFor(
    `${digests.length} blobs in all ${regions} regions`,
    async () => {
      const [r] = await db.db.execute<{ n: number }>(sql`
        select count(*)::int as n from (
          select b.id from blobs b join blob_placements p on p.blob_id = b.id and p.state = 'available'
          where b.digest in (${sql.join(digests.map((d) => sql`${d}`), sql`, `)})
          group by b.id having count(*) = ${regions}) x`);
      return r?.n === digests.length;
    },
    timeoutMs,
    500,
  );
}

/** Retries what a registry answered 503 (Retry-After) to, as docker and containerd do. */
export async function retrying503<T>(fn: () => Promise<T>, counter?: { retries: number }): Promise<T> {
  for (let attempt = 0; ; attempt++) {
    try {
      return await fn();
    } catch (e) {
      if (attempt >= 20 || !/: 503 /.test((e as Error).message)) throw e;
      if (counter) counter.retries++;
      await new Promise((r) => setTimeout(r, 100 + Math.random() * 200));
    }
  }
}

/** A small image (a config and `layers` layers) that can be pushed again byte for byte. */
export interface TestImage {
  repo: string;
  tag: string;
  blobs: Buffer[];
  manifest: Buffer;
  mediaType: string;
}

export function makeImage(repo: string, tag: string, layerSize = 2048, layerCount = 1): TestImage {
  const config = Buffer.from(JSON.stringify({ architecture: 'amd64', os: 'linux', nonce: randomBytes(8).toString('hex') }));
  const layers = Array.from({ length: layerCount }, () => randomBytes(layerSize));
  const mediaType = 'application/vnd.oci.image.manifest.v1+json';
  const manifest = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType,
      config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: sha256(config), size: config.length },
      layers: layers.map((l) => ({ mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', digest: sha256(l), size: l.length })),
    }),
  );
  return { repo, tag, blobs: [config, ...layers], manifest, mediaType };
}

/** Pushes every blob (always uploading, as a client that was told the blob is unknown does),
 * then the manifest under its tag; 503s are retried. */
export async function pushImage(client: OciClient, img: TestImage, counter?: { retries: number }): Promise<void> {
  for (const b of img.blobs) await retrying503(() => client.pushBlob(img.repo, b), counter);
  await retrying503(async () => {
    const r = await client.fetch(`/v2/${img.repo}/manifests/${img.tag}`, { method: 'PUT', body: img.manifest, headers: { 'Content-Type': img.mediaType } });
    if (r.status !== 201) throw new Error(`manifest PUT: ${r.status} ${await r.text()}`);
  }, counter);
}

/** Runs `fn` over `items` with at most `limit` at a time. */
export async function inParallel<T, R>(items: T[], limit: number, fn: (item: T, index: number) => Promise<R>): Promise<R[]> {
  const out: R[] = new Array(items.length);
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(limit, items.length) }, async () => {
      while (next < items.length) {
        const i = next++;
        out[i] = await fn(items[i]!, i);
      }
    }),
  );
  return out;
}

export interface GcApiStatus {
  status: string;
  progress: {
    phase: string;
    blobsMarked: number;
    bytesMarked: number;
    markedPerLocation: { location: string; blobs: number; bytes: number }[];
    reclaimedPerLocation: { location: string; blobs: number; bytes: number }[];
    pendingLocations: string[];
    failedLocations: { location: string; reason: string }[];
    blobRowsDeleted: number;
  } | null;
}

/** The management API as a superuser. */
export function gcApi(baseUrl: string, username: string, password: string) {
  const headers = { Authorization: basic(username, password), 'Content-Type': 'application/json' };
  return {
    async start(body: Record<string, unknown>): Promise<void> {
      const r = await fetch(`${baseUrl}/api/v1/gc`, { method: 'POST', headers, body: JSON.stringify(body) });
      if (r.status !== 202) throw new Error(`POST /api/v1/gc: ${r.status} ${await r.text()}`);
    },
    async status(dryRun = false): Promise<GcApiStatus> {
      const r = await fetch(`${baseUrl}/api/v1/gc${dryRun ? '?dry_run=true' : ''}`, { headers });
      if (r.status !== 200) throw new Error(`GET /api/v1/gc: ${r.status} ${await r.text()}`);
      return (await r.json()) as GcApiStatus;
    },
    /** Waits until the run's progress satisfies `ok`. */
    async until(what: string, ok: (s: GcApiStatus) => boolean, timeoutMs = 60_000): Promise<GcApiStatus> {
      return waitFor(what, async () => {
        const s = await this.status();
        return ok(s) ? s : undefined;
      }, timeoutMs, 250);
    },
  };
}
