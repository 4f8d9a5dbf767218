// Issue 10 item 6: hostile input is a 4xx, never a 5xx. A short seeded run of bench/fuzz.ts's
// generator (the full run sends 100,000 requests on its own stack), and the classes it found.
import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { RunningApi } from '../api/server.ts';
import { createUser } from '../auth/accounts.ts';
import { fuzz, type FuzzTarget } from '../bench/fuzz.ts';
import { createRepository } from '../registry/repositories.ts';
import { startTestApi } from './support/harness.ts';

describe('hostile input', () => {
  let api: RunningApi;
  const target: FuzzTarget = { username: `fuzz-${randomBytes(3).toString('hex')}`, password: 'fuzz-password-1', repository: '' };
  const basic = (s: string) => `Basic ${Buffer.from(s, 'utf8').toString('base64')}`;

  beforeAll(async () => {
    // The fuzzing user is a superuser, so requests reach the handlers behind the access checks;
    // junk credentials must not throttle its logins (429) and hide those handlers.
    api = await startTestApi({ MERIDIAN_SUPERUSERS: target.username, LOG_LEVEL: 'fatal', MERIDIAN_LOGIN_MAX_FAILURES_PER_ADDRESS: '0' });
    target.repository = `${target.username}/target`;
    await api.services.db.transaction((tx) => createUser(tx, { username: target.username, password: target.password }));
    await createRepository(api.services.db, { fullName: target.repository });
  });

  afterAll(async () => {
    await api?.close();
  });

  it('a NUL byte or a control character in Basic credentials is 401, on /v2, /v2/auth and /api/v1', async () => {
    for (const creds of [`${target.username}\u0000:${target.password}`, '\u0000:\u0000', `a\nb:${target.password}`, `${target.username}:pw\u0000`]) {
      for (const path of ['/v2/', '/v2/auth?service=x', '/api/v1/user/', `/v2/${target.repository}/tags/list`]) {
        const r = await fetch(`${api.url}${path}`, { headers: { authorization: basic(creds) } });
        expect(r.status, `${path} ${JSON.stringify(creds)}`).toBe(401);
      }
    }
  });

  it("a superuser asking for a missing organization's robots gets 404", async () => {
    const r = await fetch(`${api.url}/api/v1/organization/no-such-org/robots`, { headers: { authorization: basic(`${target.username}:${target.password}`) } });
    expect(r.status).toBe(404);
  });

  it('1,200 generated malformed requests: no 5xx, no dropped connection, the server still answers', async () => {
    const report = await fuzz(api.url, target, { count: 1200, seed: 20261123, concurrency: 4 });
    expect(report.serverErrors.map((e) => `${e.status} ${e.request.method} ${e.request.path} → ${e.body}`)).toEqual([]);
    expect(report.transportErrors.map((e) => `${e.request.method} ${e.request.path}: ${e.error}`)).toEqual([]);
    expect(report.sent).toBeGreaterThan(1100);
    // Most answers are refusals: the generator is hostile, not accidentally valid.
    const fourxx = Object.entries(report.byStatus).filter(([s]) => /^4/.test(s)).reduce((n, [, c]) => n + c, 0);
    expect(fourxx).toBeGreaterThan(report.sent / 2);
    expect((await fetch(`${api.url}/v2/`)).status).toBe(401);
  });
});
