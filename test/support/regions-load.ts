// A steady push/pull load on the region topology: in each region, one client at a time pushes a
// small random blob, then pulls one pushed in that region earlier. Every request is recorded with
// its region and outcome, so a fault test can say how many failed, where and when.
import { randomBytes } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { sha256 } from './oci-client.ts';
import type { TopologyFixture } from './regions-topology.ts';

export interface LoadRequest {
  region: string;
  kind: 'push' | 'pull';
  at: number;
  ok: boolean;
  /** HTTP status, or the error's message when no answer came. */
  outcome: string;
}

export class RegionLoad {
  readonly requests: LoadRequest[] = [];
  /** Blobs whose push was acknowledged (a 201): they must never be lost. */
  readonly pushed: { region: string; digest: string; size: number }[] = [];
  private running = false;
  private loops: Promise<void>[] = [];

  constructor(
    private readonly f: TopologyFixture,
    private readonly repo: string,
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

  /** Requests between `from` and `to` (ms timestamps), by region: total and failed. */
  summary(from = 0, to = Infinity): Record<string, { total: number; failed: number; outcomes: Record<string, number> }> {
    const out: Record<string, { total: number; failed: number; outcomes: Record<string, number> }> = {};
    for (const r of this.regions) out[r] = { total: 0, failed: 0, outcomes: {} };
    for (const q of this.requests) {
      if (q.at < from || q.at > to) continue;
      const s = out[q.region]!;
      s.total++;
      if (!q.ok) {
        s.failed++;
        s.outcomes[q.outcome] = (s.outcomes[q.outcome] ?? 0) + 1;
      }
    }
    return out;
  }

  private async loop(region: string): Promise<void> {
    const client = this.f.client(region);
    const mine: string[] = [];
    while (this.running) {
      const bytes = randomBytes(8_000 + Math.floor(Math.random() * 8_000));
      const pushAt = Date.now();
      try {
        const digest = await withTimeout(client.pushBlob(this.repo, bytes), this.timeoutMs);
        this.pushed.push({ region, digest, size: bytes.length });
        mine.push(digest);
        this.requests.push({ region, kind: 'push', at: pushAt, ok: true, outcome: '201' });
      } catch (e) {
        this.requests.push({ region, kind: 'push', at: pushAt, ok: false, outcome: describe(e) });
      }
      if (mine.length > 0) {
        const digest = mine[Math.floor(Math.random() * mine.length)]!;
        const pullAt = Date.now();
        try {
          const r = await withTimeout(client.pullBlob(this.repo, digest), this.timeoutMs);
          const ok = r.status === 200 && sha256(r.body) === digest;
          this.requests.push({ region, kind: 'pull', at: pullAt, ok, outcome: ok ? '200' : `${r.status}${r.status === 200 ? ' wrong digest' : ''}` });
        } catch (e) {
          this.requests.push({ region, kind: 'pull', at: pullAt, ok: false, outcome: describe(e) });
        }
      }
      await sleep(400);
    }
  }
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
