// Issue 10 item 4: no fallback keys. An API or worker process started without MERIDIAN_TOKEN_KEY or
// MERIDIAN_SECRET_KEY refuses to start with one line naming the variable (before, it signed tokens
// with a key printed in the source, so anyone could mint superuser tokens); with the keys it serves.
import { spawn } from 'node:child_process';
import { SignJWT } from 'jose';
import { describe, expect, it } from 'vitest';
import { PROJECT_ROOT } from '../devstack/tools.ts';
import { canConnect, freePort } from '../devstack/ports.ts';
import { runEntryPoint } from './support/entrypoints.ts';
import { ensureTestLocations, testEnv } from './support/harness.ts';

describe('start-up without keys', () => {
  it.each([
    ['api/main.ts', ['--workers', '1'], 'MERIDIAN_TOKEN_KEY'],
    ['api/main.ts', ['--workers', '1'], 'MERIDIAN_SECRET_KEY'],
    ['workers/main.ts', ['--control'], 'MERIDIAN_TOKEN_KEY'],
  ])('%s %j refuses to start without %s (one line)', async (entry, args, variable) => {
    const r = await runEntryPoint(entry, args, { [variable]: '', PORT: '0' });
    expect(r.code).toBe(2);
    expect(r.stderr.split('\n')).toHaveLength(1);
    expect(r.stderr).toMatch(new RegExp(`^meridian: ${variable}: is required`));
  });

  it('serves with the keys the test stack generated; a token signed with the old built-in key is refused', async () => {
    await ensureTestLocations();
    const port = await freePort();
    const child = spawn(process.execPath, ['--import', 'tsx', 'api/main.ts', '--workers', '1'], {
      cwd: PROJECT_ROOT,
      env: { ...process.env, ...testEnv({ PORT: String(port) }) } as NodeJS.ProcessEnv,
      stdio: ['ignore', 'ignore', 'inherit'],
    });
    try {
      await expect.poll(() => canConnect(port), { timeout: 60_000, interval: 200 }).toBe(true);
      // The same well-formed token passes the ping signed with the stack's key, and not signed with
      // the key that used to be the built-in fallback.
      const sign = async (key: Buffer) => {
        const now = Math.floor(Date.now() / 1000);
        return new SignJWT({ access: [], mp: { k: 'a' } })
          .setProtectedHeader({ alg: 'HS256' })
          .setIssuer('meridian')
          .setAudience(`127.0.0.1:${port}`)
          .setIssuedAt(now)
          .setExpirationTime(now + 300)
          .sign(key);
      };
      const ping = (token: string) => fetch(`http://127.0.0.1:${port}/v2/`, { headers: { authorization: `Bearer ${token}` } });
      const stackKey = Buffer.from(testEnv().MERIDIAN_TOKEN_KEY!, 'base64');
      const oldFallback = Buffer.from('bWVyaWRpYW4tZGV2LW9ubHktdG9rZW4tc2lnbmluZy1rZXk=', 'base64');
      expect((await ping(await sign(stackKey))).status).toBe(200);
      expect((await ping(await sign(oldFallback))).status).toBe(401);
    } finally {
      child.kill('SIGTERM');
      await new Promise((r) => child.once('exit', r));
    }
  });
});
