// `meridian gc run [--dry-run]`, `meridian gc status`, `meridian gc summary` and
// `meridian gc grace <namespace> [seconds|default]`: garbage collection.
import { Command, InvalidArgumentError } from 'commander';
import { api, type ApiTarget, CliError, type CliIo } from '../client.ts';
import { followProgress, mib } from '../progress.ts';

interface Tally {
  location: string;
  blobs: number;
  bytes: number;
}

interface Progress {
  phase: string;
  dryRun: boolean;
  graceSeconds: number;
  manifestsDeleted: number;
  blobsScanned: number;
  blobsMarked: number;
  bytesMarked: number;
  markedPerLocation: Tally[];
  reclaimedPerLocation: Tally[];
  pendingLocations: string[];
  failedLocations: { location: string; reason: string }[];
  blobRowsDeleted: number;
}

interface Status {
  workflowId: string;
  status: string;
  progress: Progress | null;
  progressUnavailable?: string;
  error?: string;
}

const PHASES = ['manifests', 'mark', 'sweep', 'finish', 'done'];

function progressLine(p: Progress): string {
  const step = Math.max(0, PHASES.indexOf(p.phase));
  const bar = `[${'#'.repeat(step * 6)}${'.'.repeat((PHASES.length - 1 - step) * 6)}]`;
  const reclaimed = p.reclaimedPerLocation.reduce((a, t) => a + t.bytes, 0);
  return `${bar} ${p.phase.padEnd(9)} scanned ${p.blobsScanned}  unreferenced ${p.blobsMarked} (${mib(p.bytesMarked)})  reclaimed ${mib(reclaimed)}${
    p.pendingLocations.length ? `  waiting for ${p.pendingLocations.join(', ')}` : ''
  }`;
}

function report(io: CliIo, p: Progress): void {
  io.out(`${p.dryRun ? 'dry run — nothing was deleted' : 'garbage collection done'} (grace ${p.graceSeconds} s)`);
  io.out(`untagged manifests ${p.dryRun ? 'to expire' : 'expired'}: ${p.manifestsDeleted}`);
  io.out(`unreferenced blobs: ${p.blobsMarked} of ${p.blobsScanned} (${mib(p.bytesMarked)})`);
  const rows = p.dryRun ? p.markedPerLocation : p.reclaimedPerLocation;
  for (const t of rows) io.out(`  ${t.location.padEnd(12)} ${p.dryRun ? 'reclaimable' : 'reclaimed'} ${String(t.blobs).padStart(8)} copies  ${mib(t.bytes)}`);
  for (const f of p.failedLocations) io.out(`  ${f.location.padEnd(12)} NOT DONE: ${f.reason} (its deletions wait for the next run)`);
  if (!p.dryRun) io.out(`blob rows deleted: ${p.blobRowsDeleted}`);
}

function follow(io: CliIo, target: () => ApiTarget, dryRun: boolean): Promise<Status> {
  return followProgress(
    io,
    async () => (await api(target(), 'GET', `/gc${dryRun ? '?dry_run=true' : ''}`)).json as Status,
    (r) => (r.progress ? progressLine(r.progress) : undefined),
  );
}

function seconds(v: string): number {
  if (!/^\d{1,9}$/.test(v)) throw new InvalidArgumentError('a whole number of seconds');
  return Number(v);
}

