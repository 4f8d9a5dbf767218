// The one module that knows where things live inside a storage location (cf. the distribution
// registry's registry/storage/paths.go). Blob keys are content addressed, so a key is only ever
// written with one content.
import { parseDigest } from '../registry/digest.ts';

function joinKey(prefix: string, ...parts: string[]): string {
  const clean = prefix.replace(/^\/+|\/+$/g, '');
  return [clean, ...parts].filter((p) => p !== '').join('/');
}

/** `<prefix>/sha256/<first 2 hex>/<hex>` */
export function blobKey(prefix: string, digest: string): string {
  const { algorithm, hex } = parseDigest(digest);
  return joinKey(prefix, algorithm, hex.slice(0, 2), hex);
}

/** Where an upload's bytes collect before its digest is known. */
export function uploadDataKey(prefix: string, uploadId: string): string {
  return joinKey(prefix, '_uploads', uploadId, 'data');
}

/** Bytes of an upload that do not yet fill a multipart part. */
export function uploadTailKey(prefix: string, uploadId: string, version: number): string {
  return joinKey(prefix, '_uploads', uploadId, `tail.${version}`);
}

export function uploadsPrefix(prefix: string): string {
  return joinKey(prefix, '_uploads') + '/';
}

/** Scratch objects written by the end-to-end health check. */
export function healthProbeKey(prefix: string, probeId: string): string {
  return joinKey(prefix, '_health', probeId);
}

/** Prefix under which every blob of a location lives (for listing in backfill and removal). */
export function blobsPrefix(prefix: string, algorithm: 'sha256' | 'sha512' = 'sha256'): string {
  return joinKey(prefix, algorithm) + '/';
}
