// `meridian user|org|robot …`
import { Command } from 'commander';
import { api, type ApiTarget, CliError, type CliIo, readSecret } from '../client.ts';

/** `<namespace>+<short>` or `<namespace>/<short>`. */
const ROBOT = /^([a-z0-9][a-z0-9_-]*)[+/]([a-z][a-z0-9_]*)$/;

export function accountCommands(io: CliIo, target: () => ApiTarget): Command[] {
  const user = new Command('user').description('users (superusers only)');
  user
    .command('create <username>')
    .description('create a user; prints a generated password unless one is given')
    .option('--email <address>')
    .option('--password <password>', "the user's password (visible to other users of this machine: prefer --password-env)")
    .option('--password-env <variable>', 'read the password from this environment variable')
    .option('--password-stdin', 'read the password from standard input')
    .option('--json', 'print the API answer')
    .action(async (username: string, o: { email?: string; password?: string; passwordEnv?: string; passwordStdin?: boolean; json?: boolean }) => {
      if (o.password !== undefined && (o.passwordEnv || o.passwordStdin)) throw new CliError('use one of --password, --password-env and --password-stdin', 2);
      const password = o.password ?? (await readSecret(io, o));
      const { json } = await api(target(), 'POST', '/superuser/users/', { username, ...(o.email ? { email: o.email } : {}), ...(password ? { password } : {}) });
      if (o.json) return io.out(JSON.stringify(json, null, 2));
      const generated = (json as { password?: string }).password;
      io.out(`created user ${username}${generated ? ` with password ${generated} (shown once)` : ''}`);
    });

  const org = new Command('org').description('organizations');
  org
    .command('create <name>')
    .description('create an organization (you become its admin)')
    .option('--json', 'print the API answer')
    .action(async (name: string, o: { json?: boolean }) => {
      const { json } = await api(target(), 'POST', '/organization/', { name });
      if (o.json) return io.out(JSON.stringify(json, null, 2));
      io.out(`created organization ${name}`);
    });

  const robot = new Command('robot').description('robot accounts');
  robot
    .command('create <name>')
    .description('create a robot: <namespace>+<name> (or namespace/name); prints its token once')
    .option('--description <text>')
    .option('--json', 'print the API answer')
    .action(async (name: string, o: { description?: string; json?: boolean }) => {
      const m = ROBOT.exec(name);
      if (!m) throw new CliError(`"${name}" is not a robot name; write namespace+name`, 2);
      const { json } = await api(target(), 'PUT', `/organization/${m[1]}/robots/${m[2]}`, o.description ? { description: o.description } : {});
      if (o.json) return io.out(JSON.stringify(json, null, 2));
      const r = json as { name: string; token: string };
      io.out(`robot ${r.name}`);
      io.out(`token ${r.token}`);
    });
  robot
    .command('delete <name>')
    .action(async (name: string) => {
      const m = ROBOT.exec(name);
      if (!m) throw new CliError(`"${name}" is not a robot name; write namespace+name`, 2);
      await api(target(), 'DELETE', `/organization/${m[1]}/robots/${m[2]}`);
      io.out(`deleted robot ${m[1]}+${m[2]}`);
    });
  robot
    .command('regenerate <name>')
    .description('give a robot a new token (the old one, and tokens obtained with it, stop working); prints it once')
    .option('--json', 'print the API answer')
    .action(async (name: string, o: { json?: boolean }) => {
      const m = ROBOT.exec(name);
      if (!m) throw new CliError(`"${name}" is not a robot name; write namespace+name`, 2);
      const { json } = await api(target(), 'POST', `/organization/${m[1]}/robots/${m[2]}/regenerate`);
      if (o.json) return io.out(JSON.stringify(json, null, 2));
      const r = json as { name: string; token: string };
      io.out(`robot ${r.name}`);
      io.out(`token ${r.token}`);
    });
  return [user, org, robot];
}
