// `meridian scrub <location> [--sample F] [--rate BYTES/s]`: re-read a location's copies, recompute
// their digests, and have the damaged ones re-copied from a healthy replica.
import { Command, InvalidArgumentError } from 'commander';
import { api, type ApiTarget, CliError, type CliIo } from '../client.ts';
import { followProgress, mib, progressBar } from '../progress.ts';

interface Progress {
  location: string;
  sample: number;
  rateBytesPerSecond: number;
  phase: string;
  examined: number;
  scrubbed: number;
  bytes: number;
  missing: number;
  corrupt: number;
  repaired: number;
  unrepairable: string[];
  findings: { digest: string; problem: string; detail: string }[];
  awaitingRepair: string[];
}

interface Status {
  workflowId: string;
  status: string;
  progress: Progress | null;
  progressUnavailable?: string;
  error?: string;
}

function progressLine(p: Progress): string {
  const found = p.missing + p.corrupt;
  const repairing = p.phase === 'repair' ? `  repaired ${p.repaired}/${p.repaired + p.awaitingRepair.length}` : '';
  return `${progressBar(p.phase === 'scan' ? 0 : p.phase === 'repair' ? 0.9 : 1, 20)} ${p.phase.padEnd(6)} re-read ${p.scrubbed} of ${p.examined} copies (${mib(p.bytes)})  damaged ${found}${repairing}`;
}

function report(io: CliIo, p: Progress): void {
  io.out(`scrub of ${p.location} done (${p.sample < 1 ? `sample ${p.sample}` : 'every copy'}, ${p.rateBytesPerSecond ? `${mib(p.rateBytesPerSecond)}/s` : 'no rate limit'})`);
  io.out(`copies re-read: ${p.scrubbed} of ${p.examined} (${mib(p.bytes)})`);
  io.out(`missing: ${p.missing}  corrupt: ${p.corrupt}  repaired: ${p.repaired}`);
  for (const f of p.findings) io.out(`  ${f.problem.padEnd(8)} ${f.digest}: ${f.detail}`);
  if (p.awaitingRepair.length) io.out(`still being repaired by replication: ${p.awaitingRepair.length}`);
  for (const d of p.unrepairable) io.out(`  NO HEALTHY REPLICA: ${d} (every copy is damaged or gone)`);
}

function fraction(v: string): number {
  const n = Number(v);
  if (!/^\d*\.?\d+$/.test(v) || !(n > 0 && n <= 1)) throw new InvalidArgumentError('a fraction greater than 0 and at most 1');
  return n;
}

function bytesPerSecond(v: string): number {
  const m = /^(\d{1,12})([KMG]i?)?$/i.exec(v);
  if (!m) throw new InvalidArgumentError('bytes per second, e.g. 52428800 or 50Mi (0 = unlimited)');
  const unit = (m[2] ?? '').toUpperCase()[0];
  return Number(m[1]) * (unit === 'K' ? 1024 : unit === 'M' ? 1024 ** 2 : unit === 'G' ? 1024 ** 3 : 1);
}

export function scrubCommand(io: CliIo, target: () => ApiTarget): Command {
  return new Command('scrub')
    .description("re-read a location's copies, recompute their digests, and re-copy missing or corrupt ones from a healthy replica")
    .argument('<location>', 'the storage location')
    .option('--sample <fraction>', 're-read only this fraction of the copies (default 1: all)', fraction)
    .option('--rate <bytes/s>', 'bytes per second to re-read at most, e.g. 50Mi (default 25Mi; 0 = unlimited)', bytesPerSecond)
    .option('--status', 'show the running scrub of the location, or the report of the last one')
    .option('--no-wait', 'start it and return')
    .option('--json', 'print the final report as JSON')
    .action(async (location: string, o: { sample?: number; rate?: number; status?: boolean; wait: boolean; json?: boolean }) => {
      const path = `/scrub/${encodeURIComponent(location)}`;
      if (!o.status) {
        const body = { ...(o.sample !== undefined ? { sample: o.sample } : {}), ...(o.rate !== undefined ? { rate_bytes_per_second: o.rate } : {}) };
        const started = (await api(target(), 'POST', path, body)).json as { workflowId: string };
        if (!o.wait) return io.out(`started ${started.workflowId}`);
      }
      const r = o.status
        ? ((await api(target(), 'GET', path)).json as Status)
        : await followProgress(io, async () => (await api(target(), 'GET', path)).json as Status, (s) => (s.progress ? progressLine(s.progress) : undefined));
      if (o.json) return io.out(JSON.stringify(o.status ? r : r.progress, null, 2));
      if (o.status && r.status === 'RUNNING') {
        return io.out(`${r.workflowId}: RUNNING${r.progress ? `\n${progressLine(r.progress)}` : r.progressUnavailable ? `\nprogress unavailable: ${r.progressUnavailable}` : ''}`);
      }
      if (r.status !== 'COMPLETED' || !r.progress) throw new CliError(`scrub of ${location} ended ${r.status.toLowerCase()}${r.error ? `: ${r.error}` : ''}`);
      report(io, r.progress);
    });
}
