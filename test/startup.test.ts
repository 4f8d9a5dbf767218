// Start-up through the real entry point: bad configuration and taken ports end the process with
// one line naming the problem, not a stack trace.
import { spawn } from 'node:child_process';
import net from 'node:net';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { PROJECT_ROOT } from '../devstack/tools.ts';
import { ensureTestLocations, testEnv } from './support/harness.ts';

function runApi(env: Record<string, string | undefined>): Promise<{ code: number | null; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(path.join(PROJECT_ROOT, 'node_modules/.bin/tsx'), ['api/main.ts'], {
      cwd: PROJECT_ROOT,
      env: { ...process.env, ...testEnv(), ...env },
    });
    let stderr = '';
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), 60_000);
    child.on('exit', (code) => {
      clearTimeout(timer);
      resolve({ code, stderr: stderr.trim() });
    });
  });
}

describe('API start-up', () => {
  it('refuses an unknown location in the storage preference with one line naming the variable', async () => {
    await ensureTestLocations();
    const r = await runApi({ MERIDIAN_STORAGE_PREFERENCE: 'us-east,mars-north' });
    expect(r.code).toBe(2);
    expect(r.stderr).toBe('meridian: MERIDIAN_STORAGE_PREFERENCE: unknown storage location "mars-north"');
  });

  it('refuses a malformed URL with one line naming the variable', async () => {
    const r = await runApi({ REDIS_URL: 'redis//nope' });
    expect(r.code).toBe(2);
    expect(r.stderr).toBe('meridian: REDIS_URL: not a valid URL: "redis//nope"');
  });

  it('says clearly when its port is taken', async () => {
    const blocker = net.createServer();
    await new Promise<void>((r) => blocker.listen(0, '127.0.0.1', r));
    const port = (blocker.address() as net.AddressInfo).port;
    try {
      const r = await runApi({ PORT: String(port) });
      expect(r.code).toBe(2);
      expect(r.stderr.split('\n')).toHaveLength(1);
      expect(r.stderr).toContain(`127.0.0.1:${port}`);
      expect(r.stderr).toMatch(/already in use.*PORT/);
    } finally {
      blocker.close();
    }
  });
});
