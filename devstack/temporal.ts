// The Temporal dev server (the `temporal` CLI), with its state in a SQLite file so workflows
// survive restarts, and Meridian's search attributes registered at launch.
import { mkdirSync } from 'node:fs';
import path from 'node:path';
import { searchAttributeFlags } from '../temporal.config.ts';
import { canConnect } from './ports.ts';
import { ManagedProcess } from './process.ts';
import { toolPath } from './tools.ts';

export interface TemporalServerOptions {
  port: number;
  /** Web UI port; omit for a headless server. */
  uiPort?: number;
  dataDir: string;
  logFile: string;
  namespace?: string;
  /** `--dynamic-config-value` settings, e.g. a low continue-as-new suggestion for recording histories. */
  dynamicConfig?: Record<string, unknown>;
}

export function temporalServer(opts: TemporalServerOptions): ManagedProcess {
  mkdirSync(opts.dataDir, { recursive: true });
  const args = [
    'server',
    'start-dev',
    '--ip',
    '127.0.0.1',
    '--port',
    String(opts.port),
    '--db-filename',
    path.join(opts.dataDir, 'temporal.db'),
    // SQLite's defaults (a rollback journal, a sync on every commit) made the dev server the
    // bottleneck of replication: a mirror of 50 tags finished replicating 13 s after the run, its
    // replicateBlob workflows averaging 8.8 s start to close; with WAL and NORMAL sync it finishes
    // with the run (1.4 s each). WAL with NORMAL keeps every commit across a crash of the server;
    // only a power loss can drop the last ones, which a development stack can afford.
    '--sqlite-pragma',
    'journal_mode=wal',
    '--sqlite-pragma',
    'synchronous=normal',
    '--log-level',
    'warn',
    ...(opts.uiPort ? ['--ui-port', String(opts.uiPort)] : ['--headless']),
    ...(opts.namespace && opts.namespace !== 'default' ? ['--namespace', opts.namespace] : []),
    ...searchAttributeFlags().flatMap((f) => ['--search-attribute', f]),
    ...Object.entries(opts.dynamicConfig ?? {}).flatMap(([k, v]) => ['--dynamic-config-value', `${k}=${JSON.stringify(v)}`]),
  ];
  return new ManagedProcess({
    name: 'temporal',
    command: toolPath('temporal'),
    args,
    logFile: opts.logFile,
    readyTimeoutMs: 90_000,
    ready: async () => {
      if (!(await canConnect(opts.port))) return false;
      // The port opens before the namespace and search attributes are ready.
      const { Connection } = await import('@temporalio/client');
      const conn = await Connection.connect({ address: `127.0.0.1:${opts.port}`, connectTimeout: 1000 });
      try {
        const r = await conn.operatorService.listSearchAttributes({ namespace: opts.namespace ?? 'default' });
        return Object.keys(r.customAttributes ?? {}).includes('MeridianBlobDigest');
      } finally {
        await conn.close();
      }
    },
  });
}
