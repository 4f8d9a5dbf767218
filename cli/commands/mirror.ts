// `meridian mirror …`: repository mirroring through the management API.
//
//   meridian mirror create <ns/repo> --upstream registry.example.com/library/nginx --robot ns+mirror \
//       --tags 'v1.*,latest' [--interval 86400] [--start 2030-01-01T00:00:00Z] [--username u \
//       --password-env VAR | --password-stdin] [--no-verify-tls] [--rollback] [--https-proxy URL
//       --bypass-proxy HOSTS] …
//   meridian mirror show <ns/repo> [--json]
//   meridian mirror update <ns/repo> [any create option] [--enable | --disable]
//   meridian mirror sync <ns/repo>          (sync now)
//   meridian mirror cancel <ns/repo>        (cancel the running sync)
//   meridian mirror runs <ns/repo> [--limit N] [--json]
//   meridian mirror delete <ns/repo>
//
// Passwords are never taken as an argument (they would land in shell history and `ps`): from an
// environment variable named by --password-env, or from standard input with --password-stdin.
// Errors are one line on stderr and a non-zero exit.
import { Command, CommanderError, Option } from 'commander';
import { api, apiTargetFromEnv, CliError, type ApiTarget, type CliIo } from '../client.ts';

export { apiTargetFromEnv, type ApiTarget, type CliIo } from '../client.ts';

function repoPath(repo: string): string {
  if (!/^[a-z0-9][^/\s]*\/\S+$/.test(repo)) throw new CliError(`"${repo}" is not a repository; write namespace/name`);
  return `/repository/${repo}/mirror`;
}

interface MirrorOptions {
  upstream?: string;
  robot?: string;
  tags?: string;
  interval?: string;
  start?: string;
  username?: string;
  passwordEnv?: string;
  passwordStdin?: boolean;
  clearCredentials?: boolean;
  verifyTls?: boolean;
  rollback?: boolean;
  bestEffort?: boolean;
  httpProxy?: string;
  httpsProxy?: string;
  bypassProxy?: string;
  enable?: boolean;
  disable?: boolean;
}

function withMirrorOptions(cmd: Command): Command {
  return cmd
    .option('--upstream <reference>', 'the repository to mirror, e.g. registry.example.com/library/nginx')
    .option('--robot <name>', 'the robot account (namespace+name) allowed to write to the mirror')
    .option('--tags <globs>', 'comma-separated tag globs, e.g. "v1.*,latest"')
    .option('--interval <seconds>', 'seconds between syncs')
    .option('--start <date>', 'first sync, YYYY-MM-DDTHH:MM:SSZ (default: now)')
    .option('--username <name>', 'upstream username')
    .option('--password-env <variable>', 'read the upstream password from this environment variable')
    .option('--password-stdin', 'read the upstream password from standard input')
    .option('--clear-credentials', 'remove the upstream username and password')
    .option('--verify-tls', 'verify the upstream TLS certificate (the default)')
    .option('--no-verify-tls', 'do not verify the upstream TLS certificate (and allow plain HTTP)')
    .addOption(new Option('--rollback', 'on failure, restore the tags as they were before the run'))
    .addOption(new Option('--best-effort', 'on failure, keep the tags that synced').conflicts('rollback'))
    .option('--http-proxy <url>', 'proxy for http:// upstreams')
    .option('--https-proxy <url>', 'proxy for https:// upstreams')
    .option('--bypass-proxy <hosts>', "hosts reached without the proxy (Quay's no_proxy)");
}

