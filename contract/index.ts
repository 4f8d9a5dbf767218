// The Temporal contract, declared once and imported by both sides: every workflow type Meridian
// runs (name, task queue, signature), their inputs and results, queries and failure types.
// Workflows (workflows/) implement it — workflows/index.ts fails to compile when an export is
// missing or has another signature — and clients start, query and schedule through it with
// typed handles (platform/workflows.ts). Sandbox-safe: no Node modules, no environment.
//
// A new workflow type: declare it in a file here, add it to WORKFLOWS, export its
// implementation from workflows/index.ts.
import { collectGarbageWorkflow } from './gc.ts';
import { expireUploadsWorkflow } from './maintenance.ts';
import { deliverMirrorNotificationWorkflow, mirrorSyncWorkflow, reconcileMirrorWorkflow } from './mirror.ts';
import { backfillWorkflow, removeLocationWorkflow, replicateBlobsWorkflow, replicateBlobWorkflow } from './replication.ts';
import { sweepOrphansWorkflow } from './orphans.ts';
import { scrubLocationWorkflow } from './scrub.ts';
import type { WorkflowDefinition, WorkflowOf } from './define.ts';

export * from './define.ts';
export * from './gc.ts';
export * from './maintenance.ts';
export * from './mirror.ts';
export * from './orphans.ts';
export * from './replication.ts';
export * from './scrub.ts';

/** Keyed by each definition's own name, so a key and its workflow type cannot disagree. */
function byName<const D extends readonly WorkflowDefinition[]>(defs: D): { [X in D[number] as X['name']]: X } {
  return Object.fromEntries(defs.map((d) => [d.name, d])) as { [X in D[number] as X['name']]: X };
}

export const WORKFLOWS = byName([
  replicateBlobWorkflow,
  replicateBlobsWorkflow,
  backfillWorkflow,
  removeLocationWorkflow,
  expireUploadsWorkflow,
  collectGarbageWorkflow,
  scrubLocationWorkflow,
  sweepOrphansWorkflow,
  mirrorSyncWorkflow,
  reconcileMirrorWorkflow,
  deliverMirrorNotificationWorkflow,
]);

export type WorkflowName = keyof typeof WORKFLOWS;

/** The declared workflow of that type name, if any (the outbox relay starts by stored name). */
export function workflowDefinition(name: string): WorkflowDefinition | undefined {
  return Object.prototype.hasOwnProperty.call(WORKFLOWS, name) ? (WORKFLOWS as Record<string, WorkflowDefinition>)[name] : undefined;
}

/** What workflows/index.ts must export: each declared type, under its name, with its signature. */
export type WorkflowImplementations = { [K in WorkflowName]: WorkflowOf<(typeof WORKFLOWS)[K]> };

/** Compiles only when `T` implements every declared workflow (used by workflows/index.ts). */
export type ImplementsContract<T extends WorkflowImplementations> = T;
