// Copying a run's tags a batch at a time (one activity per batch instead of one per tag): the
// tags of the batch are copied a few at once, each tried up to `attempts` times with the same
// backoff and Retry-After handling Temporal's retry policy gave the one-tag activity, and each
// outcome is recorded on the run as it comes. A batch retried after its worker died skips the
// tags whose outcome is already recorded, so it resumes where the last attempt stopped.
//
// Why: per tag, the one-tag activity cost a schedule/start/complete round trip through Temporal
// (and its database) plus a workflow task, which on a busy machine was a good part of a tag's
// time; a batch pays that once.
import { ManifestError } from '../registry/manifests.ts';
import { type CopyContext, copyTag, type TagResult } from './copy.ts';
import { sleep } from './semaphore.ts';
import { UpstreamError } from './upstream.ts';

export interface BatchOptions {
  /** Tags copied at once. */
  concurrency: number;
  /** Attempts per tag (at least 1). */
  attempts: number;
  /** Take no new tag once one has failed (the run will be rolled back anyway). */
  stopOnFailure: boolean;
  /** Outcomes an earlier attempt of this batch already recorded, by tag: not copied again. */
  recorded: Map<string, TagResult>;
  record: (r: TagResult) => Promise<void>;
  onRetry?: (tag: string, attempt: number, error: string, delayMs: number) => void;
}

export interface BatchSummary {
  /** Tags of the batch that were handled (all of them unless a failure stopped the batch). */
  taken: number;
  done: number;
  failed: number;
  bytes: number;
  firstError: string | null;
}

/** The message a failed tag is recorded with (as the one-tag activity's failure read). */
export function failureMessage(e: unknown): string {
  if (e instanceof ManifestError) return `the upstream's manifest was refused: ${e.message}`;
  return e instanceof Error ? e.message : String(e);
}

/**
 * How long to wait before trying a failed tag again, or undefined when it is not worth it: the
 * same classification as the activity's failure types (auth, refused, protocol and not-found are
 * final; throttling waits for Retry-After, bounded; anything else backs off 1 s, 2 s, … 30 s).
 */
export function retryDelayMs(e: unknown, attempt: number, attempts: number): number | undefined {
  if (attempt >= attempts) return undefined;
  if (e instanceof ManifestError) return undefined;
  if (e instanceof UpstreamError) {
    if (e.kind === 'throttled') return Math.min(Math.max(e.retryAfterSeconds ?? 5, 1), 600) * 1000;
    if (e.kind !== 'unavailable') return undefined;
  }
  return Math.min(1000 * 2 ** (attempt - 1), 30_000);
}

async function copyWithRetries(c: CopyContext, tag: string, o: BatchOptions): Promise<TagResult> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await copyTag(c, tag);
    } catch (e) {
      if (c.signal?.aborted) throw e;
      const delay = retryDelayMs(e, attempt, o.attempts);
      if (delay === undefined) return { tag, status: 'failed', error: failureMessage(e).slice(0, 1000) };
      o.onRetry?.(tag, attempt, failureMessage(e), delay);
      await sleep(delay, c.signal);
    }
  }
}

export async function copyTags(c: CopyContext, tags: string[], o: BatchOptions): Promise<BatchSummary> {
  const sum: BatchSummary = { taken: 0, done: 0, failed: 0, bytes: 0, firstError: null };
  const count = (r: TagResult) => {
    if (r.status === 'failed') {
      sum.failed++;
      sum.firstError ??= `${r.tag}: ${r.error ?? 'failed'}`;
    } else {
      sum.done++;
      sum.bytes += r.bytes ?? 0;
    }
  };
  let next = 0;
  let stop = false;
  const worker = async () => {
    while (!stop && next < tags.length) {
      const tag = tags[next++]!;
      sum.taken++;
      const earlier = o.recorded.get(tag);
      const r = earlier ?? (await copyWithRetries(c, tag, o));
      if (!earlier) await o.record(r);
      count(r);
      if (r.status === 'failed' && o.stopOnFailure) stop = true;
      c.heartbeat();
    }
  };
  // A cancel or a failure to record fails the batch (Temporal retries it), but only once every
  // copy has stopped: a cancelled sync rolls back after this returns, and no copy may move a tag
  // after that.
  const settled = await Promise.allSettled(
    Array.from({ length: Math.max(1, Math.min(o.concurrency, tags.length)) }, () =>
      worker().catch((e: unknown) => {
        stop = true;
        throw e;
      }),
    ),
  );
  const rejected = settled.find((r): r is PromiseRejectedResult => r.status === 'rejected');
  if (rejected) throw rejected.reason;
  return sum;
}
