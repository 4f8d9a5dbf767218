// StorageDriver for S3-compatible object stores (AWS S3, Versity Gateway, MinIO, Ceph RGW).
import http from 'node:http';
import https from 'node:https';
import type { Readable } from 'node:stream';
import {
  AbortMultipartUploadCommand,
  CompleteMultipartUploadCommand,
  CopyObjectCommand,
  CreateMultipartUploadCommand,
  DeleteObjectCommand,
  DeleteObjectsCommand,
  GetBucketLifecycleConfigurationCommand,
  GetObjectCommand,
  HeadObjectCommand,
  type LifecycleRule,
  ListMultipartUploadsCommand,
  ListObjectsV2Command,
  ListPartsCommand,
  PutBucketLifecycleConfigurationCommand,
  PutObjectCommand,
  S3Client,
  S3ServiceException,
  UploadPartCommand,
  UploadPartCopyCommand,
} from '@aws-sdk/client-s3';
import { getSignedUrl } from '@aws-sdk/s3-request-presigner';
import { NodeHttpHandler } from '@smithy/node-http-handler';
import {
  type ByteRange,
  type CompletedPart,
  type ListedObject,
  type MultipartMarker,
  type PendingMultipart,
  type ObjectRead,
  type ObjectStat,
  type StorageDriver,
  ObjectExistsError,
  ObjectNotFoundError,
  StorageUnavailableError,
} from './driver.ts';

// The SDK warns on every start that future releases need Node 22; the machine runs Node 20.
process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';

export interface S3DriverOptions {
  /** Location name, for errors and metrics. */
  name: string;
  endpoint: string;
  region: string;
  bucket: string;
  accessKeyId: string;
  secretAccessKey: string;
  /** Seconds to wait for a TCP connection before declaring the location unreachable. */
  connectTimeoutMs?: number;
  maxSockets?: number;
  /** Objects larger than this are copied with UploadPartCopy in parts of this size. */
  copyPartSize?: number;
  /** Sign request bodies' SHA-256 (SigV4 payload signing). Default: only over plain HTTP to a
   * host other than this machine — see payloadSigningNeeded. */
  signPayload?: boolean;
}

/**
 * Whether request bodies need their SHA-256 signed. SigV4 signs a body's hash so that nobody on
 * the path can change it; the SDK computes it for every Buffer body and the server recomputes
 * it — for an upload, two more SHA-256 passes over every byte (a quarter of the API's CPU on a
 * large push, on top of the digest Meridian computes anyway). Over TLS the record MAC already
 * protects the bytes, and on loopback there is no path: there the body goes as UNSIGNED-PAYLOAD,
 * as the SDK itself sends streamed bodies.
 */
export function payloadSigningNeeded(endpoint: string): boolean {
  const url = new URL(endpoint);
  if (url.protocol === 'https:') return false;
  const host = url.hostname.replace(/^\[|\]$/g, '');
  return !(host === 'localhost' || host === '::1' || /^127\.\d+\.\d+\.\d+$/.test(host));
}

/** Server-side copies above this size use UploadPartCopy in parts of this size, a few at once
 * (S3's CopyObject stops at 5 GiB anyway). */
const COPY_PART_SIZE = 256 * 1024 * 1024;
const COPY_CONCURRENCY = 4;

export class S3Driver implements StorageDriver {
  readonly client: S3Client;
  private readonly bucket: string;
  private readonly name: string;
  private readonly copyPartSize: number;

  constructor(opts: S3DriverOptions) {
    this.bucket = opts.bucket;
    this.name = opts.name;
    this.copyPartSize = opts.copyPartSize ?? COPY_PART_SIZE;
    const agentOpts = { keepAlive: true, maxSockets: opts.maxSockets ?? 64 };
    this.client = new S3Client({
      endpoint: opts.endpoint,
      region: opts.region,
      forcePathStyle: true,
      credentials: { accessKeyId: opts.accessKeyId, secretAccessKey: opts.secretAccessKey },
      // We verify content by its digest ourselves; extra CRC trailers only cost CPU and break
      // some S3-compatible servers.
      requestChecksumCalculation: 'WHEN_REQUIRED',
      responseChecksumValidation: 'WHEN_REQUIRED',
      maxAttempts: 2,
      requestHandler: new NodeHttpHandler({
        connectionTimeout: opts.connectTimeoutMs ?? 2000,
        socketTimeout: 60_000,
        httpAgent: new http.Agent(agentOpts),
        httpsAgent: new https.Agent(agentOpts),
      }),
    });
    if (!(opts.signPayload ?? payloadSigningNeeded(opts.endpoint))) {
      // The signer uses a content hash header when one is set instead of hashing the body.
      this.client.middlewareStack.add(
        (next) => (args) => {
          const request = args.request as { headers?: Record<string, string>; body?: unknown };
          if (request.headers && request.body instanceof Uint8Array && request.body.length > 0) request.headers['x-amz-content-sha256'] = 'UNSIGNED-PAYLOAD';
          return next(args);
        },
        { step: 'build', name: 'meridianUnsignedPayload' },
      );
    }
  }

