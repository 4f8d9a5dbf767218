// Start-up through the real entry point: bad configuration and taken ports end the process with
// one line naming the problem, not a stack trace.
import net from 'node:net';
import { describe, expect, it } from 'vitest';
import { runEntryPoint } from './support/entrypoints.ts';
import { ensureTestLocations } from './support/harness.ts';

describe('API start-up', () => {
  it('refuses an unknown location in the storage preference with one line naming the variable', async () => {
    await ensureTestLocations();
    const r = await runEntryPoint('api/main.ts', [], { MERIDIAN_STORAGE_PREFERENCE: 'us-east,mars-north' });
    expect(r.code).toBe(2);
    expect(r.stderr).toBe('meridian: MERIDIAN_STORAGE_PREFERENCE: unknown storage location "mars-north"');
  });

  it('refuses a malformed URL with one line naming the variable', async () => {
    const r = await runEntryPoint('api/main.ts', [], { REDIS_URL: 'redis//nope' });
    expect(r.code).toBe(2);
    expect(r.stderr).toBe('meridian: REDIS_URL: not a valid URL: "redis//nope"');
  });

  it('says clearly when its port is taken', async () => {
    const blocker = net.createServer();
    await new Promise<void>((r) => blocker.listen(0, '127.0.0.1', r));
    const port = (blocker.address() as net.AddressInfo).port;
    try {
      const r = await runEntryPoint('api/main.ts', [], { PORT: String(port) });
      expect(r.code).toBe(2);
      expect(r.stderr.split('\n')).toHaveLength(1);
      expect(r.stderr).toContain(`127.0.0.1:${port}`);
      expect(r.stderr).toMatch(/already in use.*PORT/);
    } finally {
      blocker.close();
    }
  });
});
