// `meridian location …` and `meridian replication …`: geo-replication operations.
import { Command } from 'commander';
import { api, type ApiTarget, CliError, type CliIo } from '../client.ts';
import { followProgress, mib, progressBar, sleep } from '../progress.ts';

interface Progress {
  scanned: number;
  queued: number;
  copied: number;
  failed: number;
  bytes: number;
  done: boolean;
  failures: { digest: string; target: string; reason: string }[];
}

/** Polls the backfill until it ends, drawing a progress bar on stderr. */
async function followBackfill(io: CliIo, target: () => ApiTarget, location: string | undefined): Promise<Progress> {
  const q = location ? `?location=${encodeURIComponent(location)}` : '';
  type Status = { status: string; progress: Progress | null; totalBlobs: number };
  const r = await followProgress(
    io,
    async () => (await api(target(), 'GET', `/replication/backfill${q}`)).json as Status,
    ({ progress: p, totalBlobs }) =>
      p ? `${progressBar(totalBlobs ? p.scanned / totalBlobs : 1)} scanned ${p.scanned}/${totalBlobs}  copied ${p.copied} (${mib(p.bytes)})  failed ${p.failed}` : undefined,
  );
  if (r.status !== 'COMPLETED' || !r.progress) throw new CliError(`backfill ended ${r.status.toLowerCase()}`);
  return r.progress;
}

