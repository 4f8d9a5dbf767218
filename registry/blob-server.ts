// Serving a blob to a client, as the distribution registry's blobserver.go does: the /v2 handler
// parses the request and writes the answer; this module decides it — whether the repository may
// use the blob, which stored copy serves it (nearest healthy location holding it, then the
// others), and whether the client is redirected to a presigned URL of that copy or the bytes are
// streamed through this process, falling back to the next copy when one cannot be read. Each
// copy's object key comes from its placement (storage/paths.ts placementKey, via readCopies).
import { Readable } from 'node:stream';
import type { BlobServeMode, Config } from '../config.ts';
import { SnapshotSeries, VersionedMemo } from '../platform/cache-versions.ts';
import type { Services } from '../platform/services.ts';
import { cachedPlacements } from '../replication/placements.ts';
import { ObjectNotFoundError, StorageUnavailableError } from '../storage/driver.ts';
import type { Location } from '../storage/locations.ts';
import { type BlobRow, servableBlob } from './blobs.ts';
import { type BlobCopy, readCopies } from './placement.ts';

export type BlobServerDeps = Pick<Services, 'db' | 'redis' | 'placement'> & {
  config: Pick<Config, 'blobServeMode' | 'presignTtlSeconds'>;
  metrics: { process: Pick<Services['metrics']['process'], 'served'> };
};

/** A byte range as the client asked for it (`bytes=a-b`, `bytes=a-`, `bytes=-n`), or a Range
 * header that could not be parsed; resolved against the blob's size here. */
export type RangeRequest = { first: number; last?: number } | { suffixLength: number } | 'malformed';

export interface BlobInfo {
  digest: string;
  size: number;
}

export type ServedBlob =
  /** HEAD: what the registry knows (a copy is recorded); storage is not touched. */
  | { kind: 'metadata'; blob: BlobInfo }
  /** GET in redirect mode: the client fetches `url` (a presigned URL of `location`'s copy). */
  | { kind: 'redirect'; blob: BlobInfo; location: string; url: string }
  /** GET streamed through the registry: `length` bytes of `body`, the whole blob or `range`. */
  | { kind: 'stream'; blob: BlobInfo; location: string | undefined; body: Readable; length: number; range?: { start: number; end: number } };

export class BlobUnknownError extends Error {
  constructor(
    readonly digest: string,
    message: string,
  ) {
    super(message);
    this.name = 'BlobUnknownError';
  }
}

export class RangeNotSatisfiableError extends Error {
  constructor(readonly size: number) {
    super('requested range not satisfiable');
    this.name = 'RangeNotSatisfiableError';
  }
}

/** The inclusive byte range a request resolves to for a blob of `size` bytes; undefined for the
 * whole blob. Multiple ranges are not supported. */
export function resolveRange(range: RangeRequest | undefined, size: number): { start: number; end: number } | undefined {
  if (range === undefined) return undefined;
  if (range === 'malformed') throw new RangeNotSatisfiableError(size);
  let start: number;
  let end: number;
  if ('suffixLength' in range) {
    if (range.suffixLength === 0) throw new RangeNotSatisfiableError(size);
    start = Math.max(size - range.suffixLength, 0);
    end = size - 1;
  } else {
    start = range.first;
    end = range.last === undefined ? size - 1 : Math.min(range.last, size - 1);
  }
  if (start > end || start >= size) throw new RangeNotSatisfiableError(size);
  return { start, end };
}

// Which blobs each repository may use, remembered per blobs version (platform/cache-versions.ts):
// every transaction that deletes a blob or a link bumps it, and so does GC's mark (a marked blob
// is unknown to pulls: HEAD too, or a client told it exists would skip pushing it), so neither is
// ever answered from here; a blob not found is not remembered (pushing it does not bump the
// version, and a push revives a marked blob).
const links = new WeakMap<object, SnapshotSeries<VersionedMemo>>();

function cachedLinkedBlob(d: Pick<BlobServerDeps, 'db'>, blobsVersion: bigint, repositoryId: number, digest: string): Promise<BlobRow | undefined> {
  let series = links.get(d.db);
  if (!series) links.set(d.db, (series = new SnapshotSeries((v) => new VersionedMemo(v))));
  return series.at(blobsVersion).memoFound(`${repositoryId} ${digest}`, () => servableBlob(d.db, repositoryId, digest));
}

/**
 * Answers a HEAD or GET of blob `digest` in repository `repositoryId`. Throws BlobUnknownError when
 * the repository may not use the blob or no location holds it, RangeNotSatisfiableError for a
 * bad range, and StorageUnavailableError when every copy is unreachable.
 */