async function mirrorBody(o: MirrorOptions, io: CliIo, creating: boolean): Promise<Record<string, unknown>> {
  const body: Record<string, unknown> = {};
  if (o.upstream !== undefined) body.external_reference = o.upstream;
  if (o.robot !== undefined) body.robot_username = o.robot;
  if (o.tags !== undefined) {
    const globs = o.tags.split(',').map((t) => t.trim()).filter(Boolean);
    body.root_rule = { rule_kind: 'tag_glob_csv', rule_value: globs };
  }
  if (o.interval !== undefined) {
    if (!/^\d+$/.test(o.interval)) throw new CliError(`--interval must be a whole number of seconds, got "${o.interval}"`);
    body.sync_interval = Number(o.interval);
  } else if (creating) body.sync_interval = 86400;
  if (o.start !== undefined) body.sync_start_date = o.start;
  else if (creating) body.sync_start_date = `${new Date().toISOString().slice(0, 19)}Z`;
  if (o.passwordEnv && o.passwordStdin) throw new CliError('use one of --password-env and --password-stdin');
  let password: string | undefined;
  if (o.passwordEnv) {
    password = io.env[o.passwordEnv];
    if (password === undefined) throw new CliError(`environment variable ${o.passwordEnv} is not set`);
  }
  if (o.passwordStdin) password = (await io.readStdin()).replace(/\r?\n$/, '');
  if (o.clearCredentials) {
    body.external_registry_username = null;
    body.external_registry_password = null;
  } else if (o.username !== undefined) {
    body.external_registry_username = o.username;
    if (password !== undefined) body.external_registry_password = password;
  } else if (password !== undefined) {
    throw new CliError('--username is required with a password');
  }
  const config: Record<string, unknown> = {};
  if (o.verifyTls !== undefined) config.verify_tls = o.verifyTls;
  else if (creating) config.verify_tls = true;
  const proxy: Record<string, string> = {};
  if (o.httpProxy !== undefined) proxy.http_proxy = o.httpProxy;
  if (o.httpsProxy !== undefined) proxy.https_proxy = o.httpsProxy;
  if (o.bypassProxy !== undefined) proxy.no_proxy = o.bypassProxy;
  if (Object.keys(proxy).length) config.proxy = proxy;
  if (Object.keys(config).length) body.external_registry_config = config;
  if (o.rollback) body.rollback_on_failure = true;
  if (o.bestEffort) body.rollback_on_failure = false;
  if (o.enable && o.disable) throw new CliError('use one of --enable and --disable');
  if (o.enable) body.is_enabled = true;
  if (o.disable) body.is_enabled = false;
  return body;
}

function describeConfig(v: Record<string, unknown>): string[] {
  const cfg = v.external_registry_config as { verify_tls?: boolean; proxy?: Record<string, string | null> } | undefined;
  const rule = v.root_rule as { rule_value?: string[] } | undefined;
  const proxy = Object.entries(cfg?.proxy ?? {}).filter(([, x]) => x).map(([k, x]) => `${k}=${x}`);
  return [
    `upstream:     ${v.external_reference}`,
    `tags:         ${(rule?.rule_value ?? []).join(', ')}`,
    `enabled:      ${v.is_enabled ? 'yes' : 'no'}`,
    `interval:     ${v.sync_interval}s from ${v.sync_start_date}`,
    `robot:        ${v.robot_username ?? '-'}`,
    `username:     ${v.external_registry_username ?? '-'}`,
    `verify TLS:   ${cfg?.verify_tls === false ? 'no' : 'yes'}${proxy.length ? `; proxy ${proxy.join(' ')}` : ''}`,
    `on failure:   ${v.rollback_on_failure ? 'roll back' : 'keep what synced'}`,
    `status:       ${v.sync_status} (retries left ${v.sync_retries_remaining}${v.sync_expiration_date ? `, expires ${v.sync_expiration_date}` : ''})`,
  ];
}

