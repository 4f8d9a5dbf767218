// Mirror activities. Those that read the upstream run on the mirror task queue (network-heavy);
// the bookkeeping ones run on the control queue. Upstream credentials are opened here, from the
// database, and never pass through workflow inputs or results (which the Temporal UI shows).
import { setMaxListeners } from 'node:events';
import { ApplicationFailure, Context } from '@temporalio/activity';
import { MIRROR_FAILURES, type MirrorEvent, type MirrorNotificationInput, type MirrorSettings } from '../contract/mirror.ts';
import type { Services } from '../platform/services.ts';
import { passwordContext } from '../mirror/config.ts';
import { openProxySettings } from '../mirror/proxy-secrets.ts';
import { type BatchSummary, copyTags } from '../mirror/batch.ts';
import { BlobFlights, copyTag, type TagResult } from '../mirror/copy.ts';
import { TagFilter } from '../mirror/globs.ts';
import { parseReference, UpstreamHostPolicy } from '../mirror/reference.ts';
import { beginRun, type BeginResult, finishRun, loadRun, pruneTags, recordTagResult, rollbackRun, type RunStatus, type RunSummary, savePlan } from '../mirror/runs.ts';
import { reconcileMirror, type ReconcileResult } from '../mirror/schedule.ts';
import { upstreamSemaphore } from '../mirror/semaphore.ts';
import { UpstreamClient, UpstreamError } from '../mirror/upstream.ts';
import { deliver, DeliveryError, listSubscriptions } from '../mirror/webhooks.ts';
import { findRepository } from '../registry/repositories.ts';
import { ManifestError } from '../registry/manifests.ts';

export interface PlanResult {
  /** Earlier releases returned the matching tags themselves (a 2 MB payload near 50k tags); the
   * plan is saved on the run and read a window at a time (loadMirrorPlan). */
  tags?: string[];
  /** How many tags match. */
  planned: number;
  /** All tags the upstream has (before the globs). */
  upstreamTags: number;
}

/** Upstream errors as Temporal failures: which retry, and after how long. */
function toFailure(e: unknown): unknown {
  if (e instanceof UpstreamError) {
    switch (e.kind) {
      case 'throttled':
        // Honour Retry-After (bounded: a day-long Retry-After should not park a worker slot).
        return ApplicationFailure.create({
          type: MIRROR_FAILURES.throttled,
          message: e.message,
          nextRetryDelay: `${Math.min(Math.max(e.retryAfterSeconds ?? 5, 1), 600)}s`,
        });
      case 'auth':
        return ApplicationFailure.nonRetryable(e.message, MIRROR_FAILURES.auth);
      case 'refused':
        return ApplicationFailure.nonRetryable(e.message, MIRROR_FAILURES.refused);
      case 'protocol':
        return ApplicationFailure.nonRetryable(e.message, MIRROR_FAILURES.protocol);
      case 'not_found':
        return ApplicationFailure.nonRetryable(e.message, MIRROR_FAILURES.notFound);
      default:
        return ApplicationFailure.retryable(e.message, MIRROR_FAILURES.unavailable);
    }
  }
  if (e instanceof ManifestError) return ApplicationFailure.nonRetryable(`the upstream's manifest was refused: ${e.message}`, MIRROR_FAILURES.protocol);
  return e;
}