export async function serveBlob(
  d: BlobServerDeps,
  req: {
    repositoryId: number;
    digest: string;
    method: 'GET' | 'HEAD';
    range?: RangeRequest;
    /** The blobs version read for this request: the repository's link to the blob may come from
     * this process's cache of that version. Without it, the database is asked. */
    blobsVersion?: bigint;
  },
): Promise<ServedBlob> {
  const row =
    req.blobsVersion === undefined ? await servableBlob(d.db, req.repositoryId, req.digest) : await cachedLinkedBlob(d, req.blobsVersion, req.repositoryId, req.digest);
  if (!row) throw new BlobUnknownError(req.digest, 'blob unknown to registry');
  const blob: BlobInfo = { digest: row.digest, size: row.size };
  if (req.method === 'HEAD') return { kind: 'metadata', blob };
  const range = resolveRange(req.range, blob.size);
  const candidates = await readCopies(d.placement, row.digest, await cachedPlacements(d.db, d.redis, row));
  if (candidates.length === 0) throw new BlobUnknownError(req.digest, 'blob has no stored copy');
  if (blob.size === 0) return { kind: 'stream', blob, location: undefined, body: Readable.from([]), length: 0 };
  if (d.config.blobServeMode === 'redirect') {
    // The client fetches what it asked for (its Range goes to the presigned URL too).
    const redirect = await presign(d, candidates, range ? range.end - range.start + 1 : blob.size);
    if (redirect) return { kind: 'redirect', blob, ...redirect };
  }
  return stream(d, candidates, blob, range);
}

/** A presigned URL of the best copy; undefined when no location can sign (then the bytes are
 * streamed instead). Signing is local: it does not tell whether the location is up, which is
 * what the health breaker's ranking is for. */
async function presign(d: BlobServerDeps, candidates: BlobCopy[], bytes: number): Promise<{ location: string; url: string } | undefined> {
  for (const { location: loc, key } of candidates) {
    try {
      const url = await presignedUrl(loc.driver, key, d.config.presignTtlSeconds);
      count(d, loc, 'redirect', bytes);
      return { location: loc.name, url };
    } catch (e) {
      if (!(e instanceof StorageUnavailableError)) throw e;
    }
  }
  return undefined;
}

// Presigned URLs are reused for a tenth of their lifetime. Signing through the AWS SDK costs more
// CPU than all the rest of a redirected blob GET (its middleware stack runs per URL), and a URL
// given to one authorized client may as well go to the next one asking for the same object: each
// still gets a URL valid for at least 90% of the TTL, and nobody gets anything that an earlier
// answer to them could not have given. Keyed by driver: new credentials sign anew.
const PRESIGNED_MAX = 10_000;
const presigned = new WeakMap<object, Map<string, { url: string; reuseUntil: number }>>();

async function presignedUrl(driver: Location['driver'], key: string, ttlSeconds: number): Promise<string> {
  let urls = presigned.get(driver);
  if (!urls) presigned.set(driver, (urls = new Map()));
  const cacheKey = `${ttlSeconds} ${key}`;
  const now = Date.now();
  const hit = urls.get(cacheKey);
  if (hit && hit.reuseUntil > now) return hit.url;
  const url = await driver.presignRead(key, ttlSeconds);
  if (urls.size >= PRESIGNED_MAX) urls.clear();
  urls.set(cacheKey, { url, reuseUntil: now + ttlSeconds * 100 });
  return url;
}

/** Opens the first copy that can be read; a copy that is unreachable or missing is skipped (an
 * outage also counts against the location's breaker). Once bytes flow there is no switching. */
async function stream(d: BlobServerDeps, candidates: BlobCopy[], blob: BlobInfo, range: { start: number; end: number } | undefined): Promise<ServedBlob> {
  let lastError: unknown;
  for (const { location: loc, key } of candidates) {
    try {
      const read = await loc.driver.read(key, range);
      count(d, loc, 'proxy', read.length);
      return { kind: 'stream', blob, location: loc.name, body: read.body, length: read.length, ...(range ? { range } : {}) };
    } catch (e) {
      lastError = e;
      if (e instanceof StorageUnavailableError) await d.placement.health.reportFailure(loc.name, e.message);
      if (e instanceof StorageUnavailableError || e instanceof ObjectNotFoundError) continue;
      throw e;
    }
  }
  if (lastError instanceof ObjectNotFoundError) throw new BlobUnknownError(blob.digest, 'blob missing from storage');
  throw lastError instanceof Error ? lastError : new Error(String(lastError));
}

/** Counts the pull and its bytes by where they travel: from `loc` to this instance's clients,
 * whose region is that of the instance's nearest location (a regional deployment behind a
 * global load balancer, as Quay runs one). */
function count(d: BlobServerDeps, loc: Location, mode: BlobServeMode, bytes: number): void {
  const nearest = d.placement.preference[0];
  const clientRegion = (nearest && d.placement.locations.byName(nearest)?.region) || nearest || 'unknown';
  d.metrics.process.served({ clientRegion, location: loc.name, locationRegion: loc.region }, mode, bytes);
}
