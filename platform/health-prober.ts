// The periodic probe behind the location breakers: a small write, read and delete in every
// location. A probe that fails (refused, an error answer, different bytes) opens the location's
// breaker at once; one that is merely slow is not proof of an outage: it gets PROBE_TIMEOUT_MS,
// and running out of it counts as one failure towards the breaker's threshold (three within its
// window, from any instance), which any successful probe resets. Before, a probe got 2.5 s and a
// timeout opened the breaker at once, for every instance: on a busy machine (or from a region
// 120 ms away) a slow-but-alive location — often an instance's own, nearest one — was abandoned
// for a remote copy until the next probe closed it again. A success is the only thing that
// closes a breaker. Every API instance and control worker runs one, so a location that comes
// back is noticed within one interval wherever the probe runs.
import { probeLocation } from './health.ts';
import type { Services } from './services.ts';

/** How long one probe of one location may take before it counts as a failure. */
export const PROBE_TIMEOUT_MS = 10_000;

class ProbeTimeout extends Error {}

export function startHealthProber(s: Services, intervalMs = 3000, timeoutMs = PROBE_TIMEOUT_MS): { stop(): void } {
  let stopped = false;
  let timer: NodeJS.Timeout | undefined;
  /** Locations whose probe is still running: a slow one does not hold up the others' rounds. */
  const inFlight = new Set<string>();
  const probe = async (l: ReturnType<Services['locations']['all']>[number]) => {
    inFlight.add(l.name);
    try {
      await withTimeout(probeLocation(l.driver, l.pathPrefix, `probe-${s.config.instanceName}`), timeoutMs);
      await s.health.close(l.name);
    } catch (e) {
      // Shutting down: the drivers and connections are closing under the probe.
      if (stopped) return;
      const reason = e instanceof Error ? e.message : String(e);
      if (e instanceof ProbeTimeout) await s.health.reportFailure(l.name, reason);
      else await s.health.open(l.name, reason);
    } finally {
      inFlight.delete(l.name);
    }
  };
  const round = async () => {
    try {
      await s.locations.fresh();
      for (const l of s.locations.all()) if (!inFlight.has(l.name)) void probe(l);
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
      t = setTimeout(() => reject(new ProbeTimeout(`probe timed out after ${ms} ms`)), ms);
    }),
  ]);
}
