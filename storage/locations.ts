// Storage locations: the rows of storage_locations turned into drivers. Each process keeps one
// driver per location and reloads the table when it changes (a location added, drained or
// removed by any instance).
import { asc, eq } from 'drizzle-orm';
import type { Config } from '../config.ts';
import type { DbOrTx } from '../db/client.ts';
import { storageLocations } from '../db/schema.ts';
import type { SecretBox } from '../security/secretbox.ts';
import { type StorageDriver, StorageUnavailableError } from './driver.ts';
import { S3Driver } from './s3.ts';

export type LocationRow = typeof storageLocations.$inferSelect;

export interface Location {
  id: number;
  name: string;
  region: string;
  endpoint: string;
  bucket: string;
  pathPrefix: string;
  replicateByDefault: boolean;
  state: 'active' | 'draining';
  driver: StorageDriver;
}

export class LocationConfigError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'LocationConfigError';
  }
}

/** The environment-variable prefix of the S3 servers `npm start` runs. */
export const DEV_CREDENTIALS_REF = 'env:MERIDIAN_DEV_S3';

export function sealContext(locationName: string, field: 'access' | 'secret'): string {
  return `location:${locationName}:${field}`;
}

export class LocationRegistry {
  private byId = new Map<number, Location>();
  private fingerprints = new Map<number, string>();
  private loadedAt = 0;
  private reloading: Promise<void> | undefined;

  constructor(
    private readonly db: DbOrTx,
    private readonly cfg: Pick<Config, 'devS3'>,
    private readonly secrets: SecretBox,
    private readonly env: Record<string, string | undefined> = process.env,
    /** How long a loaded table is trusted before the next read reloads it. */
    private readonly maxAgeMs = 5000,
  ) {}

  async refresh(): Promise<void> {
    const rows = await this.db.select().from(storageLocations).orderBy(asc(storageLocations.id));
    const next = new Map<number, Location>();
    for (const row of rows) {
      const fp = JSON.stringify([row.endpoint, row.bucket, row.s3Region, row.credentialsRef, row.accessKeyEnc?.toString('hex'), row.secretKeyEnc?.toString('hex')]);
      const existing = this.byId.get(row.id);
      const driver = existing && this.fingerprints.get(row.id) === fp ? existing.driver : this.createDriverOrUnusable(row);
      if (existing && existing.driver !== driver) existing.driver.close?.();
      this.fingerprints.set(row.id, fp);
      next.set(row.id, {
        id: row.id,
        name: row.name,
        region: row.region,
        endpoint: row.endpoint,
        bucket: row.bucket,
        pathPrefix: row.pathPrefix,
        replicateByDefault: row.replicateByDefault,
        state: row.state,
        driver,
      });
    }
    for (const [id, loc] of this.byId) if (!next.has(id)) loc.driver.close?.();
    this.byId = next;
    this.loadedAt = Date.now();
  }

  /** Reloads when the cached table is older than maxAgeMs; the requests that find it stale at
   * once share one reload (any reload in flight is fresh enough for them). */
  async fresh(): Promise<this> {
    if (Date.now() - this.loadedAt > this.maxAgeMs) {
      this.reloading ??= this.refresh().finally(() => {
        this.reloading = undefined;
      });
      await this.reloading;
    }
    return this;
  }

  all(): Location[] {
    return [...this.byId.values()];
  }

  get(id: number): Location | undefined {
    return this.byId.get(id);
  }

  byName(name: string): Location | undefined {
    return this.all().find((l) => l.name === name);
  }

  /** Locations in this instance's preference order, then the rest by id. */
  ordered(preference: string[]): Location[] {
    const rank = (l: Location) => {
      const i = preference.indexOf(l.name);
      return i === -1 ? preference.length : i;
    };
    return this.all().sort((a, b) => rank(a) - rank(b) || a.id - b.id);
  }

  /** One location whose credentials cannot be resolved (a key rotated away, a variable unset)
   * must not take the others down: it gets a driver that fails every call as an outage, so
   * health reports it and reads and writes go elsewhere. */
  private createDriverOrUnusable(row: LocationRow): StorageDriver {
    try {
      return this.createDriver(row);
    } catch (e) {
      return unusableDriver(row.name, e);
    }
  }

  /** Builds a driver for a location row; exported for probing a location before it is saved. */
  createDriver(row: Pick<LocationRow, 'name' | 'endpoint' | 's3Region' | 'bucket' | 'credentialsRef' | 'accessKeyEnc' | 'secretKeyEnc'>): S3Driver {
    const creds = this.resolveCredentials(row);
    return new S3Driver({ name: row.name, endpoint: row.endpoint, region: row.s3Region, bucket: row.bucket, ...creds });
  }

  private resolveCredentials(
    row: Pick<LocationRow, 'name' | 'credentialsRef' | 'accessKeyEnc' | 'secretKeyEnc'>,
  ): { accessKeyId: string; secretAccessKey: string } {
    if (row.credentialsRef === DEV_CREDENTIALS_REF) return this.cfg.devS3;
    if (row.credentialsRef.startsWith('env:')) {
      const prefix = row.credentialsRef.slice(4);
      const accessKeyId = this.env[`${prefix}_ACCESS_KEY`];
      const secretAccessKey = this.env[`${prefix}_SECRET_KEY`];
      if (!accessKeyId || !secretAccessKey) {
        throw new LocationConfigError(`location ${row.name}: ${prefix}_ACCESS_KEY and ${prefix}_SECRET_KEY must be set`);
      }
      return { accessKeyId, secretAccessKey };
    }
    if (row.credentialsRef === 'stored') {
      if (!row.accessKeyEnc || !row.secretKeyEnc) throw new LocationConfigError(`location ${row.name}: stored credentials are missing`);
      return {
        accessKeyId: this.secrets.open(row.accessKeyEnc, sealContext(row.name, 'access')),
        secretAccessKey: this.secrets.open(row.secretKeyEnc, sealContext(row.name, 'secret')),
      };
    }
    throw new LocationConfigError(`location ${row.name}: unknown credentials reference "${row.credentialsRef}"`);
  }

  close(): void {
    for (const loc of this.byId.values()) loc.driver.close?.();
    this.byId.clear();
  }
}

function unusableDriver(name: string, cause: unknown): StorageDriver {
  const fail = async (): Promise<never> => {
    throw new StorageUnavailableError(name, cause);
  };
  return {
    stat: fail,
    read: fail,
    write: fail,
    delete: fail,
    deleteMany: fail,
    presignRead: fail,
    list: fail,
    listMultipartUploads: fail,
    createMultipart: fail,
    uploadPart: fail,
    listParts: fail,
    completeMultipart: fail,
    abortMultipart: fail,
    copy: fail,
  };
}

/** Checks that every name in the instance's storage preference is a known location. */
export async function unknownPreferredLocations(db: DbOrTx, preference: string[]): Promise<string[]> {
  const rows = await db.select({ name: storageLocations.name }).from(storageLocations);
  const known = new Set(rows.map((r) => r.name));
  return preference.filter((n) => !known.has(n));
}

export async function locationByName(db: DbOrTx, name: string): Promise<LocationRow | undefined> {
  const [row] = await db.select().from(storageLocations).where(eq(storageLocations.name, name));
  return row;
}
