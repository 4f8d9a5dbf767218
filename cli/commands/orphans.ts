// `meridian orphans [--dry-run] [--grace SECONDS]`: remove the objects and multipart uploads no row
// accounts for, in every location.
import { Command, InvalidArgumentError } from 'commander';
import { api, type ApiTarget, CliError, type CliIo } from '../client.ts';
import { followProgress, mib } from '../progress.ts';

interface Sweep {
  location: string;
  objectsListed: number;
  orphanObjects: number;
  orphanBytes: number;
  multipartListed: number;
  orphanMultipart: number;
  sample: string[];
  lifecycleRule?: string;
}

interface Progress {
  dryRun: boolean;
  graceSeconds: number;
  done: boolean;
  locations: Sweep[];
  pendingLocations: string[];
  failedLocations: { location: string; reason: string }[];
}

interface Status {
  workflowId: string;
  status: string;
  progress: Progress | null;
  error?: string;
}

function seconds(v: string): number {
  if (!/^\d{1,9}$/.test(v)) throw new InvalidArgumentError('a whole number of seconds');
  return Number(v);
}

function report(io: CliIo, p: Progress): void {
  io.out(`${p.dryRun ? 'dry run — nothing was removed' : 'orphan sweep done'} (grace ${p.graceSeconds} s)`);
  for (const l of [...p.locations].sort((a, b) => a.location.localeCompare(b.location))) {
    io.out(
      `  ${l.location.padEnd(12)} ${p.dryRun ? 'orphaned' : 'removed'} ${l.orphanObjects} of ${l.objectsListed} objects (${mib(l.orphanBytes)}), ` +
        `${p.dryRun ? 'unowned' : 'aborted'} ${l.orphanMultipart} of ${l.multipartListed} multipart uploads` +
        (l.lifecycleRule ? `; lifecycle rule: ${l.lifecycleRule}` : ''),
    );
    for (const k of l.sample) io.out(`      ${k}`);
  }
  for (const f of p.failedLocations) io.out(`  ${f.location.padEnd(12)} NOT DONE: ${f.reason}`);
}

export function orphansCommand(io: CliIo, target: () => ApiTarget): Command {
  return new Command('orphans')
    .description('remove objects and multipart uploads no row accounts for (a crash between write and commit), in every location')
    .option('--dry-run', 'only report what would be removed')
    .option('--grace <seconds>', 'keep what is younger than this (default: MERIDIAN_GC_GRACE of the workers)', seconds)
    .option('--no-wait', 'start it and return')
    .option('--json', 'print the final report as JSON')
    .action(async (o: { dryRun?: boolean; grace?: number; wait: boolean; json?: boolean }) => {
      const query = o.dryRun ? '?dry_run=true' : '';
      const started = (await api(target(), 'POST', '/orphans', { dry_run: o.dryRun ?? false, ...(o.grace !== undefined ? { grace_seconds: o.grace } : {}) })).json as { workflowId: string };
      if (!o.wait) return io.out(`started ${started.workflowId}`);
      const r = await followProgress(
        io,
        async () => (await api(target(), 'GET', `/orphans${query}`)).json as Status,
        (s) => (s.progress ? `sweeping: ${s.progress.pendingLocations.join(', ') || 'finishing'}` : undefined),
      );
      if (r.status !== 'COMPLETED' || !r.progress) throw new CliError(`orphan sweep ended ${r.status.toLowerCase()}${r.error ? `: ${r.error}` : ''}`);
      if (o.json) return io.out(JSON.stringify(r.progress, null, 2));
      report(io, r.progress);
    });
}
