// One S3-compatible server per simulated region: Versity Gateway over a local folder.
import { mkdirSync } from 'node:fs';
import path from 'node:path';
import { canConnect } from './ports.ts';
import { ManagedProcess } from './process.ts';
import { toolPath } from './tools.ts';

export interface S3ServerOptions {
  region: string;
  port: number;
  dataDir: string;
  logFile: string;
  accessKeyId: string;
  secretAccessKey: string;
}

/** Versity Gateway answers every request with `Connection: close` unless told otherwise, so each
 * S3 call (a copy makes three or four) paid a new TCP connection: 1,400 of them in one mirror
 * bench run. S3 itself and every production S3-compatible server keep connections alive, as
 * Meridian's S3 client asks; across the simulated regions' latency a new connection also costs
 * a round trip. */
export const VERSITYGW_FLAGS = ['--keep-alive', '--quiet'];

export function s3Server(opts: S3ServerOptions): ManagedProcess {
  const root = path.join(opts.dataDir, 'objects');
  const meta = path.join(opts.dataDir, 'meta');
  mkdirSync(root, { recursive: true });
  mkdirSync(meta, { recursive: true });
  return new ManagedProcess({
    name: `s3 ${opts.region}`,
    command: toolPath('versitygw'),
    // Credentials travel by environment, not argv, so they do not show in `ps`.
    args: ['--port', `127.0.0.1:${opts.port}`, ...VERSITYGW_FLAGS, 'posix', '--sidecar', meta, root],
    env: { ROOT_ACCESS_KEY_ID: opts.accessKeyId, ROOT_SECRET_ACCESS_KEY: opts.secretAccessKey },
    logFile: opts.logFile,
    readyTimeoutMs: 30_000,
    ready: () => canConnect(opts.port),
  });
}

export function s3Endpoint(port: number): string {
  return `http://127.0.0.1:${port}`;
}
