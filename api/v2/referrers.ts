// GET /v2/<name>/referrers/<digest>: an image index of the manifests whose subject is <digest>.
import { parseDigest } from '../../registry/digest.ts';
import { listReferrers, MEDIA_TYPES } from '../../registry/manifests.ts';
import type Koa from 'koa';
import type { V2Request } from './routes.ts';

function answer(ctx: Koa.Context, manifests: unknown[]): void {
  ctx.status = 200;
  ctx.body = JSON.stringify({ schemaVersion: 2, mediaType: MEDIA_TYPES.ociIndex, manifests });
  ctx.set('Content-Type', MEDIA_TYPES.ociIndex);
}

export function emptyReferrers(ctx: Koa.Context): void {
  answer(ctx, []);
}

export async function referrers(r: V2Request, digest: string): Promise<void> {
  parseDigest(digest);
  const artifactType = typeof r.ctx.query.artifactType === 'string' && r.ctx.query.artifactType !== '' ? r.ctx.query.artifactType : undefined;
  const manifests = await listReferrers(r.s.db, r.repo.id, digest, artifactType);
  if (artifactType) r.ctx.set('OCI-Filters-Applied', 'artifactType');
  answer(r.ctx, manifests);
}