export function createMirrorActivities(s: Services) {
  const log = s.logger.child({ component: 'mirror' });
  const flights = new BlobFlights();
  const policy = () => new UpstreamHostPolicy(s.config.mirrorAllowedHosts);
  /** Clients (connections, cached tokens) shared by a run's tag activities in this process. */
  const clients = new Map<string, { client: UpstreamClient; timer: NodeJS.Timeout }>();

  async function upstreamFor(runRowId: number): Promise<{ client: UpstreamClient; ctx: NonNullable<Awaited<ReturnType<typeof loadRun>>> }> {
    const ctx = await loadRun(s.db, runRowId);
    if (!ctx) throw ApplicationFailure.nonRetryable(`mirror run ${runRowId} no longer exists (config deleted)`, MIRROR_FAILURES.runGone);
    const key = `${ctx.config.id}:${ctx.config.updatedAt.getTime()}`;
    let entry = clients.get(key);
    if (!entry) {
      const password = ctx.config.passwordEnc ? s.secrets.open(ctx.config.passwordEnc, passwordContext(ctx.config.repositoryId)) : null;
      let reference;
      try {
        reference = parseReference(ctx.config.externalReference);
      } catch (e) {
        throw ApplicationFailure.nonRetryable((e as Error).message, MIRROR_FAILURES.refused);
      }
      const client = new UpstreamClient({
        reference,
        username: ctx.config.username,
        password,
        verifyTls: ctx.config.verifyTls,
        proxy: openProxySettings(s.secrets, ctx.config.repositoryId, ctx.config.proxy),
        policy: policy(),
        limiter: upstreamSemaphore(s.redis, reference.apiAuthority.toLowerCase(), s.config.mirrorUpstreamConcurrency, log),
      });
      entry = { client, timer: setTimeout(() => {}, 0) };
      clients.set(key, entry);
    }
    clearTimeout(entry.timer);
    const e = entry;
    e.timer = setTimeout(() => {
      clients.delete(key);
      void e.client.close();
    }, 120_000);
    e.timer.unref();
    return { client: entry.client, ctx };
  }

  return {
    /** Brings the repository's schedule and running sync in step with its mirror row. */
    async reconcileMirrorState(input: { repository: string }): Promise<ReconcileResult> {
      return reconcileMirror({ db: s.db, client: s.temporal.client, logger: log }, input.repository);
    },

    async beginMirrorRun(input: { repository: string; workflowId: string; runId: string }): Promise<BeginResult & { settings: MirrorSettings }> {
      const begun = await beginRun(s.db, input);
      return { ...begun, settings: { tagParallelism: s.config.mirrorTagParallelism, tagAttempts: s.config.mirrorTagAttempts, tagsPerRun: s.config.mirrorTagsPerRun } };
    },

    /** Lists the upstream's tags (every page) and keeps those matching the globs. */
    async planMirrorRun(input: { runRowId: number }): Promise<PlanResult> {
      const { client, ctx } = await upstreamFor(input.runRowId);
      const actx = Context.current();
      const beat = setInterval(() => actx.heartbeat(), 3000);
      try {
        const all = await client.listTags(actx.cancellationSignal);
        const tags = new TagFilter(ctx.config.tagGlobs).filter(all).sort();
        await savePlan(s.db, input.runRowId, tags);
        log.info({ repository: ctx.repo.fullName, upstream: ctx.config.externalReference, upstreamTags: all.length, matching: tags.length }, 'mirror run planned');
        return { planned: tags.length, upstreamTags: all.length };
      } catch (e) {
        throw toFailure(e);
      } finally {
        clearInterval(beat);
      }
    },

    /** The window of the saved plan a workflow run works through. Without a window (what earlier
     * releases asked for) the whole plan. */
    async loadMirrorPlan(input: { runRowId: number; offset?: number; limit?: number }): Promise<string[] | { offset: number; tags: string[] }> {
      const ctx = await loadRun(s.db, input.runRowId);
      const all = ctx?.run.plannedTags ?? [];
      if (input.offset === undefined) return all;
      return { offset: input.offset, tags: all.slice(input.offset, input.offset + (input.limit ?? all.length)) };
    },

    /** Copies one tag; records its outcome on the run when it succeeds. */
    async mirrorTag(input: { runRowId: number; tag: string }): Promise<TagResult> {
      const { client, ctx } = await upstreamFor(input.runRowId);
      const actx = Context.current();
      // Also while waiting on a slow upstream or for a host slot: a cancel is learnt from a heartbeat.
      const beat = setInterval(() => actx.heartbeat(), 3000);
      // Each concurrent request of the copy listens on the signal: more than Node's default ten.
      setMaxListeners(64, actx.cancellationSignal);
      try {
        const result = await copyTag(
          { s, repo: ctx.repo, upstream: client, heartbeat: () => actx.heartbeat(), signal: actx.cancellationSignal, flights },
          input.tag,
        );
        await recordTagResult(s.db, input.runRowId, result);
        return result;
      } catch (e) {
        if (actx.cancellationSignal.aborted) throw e;
        log.warn({ repository: ctx.repo.fullName, tag: input.tag, err: (e as Error).message, attempt: actx.info.attempt }, 'mirror tag attempt failed');
        throw toFailure(e);
      } finally {
        clearInterval(beat);
      }
    },

    /**
     * Copies a batch of the run's tags, a few at once, each with its own retries; records every
     * outcome on the run. A retry of the batch skips the tags an earlier attempt recorded.
     */
    async mirrorTags(input: { runRowId: number; tags: string[]; concurrency: number; attempts: number; stopOnFailure: boolean }): Promise<BatchSummary> {
      const { client, ctx } = await upstreamFor(input.runRowId);
      const actx = Context.current();
      const beat = setInterval(() => actx.heartbeat(), 3000);
      setMaxListeners(64 * Math.max(1, input.concurrency), actx.cancellationSignal);
      const wanted = new Set(input.tags);
      const recorded = new Map<string, TagResult>();
      if (actx.info.attempt > 1) for (const t of ctx.run.tagResults ?? []) if (wanted.has(t.tag)) recorded.set(t.tag, t as TagResult);
      try {
        return await copyTags(
          { s, repo: ctx.repo, upstream: client, heartbeat: () => actx.heartbeat(), signal: actx.cancellationSignal, flights },
          input.tags,
          {
            concurrency: input.concurrency,
            attempts: input.attempts,
            stopOnFailure: input.stopOnFailure,
            recorded,
            record: (r) => recordTagResult(s.db, input.runRowId, r),
            onRetry: (tag, attempt, err, delayMs) => log.warn({ repository: ctx.repo.fullName, tag, err, attempt, retryInMs: delayMs }, 'mirror tag attempt failed'),
          },
        );
      } catch (e) {
        // Cancelled: whatever a copy failed with as it was cut off (a closed stream, an aborted
        // upload), the batch reports the cancel itself, or Temporal would record a failure.
        if (actx.cancellationSignal.aborted) throw actx.cancellationSignal.reason ?? e;
        log.warn({ repository: ctx.repo.fullName, err: (e as Error).message, attempt: actx.info.attempt }, 'mirror tag batch attempt failed');
        throw toFailure(e);
      } finally {
        clearInterval(beat);
      }
    },

    async recordMirrorTagFailure(input: { runRowId: number; tag: string; error: string }): Promise<void> {
      await recordTagResult(s.db, input.runRowId, { tag: input.tag, status: 'failed', error: input.error.slice(0, 1000) });
    },

    async pruneMirrorTags(input: { runRowId: number }): Promise<string[]> {
      return pruneTags(s.db, input.runRowId);
    },

    async rollbackMirrorRun(input: { runRowId: number }): Promise<{ restored: number; removed: number; missing: string[] }> {
      const r = await rollbackRun(s.db, input.runRowId);
      log.info({ runRowId: input.runRowId, ...r }, 'mirror run rolled back');
      return r;
    },

    async finishMirrorRun(input: { runRowId: number; status: RunStatus; reason: string | null }): Promise<RunSummary | undefined> {
      const summary = await finishRun(s.db, input.runRowId, input.status, input.reason);
      if (summary) {
        log.info(
          { repository: summary.repository, status: summary.status, reason: summary.reason, bytes: summary.bytes, seconds: summary.durationSeconds, counts: summary.counts },
          'mirror run finished',
        );
      }
      return summary;
    },

    /** Subscriptions of the repository to `event`. */
    async mirrorWebhookTargets(input: { repository: string; event: MirrorEvent }): Promise<string[]> {
      const repo = await findRepository(s.db, input.repository);
      if (!repo) return [];
      return (await listSubscriptions(s.db, repo.id, input.event)).map((r) => r.id);
    },

    /** One delivery attempt; Temporal retries it. */
    async deliverMirrorWebhook(input: MirrorNotificationInput): Promise<string> {
      try {
        const r = await deliver({ db: s.db, secrets: s.secrets, policy: policy() }, input, Context.current().cancellationSignal);
        return 'status' in r ? `delivered (${r.status})` : `skipped: ${r.skipped}`;
      } catch (e) {
        if (e instanceof DeliveryError) {
          log.warn({ subscription: input.subscriptionId, event: input.event, err: e.message }, 'webhook delivery failed');
          if (!e.retryable) throw ApplicationFailure.nonRetryable(e.message, MIRROR_FAILURES.webhookRefused);
          throw ApplicationFailure.retryable(e.message, MIRROR_FAILURES.webhookUnavailable);
        }
        throw e;
      }
    },
  };
}
