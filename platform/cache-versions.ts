// The versions that this process's caches are keyed by, and the snapshots cached under them.
//
// - `access`: bumped by triggers in every transaction that changes what authorization reads
//   (accounts, robots, memberships, grants, repositories, mirror robots; migration 0006);
// - `blobs`: bumped by triggers in every transaction that deletes a blob row or a repository's
//   link to a blob (GC, a blob or repository deleted; migration 0008). Adding a blob or a link
//   does not bump it: caches under it only remember what was found, never that something was
//   missing. (Which locations hold a copy is cached in Redis with its own epoch:
//   replication/placements.ts.)
//
// A request reads both in one query before using any cache, and answers from the snapshots of
// what it read. The query is shared by concurrent requests without weakening "the very next
// request sees a change": a request only uses a read that *started after it arrived*, so the
// read sees every change committed before the client sent it. At most one read is in flight
// per process; requests arriving meanwhile wait for the next one, which starts when the current
// one returns. Idle, that is one query per request as before; under load, one query per round
// trip for all requests in flight, instead of one each (and a pool queue) per request.
import type postgres from 'postgres';

export interface CacheVersions {
  access: bigint;
  blobs: bigint;
}

const noop = () => {};

class VersionReader {
  private running: Promise<CacheVersions> | undefined;
  private queued: Promise<CacheVersions> | undefined;

  constructor(private readonly sql: postgres.Sql) {}

  read(): Promise<CacheVersions> {
    if (!this.running) return this.launch();
    // The read in flight started before this request: wait for the next one.
    this.queued ??= this.running.then(noop, noop).then(() => {
      this.queued = undefined;
      return this.launch();
    });
    return this.queued;
  }

  private launch(): Promise<CacheVersions> {
    const reading: Promise<CacheVersions> = this.query().finally(() => {
      if (this.running === reading) this.running = undefined;
    });
    this.running = reading;
    return reading;
  }

  private async query(): Promise<CacheVersions> {
    const [row] = await this.sql<{ access: string | null; blobs: string | null }[]>`
      select (select version from access_version where id = 1) as access,
             (select version from blob_version where id = 1) as blobs`;
    if (!row || row.access === null || row.blobs === null) throw new Error('access_version or blob_version has no row: run the database migrations');
    return { access: BigInt(row.access), blobs: BigInt(row.blobs) };
  }
}

const readers = new WeakMap<postgres.Sql, VersionReader>();

/** The cache versions as of now: a read that started after this call (see above). */
export function readCacheVersions(sql: postgres.Sql): Promise<CacheVersions> {
  let reader = readers.get(sql);
  if (!reader) readers.set(sql, (reader = new VersionReader(sql)));
  return reader.read();
}

/** Entries per snapshot before it starts over (a bound on memory, not a tuning knob). */
const SNAPSHOT_MAX = 20_000;

/** What this process remembers under one version. */
export class VersionedMemo {
  private readonly entries = new Map<string, Promise<unknown>>();

  constructor(readonly version: bigint) {}

  /** The value under `key`, loading it once per snapshot (concurrent misses share one load; a
   * failed load is forgotten). Callers must not mutate what they get: it is shared. */
  memo<T>(key: string, load: () => Promise<T>): Promise<T> {
    return this.remember(key, load, () => true);
  }

  /** As memo, but a load that finds nothing (undefined) is not remembered: for caches whose
   * version is not bumped when the thing appears. */
  memoFound<T>(key: string, load: () => Promise<T | undefined>): Promise<T | undefined> {
    return this.remember(key, load, (v) => v !== undefined);
  }

  private remember<T>(key: string, load: () => Promise<T>, keep: (v: T) => boolean): Promise<T> {
    const hit = this.entries.get(key) as Promise<T> | undefined;
    if (hit) return hit;
    if (this.entries.size >= SNAPSHOT_MAX) this.entries.clear();
    const loading = load();
    this.entries.set(key, loading);
    const forget = () => {
      if (this.entries.get(key) === loading) this.entries.delete(key);
    };
    loading.then((v) => {
      if (!keep(v)) forget();
    }, forget);
    return loading;
  }
}

/** The snapshots of one kind of cache: the latest version's is kept and shared. */
export class SnapshotSeries<S extends VersionedMemo> {
  private latest: S | undefined;

  constructor(private readonly create: (version: bigint) => S) {}

  /** The snapshot for `version`. A request whose version was overtaken by a newer one (reads
   * answered out of order) gets a throw-away snapshot, never the newer one. */
  at(version: bigint): S {
    const current = this.latest;
    if (current && current.version === version) return current;
    if (current && current.version > version) return this.create(version);
    return (this.latest = this.create(version));
  }
}
