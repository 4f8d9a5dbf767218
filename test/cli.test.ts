// The meridian CLI as a user runs it (bin/meridian, a child process) against the API.
import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createUser } from '../auth/accounts.ts';
// The one runner of bin/meridian the tests share (written for the GC tests first).
import { meridian } from './support/gc-helpers.ts';
import { basic, startTestApi, startTestWorkers } from './support/harness.ts';
import { OciClient } from './support/oci-client.ts';
import type { RunningWorkers } from '../workers/main.ts';

type Api = Awaited<ReturnType<typeof startTestApi>>;

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

  it('takes --username/--password before the command, --json after it, and leaves commands their own options', async () => {
    const name = `flags-${randomBytes(3).toString('hex')}`;
    // Credentials on the command line (no MERIDIAN_USERNAME/PASSWORD in the environment).
    const made = await meridian(['--url', api.url, '--username', root, '--password', rootPassword, 'user', 'create', name, '--password', 'chosen-password-1', '--json'], {});
    expect(made.code, made.err).toBe(0);
    expect(JSON.parse(made.out)).toEqual({ username: name, email: null });
    const asUser = ['--url', api.url, '--username', name, '--password', 'chosen-password-1'];
    const org = `flagorg-${randomBytes(3).toString('hex')}`;
    expect(JSON.parse((await meridian([...asUser, 'org', 'create', org, '--json'], {})).out)).toEqual({ name: org });
    const robot = JSON.parse((await meridian([...asUser, 'robot', 'create', `${org}/mirror`, '--json'], {})).out) as { name: string; token: string };
    expect(robot.name).toBe(`${org}+mirror`);
    expect(JSON.parse((await meridian([...asUser, 'repo', 'create', `${org}/app`, '--public', '--json'], {})).out)).toEqual({ namespace: org, name: 'app', kind: 'image' });
    expect(JSON.parse((await meridian([...asUser, 'repo', 'grant', `${org}/app`, robot.name, 'read', '--json'], {})).out)).toEqual({ name: robot.name, role: 'read', is_robot: true });
    expect((await meridian([...asUser, 'repo', 'show', `${org}/app`], {})).out.split('\n')[0]).toBe(`${org}/app  public  NORMAL`);
    // `mirror create --username` is the upstream's user, not who we are.
    const mirrored = await meridian(
      [...asUser, 'mirror', 'create', `${org}/app`, '--upstream', 'registry.example.com/library/app', '--robot', robot.name, '--tags', 'latest', '--username', 'upstream-user', '--password-env', 'UP_PW'],
      { UP_PW: 'upstream-secret' },
    );
    expect(mirrored.code, mirrored.err).toBe(0);
    expect(JSON.parse((await meridian([...asUser, 'mirror', 'show', `${org}/app`, '--json'], {})).out).external_registry_username).toBe('upstream-user');
    expect((await meridian([...asUser, 'mirror', 'delete', `${org}/app`], {})).code).toBe(0);
    // A regenerated robot token replaces the old one.
    const regenerated = await meridian([...asUser, 'robot', 'regenerate', robot.name], {});
    const [, , fresh] = /^robot (\S+)\ntoken (\S+)$/.exec(regenerated.out)!;
    expect(fresh).not.toBe(robot.token);
  });

  it('reports errors in one line with a non-zero exit', async () => {
    const usage = await meridian(['repo', 'grant', 'a/b', 'someone'], env);
    expect(usage.code).toBe(2);
    const refused = await meridian(['org', 'create', 'Bad Name'], env);
    expect(refused.code).toBe(1);
    expect(refused.err).toMatch(/^meridian: 400 "Bad Name" is not a valid name/);
    expect(refused.err.split('\n')).toHaveLength(1);
    const org = `dup-${randomBytes(3).toString('hex')}`;
    expect((await meridian(['org', 'create', org], env)).code).toBe(0);
    expect(await meridian(['org', 'create', org], env)).toMatchObject({ code: 1, out: '', err: 'meridian: 400 A user or organization with this name already exists' });
    expect(await meridian(['repo', 'show', `${org}/nothing`], env)).toMatchObject({ code: 1, err: `meridian: 404 repository ${org}/nothing not found` });
    expect(await meridian(['repo', 'show', 'no-slash'], env)).toMatchObject({ code: 2, err: 'meridian: "no-slash" is not a repository; write namespace/name' });
    expect(await meridian(['robot', 'create', 'Bad+Name'], env)).toMatchObject({ code: 2, err: expect.stringMatching(/^meridian: "Bad\+Name" is not a robot name/) });
    expect(await meridian(['user', 'create', 'x1', '--password', 'a', '--password-stdin'], env)).toMatchObject({ code: 2, err: 'meridian: use one of --password, --password-env and --password-stdin' });
    expect(await meridian(['repo', 'show', 'a/b'], { ...env, MERIDIAN_URL: 'ftp://example.com' })).toMatchObject({ code: 2, err: 'meridian: "ftp://example.com" is not an http(s) URL (--url or MERIDIAN_URL)' });
    expect(await meridian(['frobnicate'], env)).toMatchObject({ code: 2, err: "meridian: unknown command 'frobnicate'" });
    expect(await meridian(['org', 'create', 'x1', '--bogus'], env)).toMatchObject({ code: 2, err: "meridian: unknown option '--bogus'" });
    const anonymous = await meridian(['org', 'create', `anon-${randomBytes(3).toString('hex')}`], { MERIDIAN_URL: api.url, MERIDIAN_USERNAME: '', MERIDIAN_PASSWORD: '' });
    expect(anonymous).toMatchObject({ code: 1, err: 'meridian: 401 authentication required' });
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
