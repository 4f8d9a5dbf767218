// Orphan sweep (superusers only):
//   POST /api/v1/orphans            {dry_run?, grace_seconds?}  start a sweep, or join the running one (202)
//   GET  /api/v1/orphans[?dry_run=true]                         progress, or the report of the last sweep
import { orphanSweepStatus, startOrphanSweep } from '../../gc/orphan-operations.ts';
import type { Services } from '../../platform/services.ts';
import type { Route } from '../router.ts';
import { dryRunOperationRoutes } from './dry-run-operations.ts';

export function orphanRoutes(s: Services): Route[] {
  return dryRunOperationRoutes(s, '/api/v1/orphans', { start: (input) => startOrphanSweep(s, input), status: (dryRun) => orphanSweepStatus(s, dryRun) });
}
