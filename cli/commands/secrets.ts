// `meridian secrets rotate`
import { Command } from 'commander';
import { api, type ApiTarget, CliError, type CliIo } from '../client.ts';

export function secretCommands(io: CliIo, target: () => ApiTarget): Command {
  const secrets = new Command('secrets').description('secrets at rest');
  secrets
    .command('rotate')
    .description('re-seal every stored secret with the current MERIDIAN_SECRET_KEY (run with the old key in MERIDIAN_SECRET_KEY_PREVIOUS)')
    .action(async () => {
      const { json } = await api(target(), 'POST', '/superuser/secrets/rotate');
      const r = json as { locationCredentials: number; mirrorPasswords: number; proxyPasswords?: number; webhookSecrets: number; failed: string[] };
      io.out(`re-sealed ${r.locationCredentials} location credentials, ${r.mirrorPasswords} mirror passwords, ${r.proxyPasswords ?? 0} mirror proxy passwords, ${r.webhookSecrets} webhook secrets`);
      if (r.failed.length) throw new CliError(`could not open ${r.failed.length} secrets (no configured key opens them): ${r.failed.join(', ')}`);
    });
  return secrets;
}
