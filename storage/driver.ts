// The storage driver interface: the small set of object-store operations Meridian needs, in the
// shape of the CNCF distribution registry's StorageDriver. Every backend must pass the suite in
// test/storage-driver.conformance.test.ts. Nothing here knows about digests or key layout.
import type { Readable } from 'node:stream';

export interface ObjectStat {
  size: number;
  etag: string | undefined;
}

export interface ListedObject {
  key: string;
  size: number;
  lastModified?: Date;
}

export interface PendingMultipart {
  key: string;
  uploadId: string;
  initiated?: Date;
}

/** Where a listing of multipart uploads continues. */
export interface MultipartMarker {
  key: string;
  uploadId: string;
}

export interface ByteRange {
  /** First byte, inclusive. */
  start: number;
  /** Last byte, inclusive; open-ended when absent. */
  end?: number;
}

export interface ObjectRead {
  body: Readable;
  /** Bytes in `body`. */
  length: number;
  /** Size of the whole object. */
  totalSize: number;
}

export interface CompletedPart {
  partNumber: number;
  etag: string;
  size: number;
}

export interface StorageDriver {
  /** HEAD; null when the object does not exist. */
  stat(key: string): Promise<ObjectStat | null>;
  /** GET, optionally a byte range; throws ObjectNotFoundError when absent. */
  read(key: string, range?: ByteRange): Promise<ObjectRead>;
  /** PUT of a small object held in memory. With ifAbsent the write fails with
   * ObjectExistsError rather than replace an existing object. */
  write(key: string, body: Buffer, opts?: { ifAbsent?: boolean; contentType?: string }): Promise<void>;
  delete(key: string): Promise<void>;
  /** Deletes many keys; missing ones are not an error. */
  deleteMany(keys: string[]): Promise<void>;
  /** A URL that lets a client GET the object directly for ttlSeconds. */
  presignRead(key: string, ttlSeconds: number): Promise<string>;
  /** Keys under a prefix, in key order, starting after `startAfter`. */
  list(prefix: string, opts?: { startAfter?: string; limit?: number }): Promise<ListedObject[]>;
  /** Multipart uploads begun and neither completed nor aborted, under a prefix, in key order. */
  listMultipartUploads(prefix: string, opts?: { after?: MultipartMarker; limit?: number }): Promise<{ uploads: PendingMultipart[]; next?: MultipartMarker }>;
  /** Makes the store abort multipart uploads under `prefix` left incomplete for `days` days (an
   * S3 lifecycle rule). `unsupported` when the server has no lifecycle configuration. */
  ensureAbortIncompleteUploadsRule?(prefix: string, days: number): Promise<'added' | 'present' | 'unsupported'>;

  createMultipart(key: string, opts?: { contentType?: string }): Promise<string>;
  uploadPart(key: string, uploadId: string, partNumber: number, body: Buffer): Promise<string>;
  listParts(key: string, uploadId: string): Promise<CompletedPart[]>;
  /** With ifAbsent the completion fails with ObjectExistsError instead of replacing an object. */
  completeMultipart(key: string, uploadId: string, parts: CompletedPart[], opts?: { ifAbsent?: boolean }): Promise<void>;
  abortMultipart(key: string, uploadId: string): Promise<void>;
  /** Server-side copy within this driver's bucket (multipart copy for large objects). */
  copy(fromKey: string, toKey: string, size: number, opts?: { ifAbsent?: boolean }): Promise<void>;
  /** Releases connections. */
  close?(): void;
}

export class ObjectNotFoundError extends Error {
  constructor(readonly key: string) {
    super(`object not found: ${key}`);
    this.name = 'ObjectNotFoundError';
  }
}

export class ObjectExistsError extends Error {
  constructor(readonly key: string) {
    super(`object already exists: ${key}`);
    this.name = 'ObjectExistsError';
  }
}

/** The storage could not be reached or failed (5xx, timeouts, refused connections). Callers treat
 * it as a health signal for the location and retry elsewhere or later. */
export class StorageUnavailableError extends Error {
  constructor(
    readonly location: string,
    override readonly cause: unknown,
  ) {
    super(`storage location ${location} unavailable: ${cause instanceof Error ? cause.message : String(cause)}`);
    this.name = 'StorageUnavailableError';
  }
}

/** S3 parts other than the last must be at least 5 MiB; we use larger parts for throughput. */
export const MIN_PART_SIZE = 5 * 1024 * 1024;
export const DEFAULT_PART_SIZE = 16 * 1024 * 1024;
export const MAX_PARTS = 10_000;
