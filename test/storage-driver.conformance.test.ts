// The storage driver conformance suite: every StorageDriver backend must pass it (cf. the
// distribution registry's storage/driver/testsuites). Backends are listed in `backends`.
import { createHash, randomBytes, randomUUID } from 'node:crypto';
import { afterAll, describe, expect, it } from 'vitest';
import { type StorageDriver, ObjectExistsError, ObjectNotFoundError, MIN_PART_SIZE } from '../storage/driver.ts';
import { payloadSigningNeeded, S3Driver } from '../storage/s3.ts';
import { stackInfo } from './support/harness.ts';
import { DEV_BUCKET } from '../devstack/stack.ts';

async function readAll(d: StorageDriver, key: string, range?: { start: number; end?: number }): Promise<Buffer> {
  const r = await d.read(key, range);
  const chunks: Buffer[] = [];
  for await (const c of r.body) chunks.push(c as Buffer);
  return Buffer.concat(chunks);
}

const backends: { name: string; create: () => StorageDriver }[] = [
  {
    name: 'S3 (Versity Gateway)',
    create: () => {
      const s = stackInfo();
      const r = s.regions[0]!;
      // Small copy parts, so that the multipart copy path runs on small objects too.
      return new S3Driver({ name: r.name, endpoint: `http://127.0.0.1:${r.port}`, region: 'us-east-1', bucket: DEV_BUCKET, ...s.s3Credentials, copyPartSize: MIN_PART_SIZE });
    },
  },
  {
    // As the driver talks to a plain-HTTP endpoint on another machine: bodies' hashes signed.
    name: 'S3 (Versity Gateway), payload signed',
    create: () => {
      const s = stackInfo();
      const r = s.regions[0]!;
      return new S3Driver({ name: r.name, endpoint: `http://127.0.0.1:${r.port}`, region: 'us-east-1', bucket: DEV_BUCKET, ...s.s3Credentials, copyPartSize: MIN_PART_SIZE, signPayload: true });
    },
  },
];

describe('payload signing', () => {
  it('is left to TLS or the loopback interface, and kept for plain HTTP to another host', () => {
    expect(payloadSigningNeeded('https://s3.eu-west-1.amazonaws.com')).toBe(false);
    expect(payloadSigningNeeded('http://127.0.0.1:9000')).toBe(false);
    expect(payloadSigningNeeded('http://[::1]:9000')).toBe(false);
    expect(payloadSigningNeeded('http://localhost:9000')).toBe(false);
    expect(payloadSigningNeeded('http://10.0.0.7:9000')).toBe(true);
    expect(payloadSigningNeeded('http://minio.internal:9000')).toBe(true);
  });
});

