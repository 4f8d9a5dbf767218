// Blob reads (HEAD, GET with Range) and blob deletion from a repository. Which copy serves a
// read, and whether the client is redirected or the bytes streamed, is the blob server's call
// (registry/blob-server.ts); this file parses the request and writes the answer.
import { pipeline } from 'node:stream/promises';
import { linkedBlob, unlinkBlob } from '../../registry/blobs.ts';
import { type RangeRequest, serveBlob } from '../../registry/blob-server.ts';
import { parseDigest } from '../../registry/digest.ts';
import { OciError } from './errors.ts';
import type { V2Request } from './routes.ts';

/** A single `bytes=a-b`, `bytes=a-` or `bytes=-n`; anything else is 'malformed'. */
function parseRange(header: string): RangeRequest | undefined {
  if (header === '') return undefined;
  const m = /^bytes=(\d{0,15})-(\d{0,15})$/.exec(header.trim());
  if (!m || (m[1] === '' && m[2] === '')) return 'malformed';
  if (m[1] === '') return { suffixLength: Number(m[2]) };
  return { first: Number(m[1]), ...(m[2] === '' ? {} : { last: Number(m[2]) }) };
}

export async function getBlob(r: V2Request, digest: string): Promise<void> {
  parseDigest(digest);
  const { ctx } = r;
  const served = await serveBlob(r.s, {
    repositoryId: r.repo.id,
    digest,
    method: ctx.method === 'HEAD' ? 'HEAD' : 'GET',
    range: parseRange(ctx.get('Range')),
    blobsVersion: r.versions.blobs,
  });
  const { blob } = served;
  ctx.set('Docker-Content-Digest', blob.digest);
  ctx.set('Accept-Ranges', 'bytes');
  ctx.set('Cache-Control', 'max-age=31536000, immutable');
  ctx.set('ETag', `"${blob.digest}"`);
  if (served.kind === 'metadata') {
    ctx.status = 200;
    ctx.set('Content-Type', 'application/octet-stream');
    ctx.set('Content-Length', String(blob.size));
    return;
  }
  if (served.location) ctx.set('X-Meridian-Location', served.location);
  if (served.kind === 'redirect') {
    ctx.status = 307;
    ctx.set('Location', served.url);
    ctx.body = null;
    ctx.status = 307;
    return;
  }
  ctx.status = served.range ? 206 : 200;
  ctx.set('Content-Type', 'application/octet-stream');
  ctx.set('Content-Length', String(served.length));
  if (served.range) ctx.set('Content-Range', `bytes ${served.range.start}-${served.range.end}/${blob.size}`);
  // Bypass Koa's body handling: pipe and let backpressure pace the read from storage.
  ctx.respond = false;
  ctx.res.writeHead(ctx.status);
  await pipeline(served.body, ctx.res).catch(() => {
    // The client went away, or storage broke mid-stream; the socket is closed either way.
  });
}

export async function deleteBlob(r: V2Request, digest: string): Promise<void> {
  parseDigest(digest);
  const blob = await linkedBlob(r.s.db, r.repo.id, digest);
  if (!blob || !(await unlinkBlob(r.s.db, r.repo.id, blob.id))) throw new OciError('BLOB_UNKNOWN', 'blob unknown to repository', { digest });
  r.ctx.status = 202;
}
