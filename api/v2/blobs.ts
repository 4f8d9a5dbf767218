// Blob reads (HEAD, GET with Range, redirect or proxy) and blob deletion from a repository.
import { pipeline } from 'node:stream/promises';
import { blobKey } from '../../storage/paths.ts';
import { linkedBlob, unlinkBlob } from '../../registry/blobs.ts';
import { cachedPlacementIds } from '../../replication/placements.ts';
import { parseDigest } from '../../registry/digest.ts';
import { readCandidates } from '../../registry/placement.ts';
import { ObjectNotFoundError, StorageUnavailableError } from '../../storage/driver.ts';
import type { Location } from '../../storage/locations.ts';
import { OciError } from './errors.ts';
import type { V2Request } from './routes.ts';

interface ByteRange {
  start: number;
  end: number;
}

/** A single `bytes=a-b`, `bytes=a-` or `bytes=-n` range; multiple ranges are not supported. */
function parseRange(header: string, size: number): ByteRange | undefined {
  if (header === '') return undefined;
  const m = /^bytes=(\d*)-(\d*)$/.exec(header.trim());
  if (!m || (m[1] === '' && m[2] === '')) throw rangeError(size);
  let start: number;
  let end: number;
  if (m[1] === '') {
    const n = Number(m[2]);
    if (n === 0) throw rangeError(size);
    start = Math.max(size - n, 0);
    end = size - 1;
  } else {
    start = Number(m[1]);
    end = m[2] === '' ? size - 1 : Math.min(Number(m[2]), size - 1);
  }
  if (start > end || start >= size) throw rangeError(size);
  return { start, end };
}

function rangeError(size: number): OciError {
  return new OciError('RANGE_INVALID', 'requested range not satisfiable', undefined, 416, { 'Content-Range': `bytes */${size}` });
}

export async function getBlob(r: V2Request, digest: string): Promise<void> {
  parseDigest(digest);
  const blob = await linkedBlob(r.s.db, r.repo.id, digest);
  if (!blob) throw new OciError('BLOB_UNKNOWN', 'blob unknown to registry', { digest });
  const { ctx } = r;
  ctx.set('Docker-Content-Digest', blob.digest);
  ctx.set('Accept-Ranges', 'bytes');
  ctx.set('Cache-Control', 'max-age=31536000, immutable');
  ctx.set('ETag', `"${blob.digest}"`);
  if (ctx.method === 'HEAD') {
    ctx.status = 200;
    ctx.set('Content-Type', 'application/octet-stream');
    ctx.set('Content-Length', String(blob.size));
    return;
  }
  const range = parseRange(ctx.get('Range'), blob.size);
  const candidates = await readCandidates(
    { locations: r.s.locations, health: r.s.health, preference: r.s.config.storagePreference },
    await cachedPlacementIds(r.s.db, r.s.redis, blob),
  );
  if (candidates.length === 0) throw new OciError('BLOB_UNKNOWN', 'blob has no stored copy', { digest });
  if (blob.size === 0) {
    ctx.status = 200;
    ctx.set('Content-Type', 'application/octet-stream');
    ctx.body = Buffer.alloc(0);
    return;
  }
  if (r.s.config.blobServeMode === 'redirect') {
    const loc = candidates[0]!;
    r.s.metrics.process.pulls.inc({ location: loc.name, mode: 'redirect' });
    ctx.status = 307;
    ctx.set('X-Meridian-Location', loc.name);
    ctx.set('Location', await loc.driver.presignRead(blobKey(loc.pathPrefix, blob.digest), r.s.config.presignTtlSeconds));
    ctx.body = null;
    ctx.status = 307;
    return;
  }
  await proxyFrom(r, candidates, blob.digest, blob.size, range);
}

/** Streams the blob from the first location that answers; falls back to the next on errors
 * before the first byte is sent. */
async function proxyFrom(r: V2Request, candidates: Location[], digest: string, size: number, range: ByteRange | undefined): Promise<void> {
  let lastError: unknown;
  for (const loc of candidates) {
    let read;
    try {
      read = await loc.driver.read(blobKey(loc.pathPrefix, digest), range ? { start: range.start, end: range.end } : undefined);
    } catch (e) {
      lastError = e;
      if (e instanceof StorageUnavailableError) await r.s.health.reportFailure(loc.name, e.message);
      if (e instanceof StorageUnavailableError || e instanceof ObjectNotFoundError) continue;
      throw e;
    }
    const { ctx } = r;
    r.s.metrics.process.pulls.inc({ location: loc.name, mode: 'proxy' });
    ctx.set('X-Meridian-Location', loc.name);
    ctx.status = range ? 206 : 200;
    ctx.set('Content-Type', 'application/octet-stream');
    ctx.set('Content-Length', String(read.length));
    if (range) ctx.set('Content-Range', `bytes ${range.start}-${range.end}/${size}`);
    // Bypass Koa's body handling: pipe and let backpressure pace the read from storage.
    ctx.respond = false;
    ctx.res.writeHead(ctx.status);
    await pipeline(read.body, ctx.res).catch(() => {
      // The client went away, or storage broke mid-stream; the socket is closed either way.
    });
    return;
  }
  if (lastError instanceof ObjectNotFoundError) throw new OciError('BLOB_UNKNOWN', 'blob missing from storage', { digest });
  throw lastError instanceof Error ? lastError : new Error(String(lastError));
}

export async function deleteBlob(r: V2Request, digest: string): Promise<void> {
  parseDigest(digest);
  const blob = await linkedBlob(r.s.db, r.repo.id, digest);
  if (!blob || !(await unlinkBlob(r.s.db, r.repo.id, blob.id))) throw new OciError('BLOB_UNKNOWN', 'blob unknown to repository', { digest });
  r.ctx.status = 202;
}
