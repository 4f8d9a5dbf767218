// Domain errors → OCI error responses. Anything not listed here is a bug and answers 500.
import { AccountError } from '../../auth/accounts.ts';
import { InvalidDigestError } from '../../registry/digest.ts';
import { ManifestError } from '../../registry/manifests.ts';
import { NoLocationError } from '../../registry/placement.ts';
import { RepositoryError } from '../../registry/repositories.ts';
import { UploadError } from '../../registry/uploads.ts';
import { StorageUnavailableError } from '../../storage/driver.ts';
import { OciError } from './errors.ts';

export function toOciError(e: unknown): OciError | undefined {
  if (e instanceof OciError) return e;
  if (e instanceof InvalidDigestError) return new OciError('DIGEST_INVALID', e.message);
  if (e instanceof UploadError) {
    if (e.code === 'RANGE_INVALID' && e.session) {
      return new OciError('RANGE_INVALID', e.message, undefined, 416, {
        Range: `0-${Math.max(e.session.size - 1, 0)}`,
        'Docker-Upload-UUID': e.session.id,
      });
    }
    return new OciError(e.code === 'RANGE_INVALID' ? 'BLOB_UPLOAD_INVALID' : e.code, e.message);
  }
  if (e instanceof ManifestError) {
    if (e.code === 'TAG_INVALID') return new OciError('MANIFEST_INVALID', e.message, e.detail);
    if (e.code === 'SIZE_INVALID') return new OciError('SIZE_INVALID', e.message, e.detail, 413);
    return new OciError(e.code, e.message, e.detail);
  }
  if (e instanceof RepositoryError || e instanceof AccountError) {
    if (e.kind === 'invalid') return new OciError('NAME_INVALID', e.message);
    if (e.kind === 'not_found') return new OciError('NAME_UNKNOWN', e.message);
    if (e.kind === 'forbidden') return new OciError('DENIED', e.message);
    return new OciError('UNSUPPORTED', e.message, undefined, e.kind === 'conflict' ? 409 : 400);
  }
  if (e instanceof NoLocationError || e instanceof StorageUnavailableError) {
    return new OciError('UNAVAILABLE', 'storage is temporarily unavailable, retry later', undefined, 503, { 'Retry-After': '5' });
  }
  return undefined;
}
