// Blob upload routes: POST (start, monolithic, mount), PATCH (chunk), PUT (finish), GET (status),
// DELETE (cancel).
import { presented } from '../../auth/authenticate.ts';
import { authorizeV2, insufficientScope, isInsufficientScope } from '../../auth/v2-access.ts';
import type { Principal } from '../../auth/principal.ts';
import { linkedBlob, mountBlob } from '../../registry/blobs.ts';
import { parseDigest } from '../../registry/digest.ts';
import { isRepositoryName } from '../../registry/names.ts';
import { findRepository } from '../../registry/repositories.ts';
import {
  appendChunk,
  cancelUpload,
  CHUNK_MIN_LENGTH,
  completeUpload,
  getUpload,
  putBlobToPreferred,
  startUpload,
  type UploadSession,
} from '../../registry/uploads.ts';
import { OciError } from './errors.ts';
import type { V2Request } from './routes.ts';

function uploadUrl(name: string, id: string): string {
  return `/v2/${name}/blobs/uploads/${id}`;
}

function by(p: Principal): { userId?: number; robotId?: number } {
  return p.kind === 'user' ? { userId: p.userId } : p.kind === 'robot' ? { robotId: p.robotId } : {};
}

function contentLength(r: V2Request): number | undefined {
  const raw = r.ctx.get('Content-Length');
  if (raw === '') return undefined;
  if (!/^\d+$/.test(raw)) throw new OciError('SIZE_INVALID', 'invalid Content-Length');
  return Number(raw);
}

function hasBody(r: V2Request): boolean {
  const len = contentLength(r);
  return len !== undefined ? len > 0 : r.ctx.get('Transfer-Encoding') !== '';
}

function answerProgress(r: V2Request, session: UploadSession, status: number): void {
  r.ctx.status = status;
  r.ctx.set('Location', uploadUrl(r.name, session.id));
  r.ctx.set('Range', `0-${Math.max(session.size - 1, 0)}`);
  r.ctx.set('Docker-Upload-UUID', session.id);
  r.ctx.set('Content-Length', '0');
  r.ctx.body = null;
  r.ctx.status = status;
}

function answerCreated(r: V2Request, digest: string): void {
  r.ctx.status = 201;
  r.ctx.set('Location', `/v2/${r.name}/blobs/${digest}`);
  r.ctx.set('Docker-Content-Digest', digest);
  r.ctx.set('Content-Length', '0');
  r.ctx.body = null;
  r.ctx.status = 201;
}

/** Drains an unread request body so keep-alive connections stay usable. */
function drain(r: V2Request): void {
  r.ctx.req.resume();
}

export async function startUploadRoute(r: V2Request): Promise<void> {
  const q = r.ctx.query;
  const mount = typeof q.mount === 'string' ? q.mount : undefined;
  const from = typeof q.from === 'string' ? q.from : undefined;
  if (mount !== undefined) {
    parseDigest(mount);
    if (await tryMount(r, mount, from)) {
      drain(r);
      return answerCreated(r, mount);
    }
    // Not mountable: fall through to an ordinary upload, as the spec asks.
  }
  const digest = typeof q.digest === 'string' ? q.digest : undefined;
  if (digest !== undefined) {
    parseDigest(digest);
    const committed = await putBlobToPreferred(r.s, r.repo, digest, r.ctx.req, contentLength(r));
    return answerCreated(r, committed.digest);
  }
  drain(r);
  const session = await startUpload(r.s, r.repo, by(r.principal));
  answerProgress(r, session, 202);
  r.ctx.set('OCI-Chunk-Min-Length', String(CHUNK_MIN_LENGTH));
}

/** Links a blob from another repository the principal may pull, or one it already has. */
async function tryMount(r: V2Request, digest: string, from: string | undefined): Promise<boolean> {
  const own = await linkedBlob(r.s.db, r.repo.id, digest);
  if (own) return mountBlob(r.s.db, own, r.repo.id);
  if (!from || !isRepositoryName(from)) return false;
  try {
    await authorizeV2(r.s, presented(r.ctx), { repository: from, actions: ['pull'] });
  } catch (e) {
    // The caller may pull the source but its token does not say so: as the distribution
    // registry does, ask for a token covering both repositories, and the client retries.
    if (isInsufficientScope(e)) throw insufficientScope(r.s, [`repository:${r.name}:pull,push`, `repository:${from}:pull`]);
    return false;
  }
  const source = await findRepository(r.s.db, from);
  if (!source) return false;
  const blob = await linkedBlob(r.s.db, source.id, digest);
  if (!blob) return false;
  return mountBlob(r.s.db, blob, r.repo.id);
}

function parseContentRange(raw: string): { start: number; end: number } | undefined {
  if (raw === '') return undefined;
  const m = /^(?:bytes[ =])?(\d+)-(\d+)(?:\/(?:\d+|\*))?$/.exec(raw.trim());
  if (!m) throw new OciError('RANGE_INVALID', 'invalid Content-Range', undefined, 416);
  const start = Number(m[1]);
  const end = Number(m[2]);
  if (end < start) throw new OciError('RANGE_INVALID', 'invalid Content-Range', undefined, 416);
  return { start, end };
}

export async function patchUpload(r: V2Request, id: string): Promise<void> {
  const range = parseContentRange(r.ctx.get('Content-Range'));
  const updated = await appendChunk(r.s, r.repo, id, { body: r.ctx.req, range, contentLength: contentLength(r) });
  answerProgress(r, updated, 202);
}

export async function putUpload(r: V2Request, id: string): Promise<void> {
  const digest = r.ctx.query.digest;
  if (typeof digest !== 'string') throw new OciError('DIGEST_INVALID', 'the digest query parameter is required');
  parseDigest(digest);
  const range = parseContentRange(r.ctx.get('Content-Range'));
  const last = hasBody(r) ? { body: r.ctx.req, range, contentLength: contentLength(r) } : undefined;
  if (!last) drain(r);
  const committed = await completeUpload(r.s, r.repo, id, digest, last);
  answerCreated(r, committed.digest);
}

export async function uploadStatus(r: V2Request, id: string): Promise<void> {
  const session = await getUpload(r.s, r.repo, id);
  answerProgress(r, session, 204);
}

export async function cancelUploadRoute(r: V2Request, id: string): Promise<void> {
  await cancelUpload(r.s, r.repo, id);
  r.ctx.status = 204;
}
