// Following a long-running operation (backfill, garbage collection) from the CLI: poll its status
// each second and draw one progress line on stderr, redrawn in place on a terminal and printed
// every five seconds otherwise (so CI logs stay short), until it is no longer RUNNING.
import type { CliIo } from './client.ts';

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export function progressBar(fraction: number, width = 30): string {
  const n = Math.max(0, Math.min(width, Math.round(fraction * width)));
  return `[${'#'.repeat(n)}${'.'.repeat(width - n)}]`;
}

export function mib(bytes: number): string {
  return `${(bytes / 1024 / 1024).toFixed(1)} MiB`;
}

/** Polls `status` until its `status` is not RUNNING; `line` renders the progress to show, if any. */
export async function followProgress<S extends { status: string }>(io: CliIo, status: () => Promise<S>, line: (s: S) => string | undefined): Promise<S> {
  let lastLine = 0;
  for (;;) {
    const s = await status();
    const text = line(s);
    if (text !== undefined) {
      if (io.isTTY) process.stderr.write(`\r${text}`);
      else if (Date.now() - lastLine > 5000 || s.status !== 'RUNNING') {
        io.err(text);
        lastLine = Date.now();
      }
    }
    if (s.status !== 'RUNNING') {
      if (io.isTTY) process.stderr.write('\n');
      return s;
    }
    await sleep(1000);
  }
}