/** The `mirror` command group; `target` is resolved when a command runs. */
export function mirrorCommand(io: CliIo, target: () => ApiTarget = () => apiTargetFromEnv(io.env)): Command {
  const mirror = new Command('mirror').description('mirror a repository of another registry (Quay-compatible)');
  withMirrorOptions(mirror.command('create <repository>').description('create the mirror of a repository'))
    .option('--disable', 'create it disabled')
    .action(async (repo: string, o: MirrorOptions) => {
      const body = await mirrorBody(o, io, true);
      for (const [flag, field] of [['--upstream', 'external_reference'], ['--robot', 'robot_username'], ['--tags', 'root_rule']] as const) {
        if (body[field] === undefined) throw new CliError(`${flag} is required`);
      }
      await api(target(), 'POST', repoPath(repo), body);
      io.out(`created the mirror of ${repo}`);
    });
  mirror
    .command('show <repository>')
    .description("show a repository's mirror configuration and status")
    .option('--json', 'print the API answer')
    .action(async (repo: string, o: { json?: boolean }) => {
      const { json } = await api(target(), 'GET', repoPath(repo));
      if (o.json) io.out(JSON.stringify(json, null, 2));
      else for (const line of describeConfig(json as Record<string, unknown>)) io.out(line);
    });
  withMirrorOptions(mirror.command('update <repository>').description("change a repository's mirror"))
    .option('--enable', 'enable syncing')
    .option('--disable', 'disable syncing (the schedule pauses)')
    .action(async (repo: string, o: MirrorOptions) => {
      const body = await mirrorBody(o, io, false);
      if (Object.keys(body).length === 0) throw new CliError('nothing to change; give at least one option');
      await api(target(), 'PUT', repoPath(repo), body);
      io.out(`updated the mirror of ${repo}`);
    });
  mirror
    .command('sync <repository>')
    .description('sync now')
    .action(async (repo: string) => {
      await api(target(), 'POST', `${repoPath(repo)}/sync-now`);
      io.out(`sync of ${repo} queued`);
    });
  mirror
    .command('cancel <repository>')
    .description('cancel the queued or running sync')
    .action(async (repo: string) => {
      await api(target(), 'POST', `${repoPath(repo)}/sync-cancel`);
      io.out(`sync of ${repo} cancelled`);
    });
  mirror
    .command('runs <repository>')
    .description('recent syncs, newest first')
    .option('--limit <n>', 'how many', '10')
    .option('--json', 'print the API answer')
    .action(async (repo: string, o: { limit: string; json?: boolean }) => {
      const { json } = await api(target(), 'GET', `${repoPath(repo)}/runs?limit=${encodeURIComponent(o.limit)}`);
      if (o.json) return io.out(JSON.stringify(json, null, 2));
      const runs = (json as { runs: { id: number; status: string; trigger: string | null; started: string; duration_seconds: number | null; bytes: number; tags: { status: string }[]; reason: string | null }[] }).runs;
      if (runs.length === 0) return io.out('no runs yet');
      for (const r of runs) {
        const counts: Record<string, number> = {};
        for (const t of r.tags) counts[t.status] = (counts[t.status] ?? 0) + 1;
        const tags = Object.entries(counts).map(([k, v]) => `${v} ${k}`).join(', ') || 'no tags';
        io.out(
          `#${r.id} ${r.started} ${r.status.padEnd(7)} ${r.trigger ?? '-'} ${r.duration_seconds === null ? 'running' : `${r.duration_seconds.toFixed(1)}s`} ${r.bytes} bytes; ${tags}${r.reason ? ` — ${r.reason}` : ''}`,
        );
      }
    });
  mirror
    .command('delete <repository>')
    .description('remove the mirror (the repository keeps its tags and becomes writable)')
    .action(async (repo: string) => {
      await api(target(), 'DELETE', repoPath(repo));
      io.out(`deleted the mirror of ${repo}`);
    });
  return mirror;
}

/** Adds `mirror` to the meridian program. */
export function registerMirrorCommands(program: Command, io: CliIo): void {
  program.addCommand(mirrorCommand(io));
}

/** Runs `meridian mirror <argv…>`; returns the exit code. Used by the CLI and by tests. */
export async function runMirrorCli(argv: string[], io: CliIo): Promise<number> {
  const program = new Command('meridian').exitOverride().configureOutput({ writeOut: (s) => io.out(s.trimEnd()), writeErr: (s) => io.err(s.trimEnd()) });
  registerMirrorCommands(program, io);
  for (const c of program.commands) {
    c.exitOverride().configureOutput({ writeOut: (s) => io.out(s.trimEnd()), writeErr: (s) => io.err(s.trimEnd()) });
    for (const sub of c.commands) sub.exitOverride().configureOutput({ writeOut: (s) => io.out(s.trimEnd()), writeErr: (s) => io.err(s.trimEnd()) });
  }
  try {
    await program.parseAsync(['mirror', ...argv], { from: 'user' });
    return 0;
  } catch (e) {
    if (e instanceof CommanderError) return e.exitCode === 0 ? 0 : 2;
    io.err(`meridian: ${(e as Error).message}`);
    return 1;
  }
}
