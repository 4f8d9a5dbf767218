// The production start: Meridian compiled once into dist/ and run with plain node — no
// TypeScript loader in the serving processes — with several API processes behind one port,
// supervised (a dead worker is replaced, SIGTERM stops them all).
import { describe, expect, it } from 'vitest';
import { commandLine, startCompiledApi } from './support/compiled-api.ts';

describe('compiled production start', () => {
  it('serves /v2 from two plain-node worker processes behind one port, replaces a dead one, stops on SIGTERM', async () => {
    const api = await startCompiledApi({ workers: 2 });
    try {
      const workers = api.workers();
      expect(workers).toHaveLength(2);
      for (const pid of [api.primary.pid!, ...workers]) {
        const argv = commandLine(pid);
        expect(argv[0]).toBe(process.execPath);
        // Workers may carry V8 flags (api/main.ts) before the script.
        expect(argv.slice(1).find((a) => !a.startsWith('--'))).toMatch(/\/dist\/api\/main\.js$/);
        expect(argv.join(' ')).not.toMatch(/tsx|--import|--require|--loader/);
      }
      // The ping wants credentials: answered by the registry, not a bare socket.
      const ping = await fetch(`${api.url}/v2/`);
      expect(ping.status).toBe(401);
      expect(ping.headers.get('www-authenticate')).toMatch(/^Bearer realm=/);

      process.kill(workers[0]!, 'SIGKILL');
      await expect.poll(() => api.workers().filter((p) => p !== workers[0]).length, { timeout: 30_000 }).toBe(2);
      expect((await fetch(`${api.url}/v2/`)).status).toBe(401);
    } finally {
      const survivors = api.workers();
      expect(await api.stop()).toBe(0);
      for (const pid of survivors) expect(isAlive(pid)).toBe(false);
    }
  });

  it('fails a bad configuration with one line, whatever the number of workers', async () => {
    await expect(startCompiledApi({ workers: 2, env: { MERIDIAN_STORAGE_PREFERENCE: 'us-east,mars-north' } })).rejects.toThrow(
      /exited with 2: meridian: MERIDIAN_STORAGE_PREFERENCE: unknown storage location "mars-north"\n$/,
    );
  });
});

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}
