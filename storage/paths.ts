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

/**
 * Where a blob's bytes are in a location: the object its placement recorded (a chunked upload's
 * own object, which becomes the blob instead of being copied to the content address), else the
 * content address. Every reader of placed bytes — pulls, replication sources, removal, GC,
 * scrub — resolves keys here.
 */
export function placementKey(prefix: string, digest: string, objectKey: string | null | undefined): string {
  return objectKey ?? blobKey(prefix, digest);
}

/**
 * Where a chunked upload's bytes collect before its digest is known; once verified, the object
 * at this key *is* the blob (its placement records the key). Outside `_uploads/` on purpose:
 * everything under `_uploads/` is scratch (tails) that may be expired by age, this is not. A
 * key here with no upload session and no placement referring to it is an orphan.
 */
export function uploadDataKey(prefix: string, uploadId: string): string {
  return joinKey(prefix, '_blobs', uploadId);
}

/** Prefix of the objects chunked uploads wrote (see uploadDataKey), for orphan scans. */
export function uploadedBlobsPrefix(prefix: string): string {
  return joinKey(prefix, '_blobs') + '/';
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