  async stat(key: string): Promise<ObjectStat | null> {
    try {
      const r = await this.client.send(new HeadObjectCommand({ Bucket: this.bucket, Key: key }));
      return { size: r.ContentLength ?? 0, etag: r.ETag };
    } catch (e) {
      if (isNotFound(e)) return null;
      throw this.wrap(e, key);
    }
  }

  async read(key: string, range?: ByteRange): Promise<ObjectRead> {
    try {
      const r = await this.client.send(
        new GetObjectCommand({
          Bucket: this.bucket,
          Key: key,
          Range: range ? `bytes=${range.start}-${range.end ?? ''}` : undefined,
        }),
      );
      const length = r.ContentLength ?? 0;
      const total = r.ContentRange ? Number(r.ContentRange.split('/')[1]) : length;
      return { body: r.Body as Readable, length, totalSize: total };
    } catch (e) {
      if (isNotFound(e)) throw new ObjectNotFoundError(key);
      throw this.wrap(e, key);
    }
  }

  async write(key: string, body: Buffer, opts: { ifAbsent?: boolean; contentType?: string } = {}): Promise<void> {
    try {
      await this.client.send(
        new PutObjectCommand({
          Bucket: this.bucket,
          Key: key,
          Body: body,
          ContentLength: body.length,
          ContentType: opts.contentType,
          IfNoneMatch: opts.ifAbsent ? '*' : undefined,
        }),
      );
    } catch (e) {
      if (isPreconditionFailed(e)) throw new ObjectExistsError(key);
      throw this.wrap(e, key);
    }
  }

  async delete(key: string): Promise<void> {
    try {
      await this.client.send(new DeleteObjectCommand({ Bucket: this.bucket, Key: key }));
    } catch (e) {
      if (isNotFound(e)) return;
      throw this.wrap(e, key);
    }
  }

  async deleteMany(keys: string[]): Promise<void> {
    for (let i = 0; i < keys.length; i += 1000) {
      const batch = keys.slice(i, i + 1000);
      try {
        const r = await this.client.send(
          new DeleteObjectsCommand({ Bucket: this.bucket, Delete: { Objects: batch.map((Key) => ({ Key })), Quiet: true } }),
        );
        const failed = (r.Errors ?? []).filter((err) => err.Code !== 'NoSuchKey');
        if (failed.length > 0) throw new Error(`could not delete ${failed.length} objects: ${failed[0]?.Code} ${failed[0]?.Message}`);
      } catch (e) {
        throw this.wrap(e, batch[0] ?? '');
      }
    }
  }

  presignRead(key: string, ttlSeconds: number): Promise<string> {
    return getSignedUrl(this.client, new GetObjectCommand({ Bucket: this.bucket, Key: key }), { expiresIn: ttlSeconds });
  }

  async list(prefix: string, opts: { startAfter?: string; limit?: number } = {}): Promise<ListedObject[]> {
    try {
      const r = await this.client.send(
        new ListObjectsV2Command({ Bucket: this.bucket, Prefix: prefix, StartAfter: opts.startAfter, MaxKeys: opts.limit ?? 1000 }),
      );
      return (r.Contents ?? []).map((o) => ({ key: o.Key ?? '', size: o.Size ?? 0, ...(o.LastModified ? { lastModified: o.LastModified } : {}) }));
    } catch (e) {
      throw this.wrap(e, prefix);
    }
  }

  async listMultipartUploads(prefix: string, opts: { after?: MultipartMarker; limit?: number } = {}): Promise<{ uploads: PendingMultipart[]; next?: MultipartMarker }> {
    try {
      const r = await this.client.send(
        new ListMultipartUploadsCommand({
          Bucket: this.bucket,
          Prefix: prefix,
          KeyMarker: opts.after?.key,
          UploadIdMarker: opts.after?.uploadId,
          MaxUploads: opts.limit ?? 1000,
        }),
      );
      const uploads = (r.Uploads ?? []).map((u) => ({ key: u.Key ?? '', uploadId: u.UploadId ?? '', ...(u.Initiated ? { initiated: u.Initiated } : {}) }));
      const last = uploads.at(-1);
      const next = r.IsTruncated ? (r.NextKeyMarker ? { key: r.NextKeyMarker, uploadId: r.NextUploadIdMarker ?? '' } : last) : undefined;
      return { uploads, ...(next ? { next } : {}) };
    } catch (e) {
      throw this.wrap(e, prefix);
    }
  }

