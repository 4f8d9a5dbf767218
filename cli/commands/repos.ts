// `meridian repo create|show|grant|revoke|state …`
import { Command } from 'commander';
import { api, type ApiTarget, CliError, type CliIo } from '../client.ts';

function split(repo: string): { namespace: string; name: string } {
  const i = repo.indexOf('/');
  if (i <= 0 || i === repo.length - 1) throw new CliError(`"${repo}" is not a repository; write namespace/name`, 2);
  return { namespace: repo.slice(0, i), name: repo.slice(i + 1) };
}

export function repoCommands(io: CliIo, target: () => ApiTarget): Command {
  const repo = new Command('repo').description('repositories');
  repo
    .command('create <repository>')
    .option('--public', 'anyone may pull it')
    .option('--description <text>')
    .option('--json', 'print the API answer')
    .action(async (full: string, o: { public?: boolean; description?: string; json?: boolean }) => {
      const { namespace, name } = split(full);
      const { json } = await api(target(), 'POST', '/repository', { namespace, repository: name, visibility: o.public ? 'public' : 'private', description: o.description ?? '' });
      if (o.json) return io.out(JSON.stringify(json, null, 2));
      io.out(`created repository ${full}`);
    });
  repo
    .command('show <repository>')
    .option('--json', 'print the API answer')
    .action(async (full: string, o: { json?: boolean }) => {
      split(full);
      const { json } = await api(target(), 'GET', `/repository/${full}`);
      if (o.json) return io.out(JSON.stringify(json, null, 2));
      const r = json as { namespace: string; name: string; is_public: boolean; state: string; description: string; tags: Record<string, unknown> };
      io.out(`${r.namespace}/${r.name}  ${r.is_public ? 'public' : 'private'}  ${r.state}`);
      if (r.description) io.out(r.description);
      io.out(`tags: ${Object.keys(r.tags).join(', ') || '-'}`);
    });
  repo
    .command('grant <repository> <user-or-robot> <role>')
    .description('give a user or a robot (ns+name) read, write or admin on the repository')
    .option('--json', 'print the API answer')
    .action(async (full: string, who: string, role: string, o: { json?: boolean }) => {
      split(full);
      if (!['read', 'write', 'admin'].includes(role)) throw new CliError('role must be read, write or admin', 2);
      const { json } = await api(target(), 'PUT', `/repository/${full}/permissions/user/${encodeURIComponent(who)}`, { role });
      if (o.json) return io.out(JSON.stringify(json, null, 2));
      io.out(`${who} has ${role} on ${full}`);
    });
  repo
    .command('revoke <repository> <user-or-robot>')
    .action(async (full: string, who: string) => {
      split(full);
      await api(target(), 'DELETE', `/repository/${full}/permissions/user/${encodeURIComponent(who)}`);
      io.out(`${who} has no permission on ${full}`);
    });
  repo
    .command('state <repository> <state>')
    .description('normal, mirror or readonly')
    .action(async (full: string, state: string) => {
      split(full);
      const names: Record<string, string> = { normal: 'NORMAL', mirror: 'MIRROR', readonly: 'READ_ONLY' };
      if (!names[state]) throw new CliError('state must be normal, mirror or readonly', 2);
      await api(target(), 'PUT', `/repository/${full}/changestate`, { state: names[state] });
      io.out(`${full} is ${state}`);
    });
  return repo;
}