export function gcCommand(io: CliIo, target: () => ApiTarget): Command {
  const gc = new Command('gc').description('garbage collection: untagged manifests and unreferenced blobs, in every location');
  gc.command('run')
    .description('collect garbage now (and wait for it, drawing progress)')
    .option('--dry-run', 'only report what would be deleted and how much each location would reclaim')
    .option('--grace <seconds>', 'keep what changed more recently than this (default: MERIDIAN_GC_GRACE of the workers)', seconds)
    .option('--no-wait', 'start it and return')
    .option('--json', 'print the final report as JSON')
    .action(async (o: { dryRun?: boolean; grace?: number; wait: boolean; json?: boolean }) => {
      const body = { dry_run: o.dryRun ?? false, ...(o.grace !== undefined ? { grace_seconds: o.grace } : {}) };
      const { json } = await api(target(), 'POST', '/gc', body);
      const started = json as { workflowId: string };
      if (!o.wait) return io.out(`started ${started.workflowId}`);
      const r = await follow(io, target, o.dryRun ?? false);
      if (r.status !== 'COMPLETED' || !r.progress) throw new CliError(`garbage collection ended ${r.status.toLowerCase()}${r.error ? `: ${r.error}` : ''}`);
      if (o.json) return io.out(JSON.stringify(r.progress, null, 2));
      report(io, r.progress);
    });
  gc.command('status')
    .description('progress of the running collection, or the report of the last one')
    .option('--dry-run', 'the last dry run instead')
    .option('--json', 'print the API answer')
    .action(async (o: { dryRun?: boolean; json?: boolean }) => {
      const { json } = await api(target(), 'GET', `/gc${o.dryRun ? '?dry_run=true' : ''}`);
      const r = json as Status;
      if (o.json) return io.out(JSON.stringify(r, null, 2));
      io.out(`${r.workflowId}: ${r.status}${r.error ? ` (${r.error})` : ''}`);
      if (r.progressUnavailable) io.out(`progress unavailable: ${r.progressUnavailable}`);
      if (r.progress) {
        if (r.status === 'RUNNING') io.out(progressLine(r.progress));
        else report(io, r.progress);
      }
    });
  gc.command('summary')
    .description('last run and dry run, bytes reclaimable, waiting and reclaimed per location')
    .option('--json', 'print the API answer')
    .action(async (o: { json?: boolean }) => {
      const { json } = await api(target(), 'GET', '/gc/summary');
      if (o.json) return io.out(JSON.stringify(json, null, 2));
      const s = json as Summary;
      for (const [what, r] of [
        ['last run', s.lastRun],
        ['last dry run', s.lastDryRun],
      ] as const) {
        io.out(r ? `${what}: ${r.outcome}, finished ${r.finishedAt}${r.error ? ` (${r.error})` : ''}` : `${what}: none recorded`);
      }
      const locations = [...new Set([...s.reclaimable, ...s.pending, ...s.reclaimed].map((t) => t.location))].sort();
      const bytes = (list: Tally[], l: string) => mib(list.find((t) => t.location === l)?.bytes ?? 0);
      for (const l of locations) {
        io.out(`  ${l.padEnd(12)} reclaimable ${bytes(s.reclaimable, l).padStart(10)}  waiting ${bytes(s.pending, l).padStart(10)}  reclaimed ${bytes(s.reclaimed, l).padStart(10)}`);
      }
    });
  gc.command('grace')
    .description("show or set a namespace's own grace period (seconds, or `default` for MERIDIAN_GC_GRACE)")
    .argument('<namespace>')
    .argument('[seconds]', 'seconds, or `default`')
    .action(async (namespace: string, value: string | undefined) => {
      const path = `/namespace/${encodeURIComponent(namespace)}/gc`;
      const { json } =
        value === undefined
          ? await api(target(), 'GET', path)
          : await api(target(), 'PUT', path, { grace_seconds: value === 'default' ? null : seconds(value) });
      const g = json as { namespace: string; grace_seconds: number | null };
      io.out(`${g.namespace}: grace ${g.grace_seconds === null ? 'default (MERIDIAN_GC_GRACE)' : `${g.grace_seconds} s`}`);
    });
  return gc;
}

interface Summary {
  lastRun: { outcome: string; finishedAt: string; error: string | null } | null;
  lastDryRun: { outcome: string; finishedAt: string; error: string | null } | null;
  reclaimable: Tally[];
  pending: Tally[];
  reclaimed: Tally[];
}
