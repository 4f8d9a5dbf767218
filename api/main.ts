// The registry API process: `node dist/api/main.js [--workers N]` (compiled by `npm run build`),
// or `node --import tsx api/main.ts` from the sources. It serves from MERIDIAN_API_WORKERS
// processes (one per core by default) sharing the port. The supervising primary imports only
// what it needs to count and fork the workers; the server's modules load in the workers.
import { ConfigError, loadConfig } from '../config.ts';
import { clusterSlot, runClustered } from '../platform/cluster.ts';
import { fatal } from '../platform/main.ts';

/** `--workers N` from the command line, else the configuration. */
function workerCount(argv: string[]): number {
  const config = loadConfig();
  if (argv.length === 0) return config.apiWorkers;
  if (argv.length === 2 && argv[0] === '--workers' && /^\d{1,3}$/.test(argv[1]!) && Number(argv[1]) >= 1) return Number(argv[1]);
  fatal('usage: api/main [--workers N]  (N ≥ 1; default MERIDIAN_API_WORKERS, else one per core)');
}

let workers: number;
try {
  workers = workerCount(process.argv.slice(2));
} catch (e) {
  if (e instanceof ConfigError) fatal(e.message);
  throw e;
}
runClustered(
  'api',
  workers,
  async () => {
    const { startApi } = await import('./server.ts');
    const api = await startApi(loadConfig(), undefined, { healthProber: clusterSlot() === 0 });
    api.services.logger.info({ url: api.url, pid: process.pid }, 'registry API listening');
    return () => api.close();
  },
  // A request's garbage is small and short-lived; V8's default young generation (up to 16 MB per
  // semi-space) mostly holds pages a worker keeps resident after its first busy minute. 4 MB
  // keeps an API worker ~25 MB smaller, idle and under the peer benchmark, at no measurable
  // cost in req/s there (bench/peer.ts prints both).
  { workerFlags: ['--max-semi-space-size=4'] },
);
