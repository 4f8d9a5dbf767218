// Replay: every history under test/histories/ (recorded by scripts/record-histories.ts from each
// workflow type's happy, continue-as-new, cancellation and failure paths) is replayed against the
// workflow bundle the workers load. A workflow change that alters the commands an open workflow
// already issued — reordering activities, a new timer, a removed child — fails here with a
// non-determinism error instead of leaving running backfills, removals and retrying replications
// stuck after a deploy. Guard such changes with patched() (README, "Deploying a workflow change").
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Worker, type ReplayResult } from '@temporalio/worker';
import { beforeAll, describe, expect, it } from 'vitest';
import { WORKFLOWS } from '../contract/index.ts';
import { stackInfo } from './support/harness.ts';
import { readHistoryFile } from './support/histories.ts';

const DIR = fileURLToPath(new URL('./histories/', import.meta.url));
const FILES = readdirSync(DIR).filter((f) => f.endsWith('.json')).sort();

interface RecordedHistory {
  events: { eventType: string; workflowExecutionStartedEventAttributes?: { workflowType?: { name?: string } } }[];
}

function load(file: string): RecordedHistory {
  return JSON.parse(readFileSync(path.join(DIR, file), 'utf8')) as RecordedHistory;
}

describe('workflow replay', () => {
  const results = new Map<string, ReplayResult>();

  beforeAll(async () => {
    const histories = FILES.map((file) => ({ workflowId: file, history: readHistoryFile(path.join(DIR, file)) }));
    for await (const r of Worker.runReplayHistories({ workflowBundle: { codePath: stackInfo().workflowBundlePath } }, histories)) {
      results.set(r.workflowId, r);
    }
  });

  it('has histories of every declared workflow type, including continue-as-new, cancellation and failure', () => {
    const types = new Set(FILES.map((f) => load(f).events[0]?.workflowExecutionStartedEventAttributes?.workflowType?.name));
    const missing = Object.keys(WORKFLOWS).filter((t) => !types.has(t));
    // A workflow type added since the last recording is reported, not failed: record it with
    // `npm run record:histories` (scripts/record-histories.ts) when it lands.
    if (missing.length) console.warn(`no recorded history for workflow types: ${missing.join(', ')} (npm run record:histories)`);
    const closes = new Set(FILES.map((f) => load(f).events.at(-1)?.eventType));
    expect([...closes].sort()).toEqual(
      [
        'EVENT_TYPE_WORKFLOW_EXECUTION_CANCELED',
        'EVENT_TYPE_WORKFLOW_EXECUTION_COMPLETED',
        'EVENT_TYPE_WORKFLOW_EXECUTION_CONTINUED_AS_NEW',
        'EVENT_TYPE_WORKFLOW_EXECUTION_FAILED',
      ].sort(),
    );
    expect(types.size).toBeGreaterThanOrEqual(7);
  });

  it.each(FILES)('%s replays without non-determinism', (file) => {
    const r = results.get(file);
    expect(r, `${file} was not replayed`).toBeDefined();
    expect(r!.error, r!.error ? `${file}: ${String(r!.error)}` : undefined).toBeUndefined();
  });
});
