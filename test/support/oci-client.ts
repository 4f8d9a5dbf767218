// A small OCI Distribution client for tests, speaking plain HTTP with fetch.
import { createHash, randomBytes } from 'node:crypto';

export function sha256(bytes: Uint8Array): string {
  return `sha256:${createHash('sha256').update(bytes).digest('hex')}`;
}

export interface OciClientOptions {
  baseUrl: string;
  /** Sent as Authorization on every request. */
  authorization?: string;
}

export class OciClient {
  constructor(readonly opts: OciClientOptions) {}

  fetch(path: string, init: RequestInit = {}): Promise<Response> {
    const headers = new Headers(init.headers);
    if (this.opts.authorization && !headers.has('Authorization')) headers.set('Authorization', this.opts.authorization);
    const url = path.startsWith('http') ? path : `${this.opts.baseUrl}${path}`;
    return fetch(url, { redirect: 'manual', ...init, headers, ...(init.body ? { duplex: 'half' } : {}) } as RequestInit);
  }

  /** POST then PUT with the whole blob. */
  async pushBlob(repo: string, bytes: Buffer): Promise<string> {
    const digest = sha256(bytes);
    const start = await this.fetch(`/v2/${repo}/blobs/uploads/`, { method: 'POST' });
    if (start.status !== 202) throw new Error(`POST upload: ${start.status} ${await start.text()}`);
    const location = start.headers.get('location')!;
    const sep = location.includes('?') ? '&' : '?';
    const put = await this.fetch(`${location}${sep}digest=${digest}`, {
      method: 'PUT',
      body: bytes,
      headers: { 'Content-Type': 'application/octet-stream' },
    });
    if (put.status !== 201) throw new Error(`PUT upload: ${put.status} ${await put.text()}`);
    return digest;
  }

  /** POST, several PATCHes of `chunkSize`, then an empty PUT. */
  async pushBlobChunked(repo: string, bytes: Buffer, chunkSize: number): Promise<string> {
    const digest = sha256(bytes);
    const start = await this.fetch(`/v2/${repo}/blobs/uploads/`, { method: 'POST' });
    let location = start.headers.get('location')!;
    for (let off = 0; off < bytes.length; off += chunkSize) {
      const chunk = bytes.subarray(off, Math.min(off + chunkSize, bytes.length));
      const r = await this.fetch(location, {
        method: 'PATCH',
        body: chunk,
        headers: { 'Content-Type': 'application/octet-stream', 'Content-Range': `${off}-${off + chunk.length - 1}` },
      });
      if (r.status !== 202) throw new Error(`PATCH: ${r.status} ${await r.text()}`);
      location = r.headers.get('location')!;
    }
    const sep = location.includes('?') ? '&' : '?';
    const put = await this.fetch(`${location}${sep}digest=${digest}`, { method: 'PUT' });
    if (put.status !== 201) throw new Error(`PUT: ${put.status} ${await put.text()}`);
    return digest;
  }

  async pushManifest(repo: string, reference: string, manifest: unknown, mediaType: string): Promise<{ digest: string; response: Response }> {
    const bytes = Buffer.from(JSON.stringify(manifest));
    const response = await this.fetch(`/v2/${repo}/manifests/${reference}`, {
      method: 'PUT',
      body: bytes,
      headers: { 'Content-Type': mediaType },
    });
    return { digest: sha256(bytes), response };
  }

  /** Follows a redirect to storage, as clients do. */
  async pullBlob(repo: string, digest: string, headers: Record<string, string> = {}): Promise<{ status: number; body: Buffer; response: Response }> {
    let r = await this.fetch(`/v2/${repo}/blobs/${digest}`, { headers });
    if (r.status === 307) r = await fetch(r.headers.get('location')!, { headers });
    return { status: r.status, body: Buffer.from(await r.arrayBuffer()), response: r };
  }
}

/** A random small OCI image: config + `layers` layers, pushed to `repo`. */
export async function pushRandomImage(
  client: OciClient,
  repo: string,
  tag: string,
  opts: { layers?: number; layerSize?: number } = {},
): Promise<{ manifestDigest: string; manifest: Record<string, unknown>; blobs: Buffer[] }> {
  const layerBlobs = Array.from({ length: opts.layers ?? 2 }, () => randomBytes(opts.layerSize ?? 1024));
  const config = Buffer.from(JSON.stringify({ architecture: 'amd64', os: 'linux', rootfs: { type: 'layers', diff_ids: [] }, nonce: randomBytes(8).toString('hex') }));
  for (const b of [config, ...layerBlobs]) await client.pushBlob(repo, b);
  const manifest = {
    schemaVersion: 2,
    mediaType: 'application/vnd.oci.image.manifest.v1+json',
    config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: sha256(config), size: config.length },
    layers: layerBlobs.map((b) => ({ mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', digest: sha256(b), size: b.length })),
  };
  const { digest, response } = await client.pushManifest(repo, tag, manifest, manifest.mediaType);
  if (response.status !== 201) throw new Error(`manifest PUT: ${response.status} ${await response.text()}`);
  return { manifestDigest: digest, manifest, blobs: [config, ...layerBlobs] };
}
