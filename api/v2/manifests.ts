// Manifest routes: GET/HEAD by tag or digest, PUT (with `?tag=` parameters), DELETE.
import { isDigest } from '../../registry/digest.ts';
import {
  MAX_MANIFEST_BYTES,
  deleteManifest,
  deleteTag,
  manifestByDigest,
  putManifest,
  resolveManifest,
} from '../../registry/manifests.ts';
import { isTag } from '../../registry/names.ts';
import { OciError } from './errors.ts';
import type { V2Request } from './routes.ts';

function checkReference(reference: string): void {
  if (!isDigest(reference) && !isTag(reference)) {
    throw new OciError('MANIFEST_INVALID', 'reference is neither a valid tag nor a valid digest', { reference: reference.slice(0, 200) });
  }
}

export async function getManifest(r: V2Request, reference: string): Promise<void> {
  checkReference(reference);
  const m = await resolveManifest(r.s.db, r.repo.id, reference);
  if (!m) throw new OciError('MANIFEST_UNKNOWN', 'manifest unknown', { reference });
  r.ctx.status = 200;
  r.ctx.set('Content-Type', m.mediaType);
  r.ctx.set('Docker-Content-Digest', m.digest);
  r.ctx.set('ETag', `"${m.digest}"`);
  r.ctx.body = m.content;
}

/** Reads at most `limit` bytes of the request body; more is an error (never buffered). */
async function readBody(r: V2Request, limit: number): Promise<Buffer> {
  const declared = r.ctx.get('Content-Length');
  if (declared !== '' && Number(declared) > limit) {
    r.ctx.req.resume();
    throw new OciError('SIZE_INVALID', `manifest is larger than ${limit} bytes`, undefined, 413);
  }
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const c of r.ctx.req) {
    size += (c as Buffer).length;
    if (size > limit) {
      r.ctx.req.resume();
      throw new OciError('SIZE_INVALID', `manifest is larger than ${limit} bytes`, undefined, 413);
    }
    chunks.push(c as Buffer);
  }
  return Buffer.concat(chunks);
}

export async function putManifestRoute(r: V2Request, reference: string): Promise<void> {
  checkReference(reference);
  const digestReference = isDigest(reference) ? reference : undefined;
  // Tags to set: the reference when it is a tag, plus any `?tag=` parameters (OCI 1.1).
  const tagParams = ([] as string[]).concat(r.ctx.query.tag ?? []);
  for (const t of tagParams) if (!isTag(t)) throw new OciError('MANIFEST_INVALID', `invalid tag ${t.slice(0, 200)}`);
  const tags = [...new Set([...(digestReference ? [] : [reference]), ...tagParams])];
  const bytes = await readBody(r, MAX_MANIFEST_BYTES);
  const result = await r.s.db.transaction((tx) =>
    putManifest(tx, r.repo, { bytes, contentType: r.ctx.get('Content-Type') || undefined, digestReference, tags }),
  );
  r.ctx.status = 201;
  r.ctx.set('Location', `/v2/${r.name}/manifests/${result.digest}`);
  r.ctx.set('Docker-Content-Digest', result.digest);
  if (result.subject) r.ctx.set('OCI-Subject', result.subject);
  for (const t of tagParams) r.ctx.append('OCI-Tag', t);
  r.ctx.set('Content-Length', '0');
  r.ctx.body = null;
  r.ctx.status = 201;
}

export async function deleteManifestRoute(r: V2Request, reference: string): Promise<void> {
  checkReference(reference);
  if (isDigest(reference)) {
    if (!(await manifestByDigest(r.s.db, r.repo.id, reference))) throw new OciError('MANIFEST_UNKNOWN', 'manifest unknown', { reference });
    await r.s.db.transaction((tx) => deleteManifest(tx, r.repo.id, reference));
  } else if (!(await deleteTag(r.s.db, r.repo.id, reference))) {
    throw new OciError('MANIFEST_UNKNOWN', 'tag unknown', { reference });
  }
  r.ctx.status = 202;
}
