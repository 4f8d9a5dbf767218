// The production start: Meridian compiled once into dist/ and run with plain node — no
// TypeScript loader in the serving processes — with several API processes behind one port,
// supervised (a dead worker is replaced, also while PostgreSQL is away; SIGTERM stops them all).
import { describe, expect, it } from 'vitest';
import { freePort } from '../devstack/ports.ts';
import { WanLink } from '../devstack/regions-wan.ts';
import { commandLine, startCompiledApi } from './support/compiled-api.ts';
import { stackInfo } from './support/harness.ts';

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

  it('replaces a dead worker once PostgreSQL is back, trying again while it cannot start, with the other worker serving', async () => {
    // The API reaches PostgreSQL through a relay this test can cut, as a database restart would.
    const target = new URL(stackInfo().databaseUrl);
    const relayPort = await freePort();
    const relay = () => new WanLink({ listen: { host: '127.0.0.1', port: relayPort }, target: { host: target.hostname, port: Number(target.port) }, oneWayDelayMs: 0, bitsPerSecond: 1e12 });
    let link = relay();
    await link.start();
    const databaseUrl = Object.assign(new URL(target), { port: String(relayPort) }).toString();
    const api = await startCompiledApi({ workers: 2, env: { DATABASE_URL: databaseUrl } });
    try {
      const [victim, survivor] = api.workers();
      await link.close();
      process.kill(victim!, 'SIGKILL');
      // Its replacement cannot reach the database: it fails to start, and (unlike a failure while
      // the service starts) that does not stop the others; it is tried again.
      await expect.poll(() => api.output().match(/api: worker \d+ failed to start/g)?.length ?? 0, { timeout: 90_000 }).toBeGreaterThanOrEqual(1);
      expect(api.primary.exitCode).toBeNull();
      expect(isAlive(survivor!)).toBe(true);
      // The survivor still answers: without its database, "unavailable, retry".
      expect([401, 503]).toContain((await fetch(`${api.url}/v2/`)).status);

      link = relay();
      await link.start();
      await expect.poll(() => api.workers().filter((p) => p !== victim).length, { timeout: 60_000 }).toBe(2);
      await expect.poll(() => api.output().split('\n').filter((l) => l.includes('"msg":"registry API listening"')).length, { timeout: 60_000 }).toBe(3);
      expect((await fetch(`${api.url}/v2/`)).status).toBe(401);
    } finally {
      expect(await api.stop()).toBe(0);
      await link.close();
    }
    // Two start-ups of compiled workers and a few of failed ones: slow on a busy machine.
  }, 300_000);

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
