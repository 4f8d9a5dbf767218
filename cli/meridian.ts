// The `meridian` command line: a client of the management API.
//
//   meridian [--url URL] [--username U [--password P]] <command> …
//       (MERIDIAN_URL; MERIDIAN_USERNAME + MERIDIAN_PASSWORD, or MERIDIAN_TOKEN, say who you are)
//
// Errors are one line on stderr with a non-zero exit: 2 for usage, 1 when the server refused.
import { createInterface } from 'node:readline/promises';
import { Command, CommanderError } from 'commander';
import { accountCommands } from './commands/accounts.ts';
import { gcCommand } from './commands/gc.ts';
import { mirrorCommand } from './commands/mirror.ts';
import { outboxCommand } from './commands/outbox.ts';
import { orphansCommand } from './commands/orphans.ts';
import { replicationCommands } from './commands/replication.ts';
import { repoCommands } from './commands/repos.ts';
import { scrubCommand } from './commands/scrub.ts';
import { secretCommands } from './commands/secrets.ts';
import { temporalCommand } from './commands/temporal.ts';
import { apiTargetFromEnv, type ApiTarget, CliError, type CliIo } from './client.ts';

export function buildProgram(io: CliIo): Command {
  // Global options go before the command (`meridian --username bob repo show …`): commands have
  // options of the same names (`user create --password`, `mirror create --username` for the
  // upstream) that must reach them, and commander would otherwise give them to the program.
  const program = new Command('meridian')
    .description('Meridian registry administration')
    .enablePositionalOptions()
    .option('--url <url>', 'the registry (default: MERIDIAN_URL or http://127.0.0.1:5000)')
    .option('--username <name>', 'who you are (default: MERIDIAN_USERNAME)')
    .option('--password <password>', 'your password (default: MERIDIAN_PASSWORD, which is safer: a command line is visible to other users)');
  const target = (): ApiTarget => {
    const o = program.opts<{ url?: string; username?: string; password?: string }>();
    return apiTargetFromEnv({
      ...io.env,
      ...(o.url ? { MERIDIAN_URL: o.url } : {}),
      // Naming someone on the command line means Basic credentials, even if MERIDIAN_TOKEN is set.
      ...(o.username ? { MERIDIAN_USERNAME: o.username, MERIDIAN_TOKEN: undefined } : {}),
      ...(o.password !== undefined ? { MERIDIAN_PASSWORD: o.password } : {}),
    });
  };
  for (const c of [...accountCommands(io, target), repoCommands(io, target), ...replicationCommands(io, target), secretCommands(io, target), mirrorCommand(io, target), gcCommand(io, target), outboxCommand(io, target), scrubCommand(io, target), orphansCommand(io, target), temporalCommand(io)]) {
    program.addCommand(c);
  }
  // Every command, however deep, reports through io and never exits the process itself.
  const configure = (c: Command) => {
    c.exitOverride().configureOutput({
      writeOut: (s) => io.out(s.trimEnd()),
      writeErr: (s) => io.err(s.trimEnd()),
      // Usage mistakes read like every other error: `meridian: unknown option '--x'`, one line.
      outputError: (s, write) => write(`meridian: ${s.replace(/^error:\s*/, '').replace(/\s+/g, ' ').trim()}\n`),
    });
    c.commands.forEach(configure);
  };
  configure(program);
  return program;
}

export async function runCli(argv: string[], io: CliIo): Promise<number> {
  try {
    await buildProgram(io).parseAsync(argv, { from: 'user' });
    return 0;
  } catch (e) {
    if (e instanceof CommanderError) return e.exitCode === 0 ? 0 : 2;
    if (e instanceof CliError) {
      io.err(`meridian: ${e.message}`);
      return e.exitCode;
    }
    io.err(`meridian: ${(e as Error).message}`);
    return 1;
  }
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const io: CliIo = {
    env: process.env,
    out: (line) => process.stdout.write(`${line}\n`),
    err: (line) => process.stderr.write(`${line}\n`),
    readStdin: async () => {
      const chunks: Buffer[] = [];
      for await (const c of process.stdin) chunks.push(c as Buffer);
      return Buffer.concat(chunks).toString('utf8');
    },
    isTTY: process.stderr.isTTY === true,
    confirm: process.stdin.isTTY
      ? async (question) => {
          const rl = createInterface({ input: process.stdin, output: process.stderr });
          try {
            const a = (await rl.question(question)).trim().toLowerCase();
            return question.includes('[Y/n]') ? a === '' || a.startsWith('y') : a.startsWith('y');
          } finally {
            rl.close();
          }
        }
      : undefined,
  };
  runCli(process.argv.slice(2), io).then((code) => process.exit(code));
}
