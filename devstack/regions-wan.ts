// The simulated WAN between regions: a TCP relay per (region, remote service) that delays every
// chunk by the link's one-way latency and paces it to the link's bandwidth, in both directions,
// as `tc netem delay … rate …` would. Userspace because this machine's kernel has no sch_netem
// ("Specified qdisc kind is unknown"); the namespaces still make it the only road between
// regions. Connections over one link share its bandwidth; order is kept per connection.
import net from 'node:net';

export interface WanLinkOptions {
  /** Where the relay listens (a region's side of its veth). */
  listen: { host: string; port: number };
  /** The service it reaches. */
  target: { host: string; port: number };
  /** One-way latency added in each direction (half the round trip). */
  oneWayDelayMs: number;
  /** Bandwidth of each direction, bits per second. */
  bitsPerSecond: number;
}

/** Pauses a sender whose relay holds this many bytes not yet delivered. */
const HIGH_WATER = 4 * 1024 * 1024;

/** One direction of a link: a serializer shared by every connection using it. */
class Direction {
  private lastTxEnd = 0;
  constructor(private readonly opts: WanLinkOptions) {}

  /** When a chunk of `bytes` handed over now arrives at the far end (ms, monotonic clock). */
  arrival(bytes: number): number {
    const now = performance.now();
    const txStart = Math.max(now, this.lastTxEnd);
    this.lastTxEnd = txStart + (bytes * 8 * 1000) / this.opts.bitsPerSecond;
    return this.lastTxEnd + this.opts.oneWayDelayMs;
  }
}

/** Carries one connection's bytes from `from` to `to` through `dir`. */
function relay(from: net.Socket, to: net.Socket, dir: Direction): void {
  const queue: { at: number; chunk: Buffer | null }[] = [];
  let queued = 0;
  let timer: NodeJS.Timeout | undefined;
  const pump = () => {
    timer = undefined;
    const now = performance.now();
    while (queue.length > 0 && queue[0]!.at <= now) {
      const { chunk } = queue.shift()!;
      if (chunk === null) {
        to.end();
        return;
      }
      queued -= chunk.length;
      if (!to.destroyed) to.write(chunk);
    }
    if (queued < HIGH_WATER && from.isPaused()) from.resume();
    if (queue.length > 0) timer = setTimeout(pump, Math.max(0, queue[0]!.at - now));
  };
  const push = (chunk: Buffer | null) => {
    queue.push({ at: dir.arrival(chunk?.length ?? 0), chunk });
    if (chunk) queued += chunk.length;
    if (queued >= HIGH_WATER) from.pause();
    if (!timer) timer = setTimeout(pump, Math.max(0, queue[0]!.at - performance.now()));
  };
  from.on('data', (c: Buffer) => push(c));
  from.on('end', () => push(null));
  const stop = () => {
    if (timer) clearTimeout(timer);
    timer = undefined;
    queue.length = 0;
  };
  from.on('close', () => {
    // A reset (not an orderly end) travels at once, as a lost connection does.
    if (from.errored || !from.readableEnded) {
      stop();
      to.destroy();
    }
  });
  to.on('close', stop);
}

export class WanLink {
  private readonly server: net.Server;
  private readonly sockets = new Set<net.Socket>();
  private readonly up: Direction;
  private readonly down: Direction;

  constructor(readonly opts: WanLinkOptions) {
    this.up = new Direction(opts);
    this.down = new Direction(opts);
    this.server = net.createServer({ noDelay: true, allowHalfOpen: true }, (client) => {
      const server = net.connect({ host: opts.target.host, port: opts.target.port, noDelay: true, allowHalfOpen: true });
      for (const s of [client, server]) {
        this.sockets.add(s);
        s.on('error', () => {});
        s.on('close', () => this.sockets.delete(s));
      }
      relay(client, server, this.up);
      relay(server, client, this.down);
    });
  }

  async start(): Promise<void> {
    await new Promise<void>((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen({ host: this.opts.listen.host, port: this.opts.listen.port, exclusive: true }, () => resolve());
    });
  }

  /** Drops every connection in flight (as a restarted middlebox would). */
  reset(): void {
    for (const s of this.sockets) s.destroy();
  }

  async close(): Promise<void> {
    this.reset();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}
