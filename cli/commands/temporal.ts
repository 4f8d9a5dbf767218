// `meridian temporal setup`: the deploy step that readies the Temporal namespace for this release
// (workers/temporal-setup.ts). Unlike the other commands it talks to Temporal and PostgreSQL
// directly, with the same settings as the workers (TEMPORAL_ADDRESS, TEMPORAL_NAMESPACE,
// TEMPORAL_TLS_*, TEMPORAL_API_KEY, DATABASE_URL).
import { Command, InvalidArgumentError } from 'commander';
import { CliError, type CliIo } from '../client.ts';

function days(v: string): number {
  if (!/^\d+$/.test(v) || Number(v) < 1 || Number(v) > 3650) throw new InvalidArgumentError('expected a whole number of days (1–3650)');
  return Number(v);
}

export function temporalCommand(io: CliIo): Command {
  const temporal = new Command('temporal').description('the Temporal namespace Meridian runs in');
  temporal
    .command('setup')
    .description(
      'register the namespace (where allowed) and Meridian\'s search attributes, create or update every schedule Meridian owns; idempotent, run on every deploy',
    )
    .option('--retention <days>', 'workflow history retention of a namespace this registers', days, 7)
    .option('--skip-mirrors', 'leave the per-repository mirror schedules alone (they need DATABASE_URL)')
    .action(async (opts: { retention: number; skipMirrors?: boolean }) => {
      const [{ loadConfig, ConfigError }, { setupTemporal }, { TemporalSetupError }] = await Promise.all([
        import('../../config.ts'),
        import('../../workers/temporal-setup.ts'),
        import('../../platform/temporal-admin.ts'),
      ]);
      let config;
      try {
        config = loadConfig(io.env, { requireKeys: false });
      } catch (e) {
        if (e instanceof ConfigError) throw new CliError(e.message, 2);
        throw e;
      }
      try {
        const report = await setupTemporal(config, { retentionDays: opts.retention, skipMirrors: opts.skipMirrors, log: io.out });
        if (report.mirrors?.failed.length) throw new CliError(`${report.mirrors.failed.length} mirror schedules could not be reconciled`);
        io.out(`Temporal namespace ${config.temporal.namespace} at ${config.temporal.address} is ready`);
      } catch (e) {
        if (e instanceof CliError || e instanceof TemporalSetupError) throw new CliError(e.message);
        throw new CliError(`temporal setup failed (${config.temporal.address}): ${(e as Error).message.replace(/\s+/g, ' ')}`);
      }
    });
  return temporal;
}