  /** Adds the rule to the bucket's lifecycle configuration, keeping its other rules. */
  async ensureAbortIncompleteUploadsRule(prefix: string, days: number): Promise<'added' | 'present' | 'unsupported'> {
    const id = `meridian-abort-incomplete-uploads${prefix ? `-${prefix.replace(/[^A-Za-z0-9-]/g, '-')}` : ''}`;
    try {
      let rules: LifecycleRule[] = [];
      try {
        rules = (await this.client.send(new GetBucketLifecycleConfigurationCommand({ Bucket: this.bucket }))).Rules ?? [];
      } catch (e) {
        if ((e as { name?: string }).name !== 'NoSuchLifecycleConfiguration') throw e;
      }
      const mine = rules.find((r) => r.ID === id);
      if (mine?.AbortIncompleteMultipartUpload?.DaysAfterInitiation === days && mine.Status === 'Enabled') return 'present';
      const rule: LifecycleRule = { ID: id, Status: 'Enabled', Filter: { Prefix: prefix }, AbortIncompleteMultipartUpload: { DaysAfterInitiation: days } };
      await this.client.send(
        new PutBucketLifecycleConfigurationCommand({ Bucket: this.bucket, LifecycleConfiguration: { Rules: [...rules.filter((r) => r.ID !== id), rule] } }),
      );
      return 'added';
    } catch (e) {
      if (lifecycleUnsupported(e)) return 'unsupported';
      throw this.wrap(e, '');
    }
  }

  async createMultipart(key: string, opts: { contentType?: string } = {}): Promise<string> {
    try {
      const r = await this.client.send(new CreateMultipartUploadCommand({ Bucket: this.bucket, Key: key, ContentType: opts.contentType }));
      if (!r.UploadId) throw new Error('CreateMultipartUpload returned no UploadId');
      return r.UploadId;
    } catch (e) {
      throw this.wrap(e, key);
    }
  }

  async uploadPart(key: string, uploadId: string, partNumber: number, body: Buffer): Promise<string> {
    try {
      const r = await this.client.send(
        new UploadPartCommand({ Bucket: this.bucket, Key: key, UploadId: uploadId, PartNumber: partNumber, Body: body, ContentLength: body.length }),
      );
      if (!r.ETag) throw new Error('UploadPart returned no ETag');
      return r.ETag;
    } catch (e) {
      if (isNoSuchUpload(e)) throw new ObjectNotFoundError(`${key}?uploadId=${uploadId}`);
      throw this.wrap(e, key);
    }
  }

  async listParts(key: string, uploadId: string): Promise<CompletedPart[]> {
    const parts: CompletedPart[] = [];
    let marker: string | undefined;
    try {
      for (;;) {
        const r = await this.client.send(new ListPartsCommand({ Bucket: this.bucket, Key: key, UploadId: uploadId, PartNumberMarker: marker }));
        for (const p of r.Parts ?? []) parts.push({ partNumber: p.PartNumber ?? 0, etag: p.ETag ?? '', size: p.Size ?? 0 });
        if (!r.IsTruncated || !r.NextPartNumberMarker) break;
        marker = r.NextPartNumberMarker;
      }
      return parts;
    } catch (e) {
      if (isNoSuchUpload(e) || isNotFound(e)) throw new ObjectNotFoundError(`${key}?uploadId=${uploadId}`);
      throw this.wrap(e, key);
    }
  }

  async completeMultipart(key: string, uploadId: string, parts: CompletedPart[], opts: { ifAbsent?: boolean } = {}): Promise<void> {
    try {
      await this.client.send(
        new CompleteMultipartUploadCommand({
          Bucket: this.bucket,
          Key: key,
          UploadId: uploadId,
          MultipartUpload: { Parts: parts.map((p) => ({ PartNumber: p.partNumber, ETag: p.etag })) },
          IfNoneMatch: opts.ifAbsent ? '*' : undefined,
        }),
      );
    } catch (e) {
      if (isPreconditionFailed(e)) throw new ObjectExistsError(key);
      if (isNoSuchUpload(e)) throw new ObjectNotFoundError(`${key}?uploadId=${uploadId}`);
      throw this.wrap(e, key);
    }
  }

  async abortMultipart(key: string, uploadId: string): Promise<void> {
    try {
      await this.client.send(new AbortMultipartUploadCommand({ Bucket: this.bucket, Key: key, UploadId: uploadId }));
    } catch (e) {
      if (isNoSuchUpload(e) || isNotFound(e)) return;
      throw this.wrap(e, key);
    }
  }