export function replicationCommands(io: CliIo, target: () => ApiTarget): Command[] {
  const location = new Command('location').description('storage locations');
  location
    .command('list')
    .option('--json', 'print the API answer')
    .action(async (o: { json?: boolean }) => {
      const { json } = await api(target(), 'GET', '/locations');
      if (o.json) return io.out(JSON.stringify(json, null, 2));
      for (const l of (json as { locations: { name: string; region: string; endpoint: string; bucket: string; state: string; replicateByDefault: boolean; health: { healthy: boolean; reason?: string } }[] }).locations) {
        io.out(
          `${l.name.padEnd(12)} ${l.region.padEnd(10)} ${l.state.padEnd(8)} ${l.health.healthy ? 'healthy ' : 'DOWN    '} ${l.replicateByDefault ? 'default ' : 'opt-in  '} ${l.endpoint}/${l.bucket}${l.health.healthy ? '' : `  (${l.health.reason})`}`,
        );
      }
    });
  location
    .command('add <name>')
    .description('add a storage location (it is written to, read from and cleaned up first)')
    .requiredOption('--region <region>')
    .requiredOption('--endpoint <url>', 'S3 endpoint URL')
    .requiredOption('--bucket <bucket>')
    .option('--prefix <path>', 'key prefix inside the bucket', '')
    .option('--s3-region <region>', 'S3 signing region', 'us-east-1')
    .option('--credentials-ref <ref>', 'env:PREFIX to read PREFIX_ACCESS_KEY and PREFIX_SECRET_KEY on every instance')
    .option('--access-key-env <variable>', 'store the access key read from this variable (encrypted)')
    .option('--secret-key-env <variable>', 'store the secret key read from this variable (encrypted)')
    .option('--no-default', 'do not replicate every blob here by default (per-namespace policies only)')
    .option('--backfill', 'copy existing blobs here now, without asking')
    .option('--no-backfill', 'do not offer to copy existing blobs')
    .action(async (name: string, o: Record<string, string | boolean | undefined>) => {
      let credentials: Record<string, string>;
      if (typeof o.credentialsRef === 'string') credentials = { ref: o.credentialsRef };
      else if (typeof o.accessKeyEnv === 'string' && typeof o.secretKeyEnv === 'string') {
        const access = io.env[o.accessKeyEnv];
        const secret = io.env[o.secretKeyEnv];
        if (!access || !secret) throw new CliError(`set ${o.accessKeyEnv} and ${o.secretKeyEnv}`, 2);
        credentials = { access_key: access, secret_key: secret };
      } else throw new CliError('give --credentials-ref, or --access-key-env and --secret-key-env', 2);
      await api(target(), 'POST', '/locations', {
        name,
        region: o.region,
        endpoint: o.endpoint,
        bucket: o.bucket,
        path_prefix: o.prefix,
        s3_region: o.s3Region,
        replicate_by_default: o.default !== false,
        credentials,
      });
      io.out(`added location ${name}`);
      let backfill = o.backfill === true;
      if (o.backfill === undefined) backfill = (await io.confirm?.(`Copy the existing blobs to ${name} now (backfill)? [Y/n] `)) ?? false;
      if (o.backfill === undefined && !io.confirm) io.out(`existing blobs are not in ${name} yet: run \`meridian replication backfill --location ${name}\``);
      if (backfill) {
        await api(target(), 'POST', '/replication/backfill', { location: name });
        const p = await followBackfill(io, target, name);
        io.out(`backfill done: copied ${p.copied} blobs (${mib(p.bytes)}), ${p.failed} failed`);
      }
    });
  location
    .command('remove <name>')
    .description('drain a location, make sure every blob it holds exists elsewhere, then remove it')
    .option('--purge', 'also delete its objects')
    .option('--yes', 'do not ask for confirmation')
    .option('--no-wait', 'start the removal and return')
    .action(async (name: string, o: { purge?: boolean; yes?: boolean; wait: boolean }) => {
      if (!o.yes) {
        const ok = await io.confirm?.(`Remove location ${name}${o.purge ? ' and delete its objects' : ''}? [y/N] `);
        if (ok === undefined) throw new CliError('refusing to remove a location without confirmation; pass --yes', 2);
        if (!ok) return io.out('nothing removed');
      }
      const { json } = await api(target(), 'DELETE', `/locations/${encodeURIComponent(name)}${o.purge ? '?purge=true' : ''}`);
      io.out(`removal of ${name} started (workflow ${(json as { workflowId: string }).workflowId})`);
      if (!o.wait) return;
      for (;;) {
        await sleep(1000);
        const { json: r } = await api(target(), 'GET', `/locations/${encodeURIComponent(name)}/removal`);
        const st = r as { status: string; progress: { phase: string; copied: number; placementsDeleted: number } | null; error?: string };
        if (st.status === 'RUNNING') continue;
        if (st.status === 'COMPLETED') return io.out(`removed ${name}: ${st.progress!.copied} blobs copied elsewhere first, ${st.progress!.placementsDeleted} placements deleted`);
        throw new CliError(st.error ?? `removal ended ${st.status.toLowerCase()}`);
      }
    });

  const replication = new Command('replication').description('geo-replication status and backfill');
  replication
    .command('backfill')
    .description('copy every blob to the locations that should hold it and do not')
    .option('--location <name>', 'only to this location')
    .option('--no-wait', 'start it and return')
    .action(async (o: { location?: string; wait: boolean }) => {
      const { json } = await api(target(), 'POST', '/replication/backfill', o.location ? { location: o.location } : {});
      if (!o.wait) return io.out(`backfill started (workflow ${(json as { workflowId: string }).workflowId})`);
      const p = await followBackfill(io, target, o.location);
      io.out(`backfill done: scanned ${p.scanned} blobs, copied ${p.copied} (${mib(p.bytes)}), ${p.failed} failed`);
      for (const f of p.failures) io.out(`  failed ${f.digest} → ${f.target}: ${f.reason}`);
      if (p.failed > 0) throw new CliError(`${p.failed} copies failed`);
    });
  replication
    .command('status <digest>')
    .description('where a blob is held')
    .option('--json', 'print the API answer')
    .action(async (digest: string, o: { json?: boolean }) => {
      const { json } = await api(target(), 'GET', `/blobs/${encodeURIComponent(digest)}/placements`);
      if (o.json) return io.out(JSON.stringify(json, null, 2));
      const r = json as { digest: string; size: number; placements: { location: string; region: string; verifiedAt: string }[]; missing: string[] };
      io.out(`${r.digest} (${r.size} bytes)`);
      for (const p of r.placements) io.out(`  ${p.location.padEnd(12)} ${p.region.padEnd(10)} verified ${p.verifiedAt}`);
      io.out(r.missing.length ? `  pending: ${r.missing.join(', ')}` : '  fully replicated');
    });
  replication
    .command('summary')
    .option('--json', 'print the API answer')
    .action(async (o: { json?: boolean }) => {
      const { json } = await api(target(), 'GET', '/replication/summary');
      if (o.json) return io.out(JSON.stringify(json, null, 2));
      io.out('location     state    health  held     bytes        pending  oldest pending');
      for (const l of (json as { locations: { location: string; state: string; healthy: boolean; blobsHeld: number; bytesHeld: number; blobsPending: number; oldestPendingAgeSeconds: number | null }[] }).locations) {
        io.out(
          `${l.location.padEnd(12)} ${l.state.padEnd(8)} ${(l.healthy ? 'ok' : 'DOWN').padEnd(7)} ${String(l.blobsHeld).padEnd(8)} ${mib(l.bytesHeld).padEnd(12)} ${String(l.blobsPending).padEnd(8)} ${l.oldestPendingAgeSeconds === null ? '-' : `${Math.round(l.oldestPendingAgeSeconds)}s`}`,
        );
      }
    });
  replication
    .command('policy <namespace>')
    .description("show or set a namespace's own replication locations")
    .option('--locations <names>', 'comma-separated locations')
    .option('--default', 'use the locations replicated by default')
    .action(async (ns: string, o: { locations?: string; default?: boolean }) => {
      if (o.locations && o.default) throw new CliError('use one of --locations and --default', 2);
      const path = `/namespace/${encodeURIComponent(ns)}/replication`;
      const { json } =
        o.locations || o.default
          ? await api(target(), 'PUT', path, { locations: o.default ? null : o.locations!.split(',').map((x) => x.trim()).filter(Boolean) })
          : await api(target(), 'GET', path);
      const r = json as { namespace: string; locations: string[] | null };
      io.out(`${r.namespace}: ${r.locations ? r.locations.join(', ') : 'default locations'}`);
    });
  return [location, replication];
}
