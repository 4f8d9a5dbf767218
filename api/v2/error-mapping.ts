// Domain errors → OCI error responses. Anything not listed here is a bug and answers 500.
import { AccountError } from '../../auth/accounts.ts';
import { isDatabaseUnavailable } from '../../db/client.ts';
import { BlobUnknownError, RangeNotSatisfiableError } from '../../registry/blob-server.ts';
import { InvalidDigestError } from '../../registry/digest.ts';
import { ManifestError } from '../../registry/manifests.ts';
import { BlobCollectedError } from '../../registry/blobs.ts';
import { NoLocationError } from '../../registry/placement.ts';
import { RepositoryError } from '../../registry/repositories.ts';
import { UploadError } from '../../registry/uploads.ts';
import { StorageUnavailableError } from '../../storage/driver.ts';
import { InputError, MethodNotAllowedError, RouteNotFoundError } from '../router.ts';
import { OciError, type OciErrorCode } from './errors.ts';

/** The OCI code of bad input, by the field it was found in. */
const CODE_OF_FIELD: Record<string, OciErrorCode> = {
  name: 'NAME_INVALID',
  reference: 'MANIFEST_INVALID',
  tag: 'MANIFEST_INVALID',
  digest: 'DIGEST_INVALID',
  mount: 'DIGEST_INVALID',
  uuid: 'BLOB_UPLOAD_UNKNOWN',
};

function inputError(e: InputError): OciError {
  const field = e.field.split(/[.[]/)[0]!;
  const code = CODE_OF_FIELD[field];
  // SIZE_INVALID is a 400 in the spec's table (an oversized token request included).
  if (e.status === 413) return new OciError('SIZE_INVALID', e.message);
  if (e.status !== 400) return new OciError('UNSUPPORTED', e.message, undefined, e.status);
  if (code === 'BLOB_UPLOAD_UNKNOWN') return new OciError(code, 'upload unknown');
  if (code) return new OciError(code, e.message, e.part === 'path' ? { [field]: 'invalid' } : undefined);
  return new OciError('UNSUPPORTED', e.message, undefined, 400);
}

export function toOciError(e: unknown): OciError | undefined {
  if (e instanceof OciError) return e;
  if (e instanceof InputError) return inputError(e);
  if (e instanceof MethodNotAllowedError) return new OciError('UNSUPPORTED', e.message, undefined, 405);
  if (e instanceof RouteNotFoundError) return new OciError('NAME_UNKNOWN', 'not found', undefined, 404);
  if (e instanceof InvalidDigestError) return new OciError('DIGEST_INVALID', e.message);
  if (e instanceof BlobUnknownError) return new OciError('BLOB_UNKNOWN', e.message, { digest: e.digest });
  if (e instanceof RangeNotSatisfiableError) {
    return new OciError('RANGE_INVALID', e.message, undefined, 416, { 'Content-Range': `bytes */${e.size}` });
  }
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
  if (e instanceof BlobCollectedError) return new OciError('UNAVAILABLE', e.message, undefined, 503, { 'Retry-After': '1' });
  if (isDatabaseUnavailable(e)) return new OciError('UNAVAILABLE', 'the database is temporarily unavailable, retry later', undefined, 503, { 'Retry-After': '2' });
  if (e instanceof NoLocationError || e instanceof StorageUnavailableError) {
    return new OciError('UNAVAILABLE', 'storage is temporarily unavailable, retry later', undefined, 503, { 'Retry-After': '5' });
  }
  return undefined;
}
