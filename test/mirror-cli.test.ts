// `meridian mirror create|show|update|sync|cancel|runs|delete` against a running API: output,
// one-line errors, exit codes, and a password that never needs to be on the command line.
import { execFile } from 'node:child_process';
import path from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PROJECT_ROOT } from '../devstack/tools.ts';
import type { RunningApi } from '../api/server.ts';
import { createRobot, namespaceByName } from '../auth/accounts.ts';
import { runMirrorCli } from '../cli/commands/mirror.ts';
import { createRepository } from '../registry/repositories.ts';
import { createTestUser, startTestApi } from './support/harness.ts';

describe('meridian mirror (CLI)', () => {
  let api: RunningApi;
  let user: Awaited<ReturnType<typeof createTestUser>>;
  let repo: string;
  let robot: string;

  async function cli(args: string[], env: Record<string, string> = {}, stdin = '') {
    const out: string[] = [];
    const err: string[] = [];
    const code = await runMirrorCli(args, {
      env: { MERIDIAN_URL: api.url, MERIDIAN_USERNAME: user.username, MERIDIAN_PASSWORD: user.password, ...env },
      out: (l) => out.push(l),
      err: (l) => err.push(l),
      readStdin: async () => stdin,
    });
    return { code, out: out.join('\n'), err: err.join('\n'), errLines: err.length };
  }

  beforeAll(async () => {
    api = await startTestApi({ MERIDIAN_MIRROR_ALLOWED_HOSTS: '127.0.0.1' });
    user = await createTestUser('cli');
    const ns = (await namespaceByName(api.services.db, user.username))!;
    robot = (await api.services.db.transaction((tx) => createRobot(tx, { namespace: ns, shortName: 'puller' }))).name;
    repo = `${user.username}/app`;
    await createRepository(api.services.db, { fullName: repo });
  });

  afterAll(async () => {
    await api?.close();
  });

  it('create, show, update, sync, cancel, runs, delete', async () => {
    const created = await cli(
      ['create', repo, '--upstream', 'registry.example.com/library/app', '--robot', robot, '--tags', 'v1.*, latest', '--interval', '3600', '--username', 'reader', '--password-env', 'UPSTREAM_PW', '--rollback'],
      { UPSTREAM_PW: 'pw-from-env' },
    );
    expect(created, created.err).toMatchObject({ code: 0 });
    expect(created.out).toBe(`created the mirror of ${repo}`);

    const shown = await cli(['show', repo]);
    expect(shown.code).toBe(0);
    expect(shown.out).toContain('upstream:     registry.example.com/library/app');
    expect(shown.out).toContain('tags:         v1.*, latest');
    expect(shown.out).toContain('on failure:   roll back');
    expect(shown.out).toContain('status:       NEVER_RUN');
    expect(shown.out).not.toContain('pw-from-env');
    const json = JSON.parse((await cli(['show', repo, '--json'])).out);
    expect(json).toMatchObject({ external_registry_username: 'reader', sync_interval: 3600, rollback_on_failure: true });

    const updated = await cli(['update', repo, '--disable', '--tags', 'v2.*', '--no-verify-tls', '--https-proxy', 'http://proxy.example.com:3128', '--bypass-proxy', '.corp', '--username', 'reader2', '--password-stdin'], {}, 'pw-from-stdin\n');
    expect(updated, updated.err).toMatchObject({ code: 0 });
    const after = JSON.parse((await cli(['show', repo, '--json'])).out);
    expect(after).toMatchObject({
      is_enabled: false,
      root_rule: { rule_value: ['v2.*'] },
      external_registry_username: 'reader2',
      external_registry_config: { verify_tls: false, proxy: { https_proxy: 'http://proxy.example.com:3128', no_proxy: '.corp' } },
    });

    expect((await cli(['sync', repo])).out).toBe(`sync of ${repo} queued`);
    expect((await cli(['cancel', repo])).out).toBe(`sync of ${repo} cancelled`);
    expect((await cli(['runs', repo])).out).toBe('no runs yet');
    expect(JSON.parse((await cli(['runs', repo, '--json'])).out)).toEqual({ runs: [] });
    expect((await cli(['delete', repo])).out).toBe(`deleted the mirror of ${repo}`);
  });

  it('errors are one line with a non-zero exit', async () => {
    const missing = await cli(['create', repo, '--robot', robot, '--tags', 'x']);
    expect(missing).toMatchObject({ code: 1, err: 'meridian: --upstream is required', errLines: 1 });
    const bad = await cli(['create', repo, '--upstream', 'https://x.io/a', '--robot', robot, '--tags', 'x']);
    expect(bad.code).toBe(1);
    expect(bad.errLines).toBe(1);
    expect(bad.err).toMatch(/^meridian: 400 external_reference must not include a URL scheme/);
    const nothing = await cli(['show', `${user.username}/nope`]);
    expect(nothing).toMatchObject({ code: 1, errLines: 1 });
    expect(nothing.err).toMatch(/^meridian: 404 /);
    const denied = await cli(['show', repo], { MERIDIAN_PASSWORD: 'wrong' });
    expect(denied).toMatchObject({ code: 1, errLines: 1 });
    expect(denied.err).toMatch(/^meridian: 401 /);
    expect((await cli(['create', repo, '--upstream', 'x.io/a', '--robot', robot, '--tags', 'x', '--password-env', 'NOPE', '--username', 'u'])).err).toBe(
      'meridian: environment variable NOPE is not set',
    );
    const unreachable = await cli(['show', repo], { MERIDIAN_URL: 'http://127.0.0.1:9' });
    expect(unreachable.code).toBe(1);
    expect(unreachable.err).toMatch(/^meridian: cannot reach http:\/\/127\.0\.0\.1:9/);
    expect((await cli(['frobnicate'])).code).not.toBe(0);
    expect((await cli(['show', 'not-a-repo'])).err).toBe('meridian: "not-a-repo" is not a repository; write namespace/name');
  });

  it('is a command of bin/meridian', async () => {
    const run = promisify(execFile);
    const env = { ...process.env, MERIDIAN_URL: api.url, MERIDIAN_USERNAME: user.username, MERIDIAN_PASSWORD: user.password };
    const bin = path.join(PROJECT_ROOT, 'bin', 'meridian');
    const created = await run(bin, ['mirror', 'create', repo, '--upstream', 'registry.example.com/x/y', '--robot', robot, '--tags', '*'], { env });
    expect(created.stdout.trim()).toBe(`created the mirror of ${repo}`);
    const failed = await run(bin, ['mirror', 'create', repo, '--upstream', 'registry.example.com/x/y', '--robot', robot, '--tags', '*'], { env }).catch((e: { code: number; stderr: string }) => e);
    expect((failed as { code: number }).code).not.toBe(0);
    expect((failed as { stderr: string }).stderr.trim().split('\n')).toHaveLength(1);
    expect((failed as { stderr: string }).stderr).toMatch(/409/);
  });
});