describe.each(backends)('storage driver conformance: $name', ({ create }) => {
  const d = create();
  const base = `conformance/${randomUUID()}`;
  afterAll(() => d.close?.());

  it('writes, stats, reads and deletes an object', async () => {
    const key = `${base}/plain`;
    const body = randomBytes(1000);
    await d.write(key, body);
    expect((await d.stat(key))?.size).toBe(1000);
    expect(await readAll(d, key)).toEqual(body);
    await d.delete(key);
    expect(await d.stat(key)).toBeNull();
  });

  it('reports a missing object as ObjectNotFoundError / null, and deleting it is not an error', async () => {
    await expect(d.read(`${base}/missing`)).rejects.toBeInstanceOf(ObjectNotFoundError);
    expect(await d.stat(`${base}/missing`)).toBeNull();
    await d.delete(`${base}/missing`);
  });

  it('reads byte ranges, open-ended and closed', async () => {
    const key = `${base}/ranged`;
    const body = randomBytes(4096);
    await d.write(key, body);
    expect(await readAll(d, key, { start: 10, end: 19 })).toEqual(body.subarray(10, 20));
    const tail = await d.read(key, { start: 4000 });
    expect(tail.length).toBe(96);
    expect(tail.totalSize).toBe(4096);
    tail.body.resume();
  });

  it('refuses to overwrite with ifAbsent, keeping the first content', async () => {
    const key = `${base}/immutable`;
    await d.write(key, Buffer.from('first'), { ifAbsent: true });
    await expect(d.write(key, Buffer.from('second'), { ifAbsent: true })).rejects.toBeInstanceOf(ObjectExistsError);
    expect((await readAll(d, key)).toString()).toBe('first');
  });

  it('assembles a multipart upload, lists its parts, and honours ifAbsent on completion', async () => {
    const key = `${base}/multipart`;
    const p1 = randomBytes(MIN_PART_SIZE);
    const p2 = randomBytes(1234);
    const id = await d.createMultipart(key);
    const e1 = await d.uploadPart(key, id, 1, p1);
    const e2 = await d.uploadPart(key, id, 2, p2);
    const listed = await d.listParts(key, id);
    expect(listed.map((p) => [p.partNumber, p.size])).toEqual([
      [1, p1.length],
      [2, p2.length],
    ]);
    await d.completeMultipart(key, id, [
      { partNumber: 1, etag: e1, size: p1.length },
      { partNumber: 2, etag: e2, size: p2.length },
    ]);
    const whole = await readAll(d, key);
    expect(createHash('sha256').update(whole).digest('hex')).toBe(createHash('sha256').update(Buffer.concat([p1, p2])).digest('hex'));

    const again = await d.createMultipart(key);
    const e = await d.uploadPart(key, again, 1, Buffer.from('other'));
    await expect(d.completeMultipart(key, again, [{ partNumber: 1, etag: e, size: 5 }], { ifAbsent: true })).rejects.toBeInstanceOf(ObjectExistsError);
    expect((await d.stat(key))?.size).toBe(p1.length + p2.length);
    await d.abortMultipart(key, again);
  });

  it('aborts a multipart upload so that it can no longer be completed', async () => {
    const key = `${base}/aborted`;
    const id = await d.createMultipart(key);
    const e = await d.uploadPart(key, id, 1, Buffer.from('x'));
    await d.abortMultipart(key, id);
    await expect(d.completeMultipart(key, id, [{ partNumber: 1, etag: e, size: 1 }])).rejects.toThrow();
    expect(await d.stat(key)).toBeNull();
  });

  it('copies server-side', async () => {
    const body = randomBytes(2048);
    await d.write(`${base}/src`, body);
    await d.copy(`${base}/src`, `${base}/dst`, body.length);
    expect(await readAll(d, `${base}/dst`)).toEqual(body);
    await expect(d.copy(`${base}/src`, `${base}/dst`, body.length, { ifAbsent: true })).rejects.toBeInstanceOf(ObjectExistsError);
  });

  it('copies a large object in parts, byte for byte', async () => {
    const body = randomBytes(MIN_PART_SIZE * 3 + 12345);
    await d.write(`${base}/big-src`, body);
    await d.copy(`${base}/big-src`, `${base}/big-dst`, body.length, { ifAbsent: true });
    expect(createHash('sha256').update(await readAll(d, `${base}/big-dst`)).digest('hex')).toBe(createHash('sha256').update(body).digest('hex'));
    await expect(d.copy(`${base}/missing`, `${base}/nowhere`, body.length)).rejects.toBeInstanceOf(ObjectNotFoundError);
  });

  it('lists keys under a prefix in order, with a start-after cursor, and deletes many', async () => {
    const prefix = `${base}/list/`;
    const keys = ['a', 'b', 'c', 'd'].map((k) => prefix + k);
    for (const k of keys) await d.write(k, Buffer.from(k));
    expect((await d.list(prefix)).map((o) => o.key)).toEqual(keys);
    expect((await d.list(prefix, { startAfter: keys[1], limit: 1 })).map((o) => o.key)).toEqual([keys[2]]);
    await d.deleteMany([...keys, `${prefix}never-existed`]);
    expect(await d.list(prefix)).toEqual([]);
  });

  it('presigns a URL a plain HTTP client can read', async () => {
    const key = `${base}/presigned`;
    await d.write(key, Buffer.from('hello presigned'));
    const url = await d.presignRead(key, 60);
    const r = await fetch(url);
    expect(r.status).toBe(200);
    expect(await r.text()).toBe('hello presigned');
  });
});
