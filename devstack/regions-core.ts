// The shared core of the region topology: its own PostgreSQL cluster and Redis server (so the
// fault tests may restart them without touching the machine's), on loopback in the root
// namespace; the regions reach them through their WAN relays.
import { execFile } from 'node:child_process';
import { chownSync, existsSync, mkdirSync } from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';
import { canConnect } from './ports.ts';
import { ManagedProcess } from './process.ts';

const exec = promisify(execFile);

/** PostgreSQL's binaries: next to `postgres` on PATH, or Debian's versioned folder. */
async function pgBin(name: 'postgres' | 'initdb'): Promise<string> {
  const { stdout } = await exec('sh', ['-c', `command -v ${name} || ls -d /usr/lib/postgresql/*/bin/${name} | sort -V | tail -1`]);
  const p = stdout.trim().split('\n')[0];
  if (!p) throw new Error(`${name} not found: install PostgreSQL`);
  return p;
}

/** PostgreSQL refuses to run as root: as root, the cluster belongs to the `postgres` user. */
async function serverUser(): Promise<{ uid: number; gid: number } | undefined> {
  if (process.getuid?.() !== 0) return undefined;
  const { stdout } = await exec('id', ['-u', 'postgres']);
  const { stdout: g } = await exec('id', ['-g', 'postgres']);
  return { uid: Number(stdout.trim()), gid: Number(g.trim()) };
}

export async function postgresServer(opts: { dataDir: string; port: number; logFile: string }): Promise<ManagedProcess> {
  const user = await serverUser();
  const pgdata = path.join(opts.dataDir, 'pgdata');
  const sockets = path.join(opts.dataDir, 'pgsock');
  for (const d of [opts.dataDir, sockets]) {
    mkdirSync(d, { recursive: true });
    if (user) chownSync(d, user.uid, user.gid);
  }
  if (!existsSync(path.join(pgdata, 'PG_VERSION'))) {
    await exec(await pgBin('initdb'), ['-D', pgdata, '-U', 'postgres', '-A', 'trust', '--no-sync'], {
      ...(user ? { uid: user.uid, gid: user.gid } : {}),
      cwd: opts.dataDir,
    });
  }
  return new ManagedProcess({
    name: 'postgres',
    command: await pgBin('postgres'),
    args: ['-D', pgdata, '-p', String(opts.port), '-k', sockets, '-c', 'listen_addresses=127.0.0.1', '-c', 'max_connections=300'],
    cwd: opts.dataDir,
    ...(user ?? {}),
    logFile: opts.logFile,
    // Fast shutdown: disconnects clients and stops (SIGTERM would wait for every pool to leave).
    stopSignal: 'SIGINT',
    readyTimeoutMs: 60_000,
    // Accepting connections is not enough: until recovery ends it answers "starting up".
    ready: async () => {
      if (!(await canConnect(opts.port))) return false;
      const { default: postgres } = await import('postgres');
      const sql = postgres(`postgres://postgres@127.0.0.1:${opts.port}/postgres`, { max: 1, connect_timeout: 2, onnotice: () => {} });
      try {
        await sql`select 1`;
        return true;
      } catch {
        return false;
      } finally {
        await sql.end({ timeout: 1 });
      }
    },
  });
}

export function redisServer(opts: { dataDir: string; port: number; logFile: string }): ManagedProcess {
  mkdirSync(opts.dataDir, { recursive: true });
  return new ManagedProcess({
    name: 'redis',
    command: 'redis-server',
    // Append-only with fsync every second: a restart keeps what was written (Meridian's Redis
    // holds caches and counters; its intent is in PostgreSQL).
    args: ['--port', String(opts.port), '--bind', '127.0.0.1', '--dir', opts.dataDir, '--appendonly', 'yes', '--save', '', '--protected-mode', 'no'],
    logFile: opts.logFile,
    readyTimeoutMs: 20_000,
    ready: () => canConnect(opts.port),
  });
}
