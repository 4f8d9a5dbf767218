// Orphan sweep activities: thin adapters over gc/orphans.ts. A location's sweep runs on its own
// copy task queue (in its region: listing and deleting stay next to its storage).
import { Context } from '@temporalio/activity';
import { ABORT_INCOMPLETE_UPLOADS_DAYS, type OrphanSweep } from '../contract/orphans.ts';
import { sweepOrphans } from '../gc/orphans.ts';
import type { Services } from '../platform/services.ts';
import { toFailure } from './replication.ts';

export function createOrphanActivities(s: Pick<Services, 'db' | 'locations' | 'config' | 'logger'>) {
  const deps = { db: s.db, locations: s.locations };
  const log = s.logger.child({ component: 'orphans' });
  /** Lifecycle rule outcomes per location, so an unsupported server is logged once per process. */
  const lifecycle = new Map<string, 'added' | 'present' | 'unsupported'>();

  async function ensureLifecycleRule(location: string): Promise<OrphanSweep['lifecycleRule']> {
    const known = lifecycle.get(location);
    if (known === 'unsupported' || known === 'present') return known;
    const loc = (await s.locations.fresh()).byName(location);
    if (!loc?.driver.ensureAbortIncompleteUploadsRule) return undefined;
    const prefix = loc.pathPrefix.replace(/^\/+|\/+$/g, '');
    const outcome = await loc.driver.ensureAbortIncompleteUploadsRule(prefix ? `${prefix}/` : '', ABORT_INCOMPLETE_UPLOADS_DAYS);
    lifecycle.set(location, outcome === 'added' ? 'present' : outcome);
    if (outcome === 'unsupported') log.warn({ location }, 'the storage server has no bucket lifecycle rules; incomplete multipart uploads are aborted by the orphan sweep only');
    if (outcome === 'added') log.info({ location, days: ABORT_INCOMPLETE_UPLOADS_DAYS }, 'lifecycle rule added: incomplete multipart uploads are aborted after it');
    return outcome;
  }

  return {
    /** MERIDIAN_GC_GRACE of the workers (the workflow cannot read the environment). */
    orphanGraceSeconds: async (): Promise<number> => s.config.gcGraceSeconds,

    orphanSweepLocations: async (): Promise<string[]> => (await s.locations.fresh()).all().map((l) => l.name),

    async sweepLocationOrphans(input: { location: string; graceSeconds: number; dryRun: boolean }): Promise<OrphanSweep> {
      const ctx = Context.current();
      try {
        const lifecycleRule = input.dryRun ? undefined : await ensureLifecycleRule(input.location);
        const r = await sweepOrphans(deps, input, {
          checkpoint: ctx.info.heartbeatDetails as OrphanSweep | undefined,
          heartbeat: (p) => ctx.heartbeat(p),
          signal: ctx.cancellationSignal,
        });
        if (r.orphanObjects + r.orphanMultipart > 0) {
          log.info({ location: input.location, dryRun: input.dryRun, objects: r.orphanObjects, bytes: r.orphanBytes, multipart: r.orphanMultipart }, 'orphans swept');
        }
        return { ...r, ...(lifecycleRule ? { lifecycleRule } : {}) };
      } catch (e) {
        throw toFailure(e);
      }
    },
  };
}
