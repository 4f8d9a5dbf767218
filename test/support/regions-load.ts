// A steady push/pull load on the region topology: in each region, one client at a time pushes a
// small image (a config and a layer, then its manifest under a tag of its own), then pulls an
// image pushed in that region earlier (manifest, then each blob, digests checked). Every request
// is recorded with its region, outcome and the location that served a blob, so a fault test can
// say how many failed, where and when — and afterwards pull every acknowledged image back.
import { randomBytes } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { type OciClient, sha256 } from './oci-client.ts';
import type { TopologyFixture } from './regions-topology.ts';

export type LoadRequestKind = 'push blob' | 'push manifest' | 'pull manifest' | 'pull blob';

export interface LoadRequest {
  region: string;
  kind: LoadRequestKind;
  at: number;
  ok: boolean;
  /** HTTP status, or the error's message when no answer came. */
  outcome: string;
  /** A pulled blob: the location that served it (X-Meridian-Location). */
  location?: string;
}

/** An image whose manifest PUT was acknowledged (201): it must pull back, byte for byte. */
export interface PushedImage {
  region: string;
  tag: string;
  manifest: Buffer;
  manifestDigest: string;
  blobs: { digest: string; size: number }[];
}

export interface RegionSummary {
  total: number;
  failed: number;
  outcomes: Record<string, number>;
}

const MANIFEST_TYPE = 'application/vnd.oci.image.manifest.v1+json';

export class RegionLoad {
  readonly requests: LoadRequest[] = [];
  /** Blobs whose push was acknowledged (a 201): they must never be lost. */
  readonly pushed: { region: string; digest: string; size: number }[] = [];
  readonly images: PushedImage[] = [];
  private running = false;
  private loops: Promise<void>[] = [];
  private seq = 0;

  constructor(
    private readonly f: TopologyFixture,
    readonly repo: string,
    private readonly regions: string[],
    /** Per request; a stalled request counts as failed after this long. */
    private readonly timeoutMs = 10_000,
  ) {}

  start(): void {
    this.running = true;
    this.loops = this.regions.map((r) => this.loop(r));
  }

  async stop(): Promise<void> {
    this.running = false;
    await Promise.all(this.loops);
  }

  /** Requests started between `from` and `to` (ms timestamps), by region: total and failed. */
  summary(from = 0, to = Infinity): Record<string, RegionSummary> {
    const out: Record<string, RegionSummary> = {};
    for (const r of this.regions) out[r] = { total: 0, failed: 0, outcomes: {} };
    for (const q of this.requests) {
      if (q.at < from || q.at > to) continue;
      const s = out[q.region]!;
      s.total++;
      if (!q.ok) {
        s.failed++;
        const key = `${q.kind} ${q.outcome}`;
        s.outcomes[key] = (s.outcomes[key] ?? 0) + 1;
      }
    }
    return out;
  }

  /** One timed request, recorded. */
  private async record<T>(region: string, kind: LoadRequestKind, fn: () => Promise<T>, judge: (v: T) => { ok: boolean; outcome: string; location?: string }): Promise<T | undefined> {
    const at = Date.now();
    try {
      const v = await withTimeout(fn(), this.timeoutMs);
      this.requests.push({ region, kind, at, ...judge(v) });
      return v;
    } catch (e) {
      this.requests.push({ region, kind, at, ok: false, outcome: describe(e) });
      return undefined;
    }
  }

  private async pushImage(client: OciClient, region: string): Promise<PushedImage | undefined> {
    const config = Buffer.from(JSON.stringify({ architecture: 'amd64', os: 'linux', rootfs: { type: 'layers', diff_ids: [] }, nonce: randomBytes(8).toString('hex') }));
    const layer = randomBytes(8_000 + Math.floor(Math.random() * 8_000));
    const blobs: { digest: string; size: number }[] = [];
    for (const bytes of [config, layer]) {
      const digest = await this.record(region, 'push blob', () => client.pushBlob(this.repo, bytes), () => ({ ok: true, outcome: '201' }));
      if (!digest) return undefined;
      blobs.push({ digest, size: bytes.length });
      this.pushed.push({ region, digest, size: bytes.length });
    }
    const manifest = Buffer.from(
      JSON.stringify({
        schemaVersion: 2,
        mediaType: MANIFEST_TYPE,
        config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: blobs[0]!.digest, size: blobs[0]!.size },
        layers: [{ mediaType: 'application/vnd.oci.image.layer.v1.tar', digest: blobs[1]!.digest, size: blobs[1]!.size }],
      }),
    );
    const tag = `${region}-${++this.seq}`;
    const put = await this.record(
      region,
      'push manifest',
      async () => {
        const r = await client.fetch(`/v2/${this.repo}/manifests/${tag}`, { method: 'PUT', body: manifest, headers: { 'Content-Type': MANIFEST_TYPE } });
        await r.arrayBuffer();
        return r.status;
      },
      (status) => ({ ok: status === 201, outcome: String(status) }),
    );
    if (put !== 201) return undefined;
    const image = { region, tag, manifest, manifestDigest: sha256(manifest), blobs };
    this.images.push(image);
    return image;
  }

  private async loop(region: string): Promise<void> {
    const client = this.f.client(region);
    const mine: PushedImage[] = [];
    while (this.running) {
      const image = await this.pushImage(client, region);
      if (image) mine.push(image);
      if (mine.length > 0) {
        const pick = mine[Math.floor(Math.random() * mine.length)]!;
        const m = await this.record(region, 'pull manifest', () => pullManifest(client, this.repo, pick.tag), (r) => {
          const ok = r.status === 200 && r.body.equals(pick.manifest);
          return { ok, outcome: ok ? '200' : `${r.status}${r.status === 200 ? ' different bytes' : ''}` };
        });
        if (m?.status === 200) {
          for (const b of pick.blobs) {
            await this.record(region, 'pull blob', () => client.pullBlob(this.repo, b.digest), (r) => {
              const ok = r.status === 200 && sha256(r.body) === b.digest;
              return { ok, outcome: ok ? '200' : `${r.status}${r.status === 200 ? ' wrong digest' : ''}`, location: r.response.headers.get('x-meridian-location') ?? undefined };
            });
          }
        }
      }
      await sleep(400);
    }
  }
}

export async function pullManifest(client: OciClient, repo: string, reference: string): Promise<{ status: number; body: Buffer }> {
  const r = await client.fetch(`/v2/${repo}/manifests/${reference}`, { headers: { Accept: MANIFEST_TYPE } });
  return { status: r.status, body: Buffer.from(await r.arrayBuffer()) };
}

/** "3 in ap-south (push blob POST 503 x2, pull blob timed out x1), 0 in us-east, 0 in eu-west". */
export function describeFailures(summary: Record<string, RegionSummary>): string {
  return Object.entries(summary)
    .map(([region, s]) => {
      const detail = Object.entries(s.outcomes).map(([o, n]) => `${o} x${n}`);
      return `${s.failed} of ${s.total} in ${region}${detail.length > 0 ? ` (${detail.join(', ')})` : ''}`;
    })
    .join('; ');
}

function describe(e: unknown): string {
  const m = /^(POST|PUT) upload: (\d{3})/.exec(String((e as Error).message));
  if (m) return `${m[1]} ${m[2]}`;
  const cause = (e as { cause?: { code?: string } }).cause?.code;
  return cause ?? (e as Error).message.slice(0, 60);
}

async function withTimeout<T>(p: Promise<T>, ms: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([p, new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error('timed out')), ms)))]);
  } finally {
    clearTimeout(timer);
  }
}
