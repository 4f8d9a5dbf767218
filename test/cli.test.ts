// The meridian CLI as a user runs it (bin/meridian, a child process) against the API.
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createUser } from '../auth/accounts.ts';
import { PROJECT_ROOT } from '../devstack/tools.ts';
import { basic, startTestApi, startTestWorkers } from './support/harness.ts';
import { OciClient } from './support/oci-client.ts';
import type { RunningWorkers } from '../workers/main.ts';

type Api = Awaited<ReturnType<typeof startTestApi>>;

function meridian(args: string[], env: Record<string, string>, stdin?: string): Promise<{ code: number | null; out: string; err: string }> {
  return new Promise((resolve) => {
    const child = spawn(path.join(PROJECT_ROOT, 'bin', 'meridian'), args, { env: { ...process.env, ...env }, cwd: '/' });
    let out = '';
    let err = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (err += d.toString()));
    child.stdin.end(stdin ?? '');
    child.on('exit', (code) => resolve({ code, out: out.trim(), err: err.trim() }));
  });
}

describe('meridian CLI', () => {
  let api: Api;
  let workers: RunningWorkers;
  const root = `root-${randomBytes(3).toString('hex')}`;
  const rootPassword = `pw-${randomBytes(8).toString('hex')}`;
  let env: Record<string, string>;

  beforeAll(async () => {
    api = await startTestApi({ MERIDIAN_SUPERUSERS: root });
    workers = await startTestWorkers({ control: true, mirror: false });
    await api.services.db.transaction((tx) => createUser(tx, { username: root, password: rootPassword }));
    env = { MERIDIAN_URL: api.url, MERIDIAN_USERNAME: root, MERIDIAN_PASSWORD: rootPassword };
  });
  afterAll(async () => {
    await workers?.stop();
    await api?.close();
  });

  it('creates a user, an organization, a robot and a repository, and grants access', async () => {
    const name = `dev-${randomBytes(3).toString('hex')}`;
    const user = await meridian(['user', 'create', name, '--email', `${name}@example.com`], env);
    expect(user.code).toBe(0);
    const password = /with password (\S+) \(shown once\)/.exec(user.out)![1]!;
    const asUser = { MERIDIAN_URL: api.url, MERIDIAN_USERNAME: name, MERIDIAN_PASSWORD: password };
    const org = `team-${randomBytes(3).toString('hex')}`;
    expect((await meridian(['org', 'create', org], asUser)).out).toBe(`created organization ${org}`);
    const robot = await meridian(['robot', 'create', `${org}+ci`], asUser);
    expect(robot.code).toBe(0);
    const [, robotName, token] = /^robot (\S+)\ntoken (\S+)$/.exec(robot.out)!;
    expect(robotName).toBe(`${org}+ci`);
    expect((await meridian(['repo', 'create', `${org}/app`, '--description', 'an app'], asUser)).code).toBe(0);
    expect((await meridian(['repo', 'grant', `${org}/app`, `${org}+ci`, 'write'], asUser)).out).toBe(`${org}+ci has write on ${org}/app`);
    const shown = await meridian(['repo', 'show', `${org}/app`, '--json'], asUser);
    expect(JSON.parse(shown.out)).toMatchObject({ namespace: org, name: 'app', description: 'an app', is_public: false });
    // The robot's token really works for pushes.
    const c = new OciClient({ baseUrl: api.url, authorization: basic(robotName!, token!) });
    expect((await c.fetch(`/v2/${org}/app/blobs/uploads/`, { method: 'POST' })).status).toBe(202);
  });

  it('reports errors in one line with a non-zero exit', async () => {
    const usage = await meridian(['repo', 'grant', 'a/b', 'someone'], env);
    expect(usage.code).toBe(2);
    const refused = await meridian(['org', 'create', 'Bad Name'], env);
    expect(refused.code).toBe(1);
    expect(refused.err).toMatch(/^meridian: 400 "Bad Name" is not a valid name/);
    expect(refused.err.split('\n')).toHaveLength(1);
    const badCreds = await meridian(['location', 'list'], { ...env, MERIDIAN_PASSWORD: 'wrong' });
    expect(badCreds.err).toBe('meridian: 401 invalid username or password');
    const down = await meridian(['location', 'list'], { ...env, MERIDIAN_URL: 'http://127.0.0.1:9' });
    expect(down.code).toBe(1);
    expect(down.err).toMatch(/^meridian: cannot reach http:\/\/127\.0\.0\.1:9: /);
    expect((await meridian(['location', 'remove', 'us-east'], env)).err).toBe('meridian: refusing to remove a location without confirmation; pass --yes');
  });

  it('shows locations, replication summary and a blob status, and runs a backfill', async () => {
    const list = await meridian(['location', 'list'], env);
    expect(list.code).toBe(0);
    expect(list.out.split('\n').map((l) => l.split(/\s+/)[0])).toEqual(expect.arrayContaining(['us-east', 'eu-west', 'ap-south']));
    expect(list.out).not.toContain(api.config.devS3.secretAccessKey);

    const user = `blobber-${randomBytes(3).toString('hex')}`;
    await api.services.db.transaction((tx) => createUser(tx, { username: user, password: 'password-123' }));
    const digest = await new OciClient({ baseUrl: api.url, authorization: basic(user, 'password-123') }).pushBlob(`${user}/x`, randomBytes(4000));
    const status = await meridian(['replication', 'status', digest], env);
    expect(status.out.split('\n')[0]).toBe(`${digest} (4000 bytes)`);
    expect(status.out).toMatch(/us-east\s+us-east\s+verified/);

    const summary = await meridian(['replication', 'summary', '--json'], env);
    expect(JSON.parse(summary.out).locations.map((l: { location: string }) => l.location)).toEqual(expect.arrayContaining(['us-east', 'eu-west', 'ap-south']));

    const backfill = await meridian(['replication', 'backfill'], env);
    expect(backfill.code).toBe(0);
    expect(backfill.out).toMatch(/^backfill done: scanned \d+ blobs, copied \d+ \(.* MiB\), 0 failed$/);
    const after = await meridian(['replication', 'status', digest], env);
    expect(after.out).toMatch(/fully replicated/);
  });
});