  async copy(fromKey: string, toKey: string, size: number, opts: { ifAbsent?: boolean } = {}): Promise<void> {
    const source = `${this.bucket}/${fromKey.split('/').map(encodeURIComponent).join('/')}`;
    // Not every S3 server honours If-None-Match on copies; keys we copy to are content addressed,
    // so checking first is enough (a racing writer writes the same bytes).
    if (opts.ifAbsent && (await this.stat(toKey))) throw new ObjectExistsError(toKey);
    try {
      if (size <= this.copyPartSize) {
        await this.client.send(
          new CopyObjectCommand({ Bucket: this.bucket, Key: toKey, CopySource: source, IfNoneMatch: opts.ifAbsent ? '*' : undefined }),
        );
        return;
      }
    } catch (e) {
      if (isPreconditionFailed(e)) throw new ObjectExistsError(toKey);
      if (isNotFound(e)) throw new ObjectNotFoundError(fromKey);
      throw this.wrap(e, toKey);
    }
    const uploadId = await this.createMultipart(toKey);
    try {
      // Ranges copied a few at a time: servers copy parts in parallel faster than one by one.
      const ranges: { n: number; start: number; end: number }[] = [];
      for (let start = 0, n = 1; start < size; start += this.copyPartSize, n++) ranges.push({ n, start, end: Math.min(start + this.copyPartSize, size) - 1 });
      const parts: CompletedPart[] = [];
      let next = 0;
      await Promise.all(
        Array.from({ length: Math.min(COPY_CONCURRENCY, ranges.length) }, async () => {
          while (next < ranges.length) {
            const r = ranges[next++]!;
            const out = await this.client.send(
              new UploadPartCopyCommand({
                Bucket: this.bucket,
                Key: toKey,
                UploadId: uploadId,
                PartNumber: r.n,
                CopySource: source,
                CopySourceRange: `bytes=${r.start}-${r.end}`,
              }),
            );
            parts.push({ partNumber: r.n, etag: out.CopyPartResult?.ETag ?? '', size: r.end - r.start + 1 });
          }
        }),
      );
      parts.sort((a, b) => a.partNumber - b.partNumber);
      await this.completeMultipart(toKey, uploadId, parts, opts);
    } catch (e) {
      await this.abortMultipart(toKey, uploadId).catch(() => {});
      if (e instanceof ObjectExistsError) throw e;
      if (isNotFound(e)) throw new ObjectNotFoundError(fromKey);
      throw this.wrap(e, toKey);
    }
  }

  /** Bucket creation, for `npm start` and the tests; existing buckets are fine. */
  async ensureBucket(): Promise<void> {
    const { CreateBucketCommand } = await import('@aws-sdk/client-s3');
    try {
      await this.client.send(new CreateBucketCommand({ Bucket: this.bucket }));
    } catch (e) {
      const name = (e as { name?: string }).name;
      if (name === 'BucketAlreadyOwnedByYou' || name === 'BucketAlreadyExists') return;
      throw this.wrap(e, '');
    }
  }

  close(): void {
    this.client.destroy();
  }

  private wrap(e: unknown, key: string): Error {
    if (e instanceof ObjectNotFoundError || e instanceof ObjectExistsError || e instanceof StorageUnavailableError) return e;
    if (e instanceof S3ServiceException) {
      const status = e.$metadata.httpStatusCode ?? 0;
      if (status >= 500 || status === 0) return new StorageUnavailableError(this.name, e);
      // 4xx other than the above are configuration problems (credentials, bucket): surface them.
      const err = new Error(`storage location ${this.name}: ${e.name} (${status}) on ${key}: ${e.message}`);
      err.name = 'StorageRequestError';
      return err;
    }
    return new StorageUnavailableError(this.name, e);
  }
}

function statusOf(e: unknown): number | undefined {
  return (e as { $metadata?: { httpStatusCode?: number } })?.$metadata?.httpStatusCode;
}
function isNotFound(e: unknown): boolean {
  const name = (e as { name?: string })?.name;
  return name === 'NotFound' || name === 'NoSuchKey' || statusOf(e) === 404;
}
function isNoSuchUpload(e: unknown): boolean {
  return (e as { name?: string })?.name === 'NoSuchUpload';
}
function isPreconditionFailed(e: unknown): boolean {
  const name = (e as { name?: string })?.name;
  return name === 'PreconditionFailed' || statusOf(e) === 412;
}

/** The server has no bucket lifecycle configuration (Versity's posix backend, some gateways):
 * NotImplemented (501), or a 4xx naming the operation as unsupported. */
function lifecycleUnsupported(e: unknown): boolean {
  const name = (e as { name?: string })?.name ?? '';
  const status = statusOf(e);
  return name === 'NotImplemented' || status === 501 || /NotImplemented|not ?supported|unsupported/i.test(`${name} ${(e as Error)?.message ?? ''}`);
}
