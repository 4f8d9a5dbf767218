// The periodic probe behind the location breakers: a small write, read and delete in every
// location. A failure opens the location's breaker at once; a success is the only thing that
// closes it. Every API instance and control worker runs one, so a location that comes back is
// noticed within one interval wherever the probe runs.
import { probeLocation } from './health.ts';
import type { Services } from './services.ts';

export function startHealthProber(s: Services, intervalMs = 3000): { stop(): void } {
  let stopped = false;
  let timer: NodeJS.Timeout | undefined;
  const round = async () => {
    try {
      await s.locations.fresh();
      await Promise.all(
        s.locations.all().map(async (l) => {
          try {
            await withTimeout(probeLocation(l.driver, l.pathPrefix, `probe-${s.config.instanceName}`), Math.max(1000, intervalMs - 500));
            await s.health.close(l.name);
          } catch (e) {
            await s.health.open(l.name, e instanceof Error ? e.message : String(e));
          }
        }),
      );
    } catch (e) {
      s.logger.debug({ err: (e as Error).message }, 'health probe round failed');
    }
    if (!stopped) timer = setTimeout(round, intervalMs);
  };
  timer = setTimeout(round, 0);
  return {
    stop() {
      stopped = true;
      clearTimeout(timer);
    },
  };
}

function withTimeout<T>(p: Promise<T>, ms: number): Promise<T> {
  let t: NodeJS.Timeout;
  return Promise.race([
    p.finally(() => clearTimeout(t)),
    new Promise<T>((_, reject) => {
      t = setTimeout(() => reject(new Error(`probe timed out after ${ms} ms`)), ms);
    }),
  ]);
}
