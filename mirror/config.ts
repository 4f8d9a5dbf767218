// Mirror configurations (Quay's RepoMirrorConfig): validation of the API's JSON with Quay's field
// names, storage (the upstream password sealed with MERIDIAN_SECRET_KEY), the Quay-shaped view,
// sync-now and cancel requests. Every change writes, in the same transaction, an outbox intent
// that brings Temporal in step with the row (schedule created, updated, paused, deleted; a sync
// triggered or cancelled), so a change made while Temporal is down reaches it when it is back.
import { randomUUID } from 'node:crypto';
import { and, desc, eq, lt, sql } from 'drizzle-orm';
import type { Config } from '../config.ts';
import type { DbOrTx } from '../db/client.ts';
import { DomainError } from '../platform/errors.ts';
import { mirrorConfigs, mirrorRuns, namespaces, repositories, repositoryPermissions, robots } from '../db/schema.ts';
import { enqueueWorkflowStart } from '../platform/outbox.ts';
import type { Repository } from '../registry/repositories.ts';
import type { SecretBox } from '../security/secretbox.ts';
import { reconcileMirrorWorkflow } from '../contract/mirror.ts';
import { invalidGlobs } from './globs.ts';
import { maskedProxySettings, sealProxySettings } from './proxy-secrets.ts';
import { EgressRefused, parseReference, ReferenceError, UpstreamHostPolicy } from './reference.ts';

export type MirrorConfigRow = typeof mirrorConfigs.$inferSelect;
export type MirrorRunRow = typeof mirrorRuns.$inferSelect;
export type SyncStatus = MirrorConfigRow['syncStatus'];

/** Quay's MAX_SYNC_RETRIES. */
export const MAX_SYNC_RETRIES = 3;
/** Quay's MAX_SYNC_DURATION: how long a run may hold SYNCING before it counts as abandoned. */
export const MAX_SYNC_DURATION_SECONDS = 12 * 3600;

export class MirrorError extends DomainError {}

export interface MirrorDeps {
  db: DbOrTx;
  secrets: SecretBox;
  config: Pick<Config, 'mirrorRollbackDefault' | 'mirrorAllowedHosts'>;
}

export interface ProxySettings {
  http_proxy?: string | null;
  https_proxy?: string | null;
  no_proxy?: string | null;
}

/** GET /api/v1/repository/<ns>/<repo>/mirror: Quay's ViewMirrorConfig, plus rollback_on_failure. */
export interface MirrorConfigView {
  is_enabled: boolean;
  mirror_type: 'PULL';
  external_reference: string;
  external_registry_username: string | null;
  external_registry_config: { verify_tls: boolean; unsigned_images: boolean; proxy: ProxySettings };
  sync_interval: number;
  sync_start_date: string;
  sync_expiration_date: string | null;
  sync_retries_remaining: number;
  sync_status: SyncStatus;
  root_rule: { rule_kind: 'tag_glob_csv'; rule_value: string[] };
  robot_username: string | null;
  rollback_on_failure: boolean;
}

// ------------------------------------------------------------------ input

/** The body of POST/PUT …/mirror with Quay's field names, its shape already checked by the
 * route's schema (api/v1/mirror.ts); what is decided here is what the values mean. Fields shown
 * by GET but read-only (mirror_type, sync_status…) are dropped by the schema, so a GET → edit →
 * PUT round trip works as in Quay. */
export interface MirrorConfigBody {
  is_enabled?: boolean;
  external_reference?: string;
  external_registry_username?: string | null;
  external_registry_password?: string | null;
  sync_interval?: number;
  sync_start_date?: string;
  root_rule?: { rule_kind: string; rule_value: string[] };
  robot_username?: string;
  external_registry_config?: { verify_tls?: boolean; unsigned_images?: boolean; proxy?: ProxySettings | null };
  rollback_on_failure?: boolean;
}

interface MirrorInput {
  isEnabled?: boolean;
  externalReference?: string;
  username?: string | null;
  password?: string | null;
  syncInterval?: number;
  syncStartDate?: Date;
  tagGlobs?: string[];
  robotUsername?: string;
  verifyTls?: boolean;
  unsignedImages?: boolean;
  proxy?: ProxySettings;
  rollbackOnFailure?: boolean;
  has: (field: string) => boolean;
}

function invalid(message: string): MirrorError {
  return new MirrorError('invalid', message);
}

/** Quay's sync_start_date format, strptime("%Y-%m-%dT%H:%M:%SZ"): always UTC, whole seconds,
 * years 1 to 9999 (as Python's datetime; PostgreSQL would refuse year 0). */
export function parseQuayDate(v: unknown, field: string): Date {
  if (typeof v !== 'string' || !/^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$/.test(v)) {
    throw invalid(`${field} must be a date in the form YYYY-MM-DDTHH:MM:SSZ`);
  }
  const d = new Date(v);
  if (Number.isNaN(d.getTime()) || v.startsWith('0000') || d.toISOString().slice(0, 19) !== v.slice(0, 19)) throw invalid(`${field} is not a valid date`);
  return d;
}

export function formatQuayDate(d: Date | null): string | null {
  return d ? `${d.toISOString().slice(0, 19)}Z` : null;
}

function proxyUrl(s: string | null | undefined, field: string, policy: UpstreamHostPolicy): string | null | undefined {
  if (s === null || s === undefined || s === '') return s;
  let u: URL;
  try {
    u = new URL(s);
  } catch {
    throw invalid(`${field} must be a URL such as http://proxy.example.com:3128`);
  }
  if (u.protocol !== 'http:' && u.protocol !== 'https:') throw invalid(`${field} must be an http:// or https:// URL`);
  // The proxy is dialled by the worker: it may not point into the registry's own network either.
  try {
    policy.checkHost(u.hostname.replace(/^\[|\]$/g, ''));
  } catch (e) {
    if (e instanceof ReferenceError || e instanceof EgressRefused) throw invalid(e.message.replace('external_reference', field));
    throw e;
  }
  return s;
}

export function parseMirrorInput(body: MirrorConfigBody, policy: UpstreamHostPolicy): MirrorInput {
  const has = (f: string) => Object.prototype.hasOwnProperty.call(body, f) && (body as Record<string, unknown>)[f] !== undefined;
  const input: MirrorInput = { has };
  if (body.is_enabled !== undefined) input.isEnabled = body.is_enabled;
  if (body.external_reference !== undefined) {
    try {
      const ref = parseReference(body.external_reference);
      policy.checkHost(ref.hostname);
    } catch (e) {
      if (e instanceof ReferenceError || e instanceof EgressRefused) throw invalid(e.message);
      throw e;
    }
    input.externalReference = body.external_reference;
  }
  if (has('external_registry_username')) input.username = body.external_registry_username ?? null;
  if (has('external_registry_password')) input.password = body.external_registry_password ?? null;
  if (body.sync_interval !== undefined) input.syncInterval = body.sync_interval;
  if (body.sync_start_date !== undefined) input.syncStartDate = parseQuayDate(body.sync_start_date, 'sync_start_date');
  if (body.root_rule !== undefined) {
    const rule = body.root_rule;
    if (rule.rule_kind !== 'tag_glob_csv') throw invalid('validation failed: rule_kind must be "tag_glob_csv"');
    const why = invalidGlobs(rule.rule_value);
    if (why) throw invalid(`validation failed: ${why}`);
    input.tagGlobs = [...new Set(rule.rule_value)];
  }
  if (body.robot_username !== undefined) input.robotUsername = body.robot_username;
  const c = body.external_registry_config;
  if (c) {
    if (c.verify_tls !== undefined) input.verifyTls = c.verify_tls;
    if (c.unsigned_images !== undefined) input.unsignedImages = c.unsigned_images;
    if (c.proxy) {
      const proxy: ProxySettings = {};
      const p = c.proxy;
      if (p.http_proxy !== undefined) proxy.http_proxy = proxyUrl(p.http_proxy, 'external_registry_config.proxy.http_proxy', policy);
      if (p.https_proxy !== undefined) proxy.https_proxy = proxyUrl(p.https_proxy, 'external_registry_config.proxy.https_proxy', policy);
      if (p.no_proxy !== undefined) proxy.no_proxy = p.no_proxy;
      input.proxy = proxy;
    }
  }
  if (body.rollback_on_failure !== undefined) input.rollbackOnFailure = body.rollback_on_failure;
  return input;
}

// ------------------------------------------------------------------ storage

/** The AAD a sealed upstream password is bound to: it opens only on its own repository's row. */
export function passwordContext(repositoryId: number): string {
  return `mirror_configs:${repositoryId}:external_registry_password`;
}

export async function getMirrorConfig(db: DbOrTx, repositoryId: number): Promise<MirrorConfigRow | undefined> {
  const [row] = await db.select().from(mirrorConfigs).where(eq(mirrorConfigs.repositoryId, repositoryId));
  return row;
}

/** Quay's `_setup_robot_for_mirroring`: the robot must exist in the repository's namespace, and
 * is given write permission on the repository when it has none (or only read). */
async function mirrorRobot(tx: DbOrTx, repo: Repository, robotUsername: string): Promise<number> {
  const plus = robotUsername.indexOf('+');
  const ns = plus > 0 ? robotUsername.slice(0, plus) : '';
  const short = plus > 0 ? robotUsername.slice(plus + 1) : '';
  if (ns !== repo.namespaceName) throw invalid(`Invalid robot: ${robotUsername} is not a robot of namespace ${repo.namespaceName}`);
  const [robot] = await tx
    .select({ id: robots.id })
    .from(robots)
    .innerJoin(namespaces, eq(robots.namespaceId, namespaces.id))
    .where(and(eq(namespaces.name, ns), eq(robots.shortName, short)));
  if (!robot) throw invalid(`Invalid robot: robot ${robotUsername} does not exist`);
  await tx
    .insert(repositoryPermissions)
    .values({ repositoryId: repo.id, robotId: robot.id, role: 'write' })
    .onConflictDoUpdate({
      target: [repositoryPermissions.repositoryId, repositoryPermissions.robotId],
      targetWhere: sql`${repositoryPermissions.robotId} is not null`,
      set: { role: 'write' },
      setWhere: sql`${repositoryPermissions.role} = 'read'`,
    });
  return robot.id;
}

/** Asks the control worker (through the outbox, so it survives a Temporal outage) to bring the
 * repository's schedule and running sync in step with its mirror row. Each request gets its own
 * workflow id: the reconcile reads the row when it runs, so the last one always applies the
 * latest state, and a request never merges into one that already read an older row. */
export async function enqueueMirrorReconcile(tx: DbOrTx, repository: string): Promise<void> {
  await enqueueWorkflowStart(tx, reconcileMirrorWorkflow, { workflowId: `mirror-reconcile/${repository}/${randomUUID()}`, args: [{ repository }] });
}

function validateCredentials(input: MirrorInput): void {
  if (input.has('external_registry_password') && !input.has('external_registry_username')) {
    throw invalid('Unable to set a new password without also specifying a username.');
  }
  if (input.username === null && input.password !== undefined && input.password !== null) {
    throw invalid('Unable to delete username while setting a password.');
  }
}

export async function createMirrorConfig(d: MirrorDeps, repo: Repository, body: MirrorConfigBody): Promise<MirrorConfigRow> {
  const input = parseMirrorInput(body, new UpstreamHostPolicy(d.config.mirrorAllowedHosts));
  for (const f of ['external_reference', 'sync_interval', 'sync_start_date', 'root_rule', 'robot_username']) {
    if (!input.has(f)) throw invalid(`${f} is required`);
  }
  validateCredentials(input);
  return d.db.transaction(async (tx) => {
    // Lock the repository row: two concurrent creates must not both pass the existence check.
    await tx.execute(sql`select id from ${repositories} where id = ${repo.id} for update`);
    if (await getMirrorConfig(tx, repo.id)) {
      throw new MirrorError('conflict', `Mirror configuration already exists for repository ${repo.fullName}`);
    }
    const robotId = await mirrorRobot(tx, repo, input.robotUsername!);
    const [row] = await tx
      .insert(mirrorConfigs)
      .values({
        repositoryId: repo.id,
        isEnabled: input.isEnabled ?? true,
        externalReference: input.externalReference!,
        username: input.username || null,
        passwordEnc: input.password ? d.secrets.seal(input.password, passwordContext(repo.id)) : null,
        syncInterval: input.syncInterval!,
        syncStartDate: input.syncStartDate!,
        tagGlobs: input.tagGlobs!,
        robotId,
        verifyTls: input.verifyTls ?? true,
        unsignedImages: input.unsignedImages ?? false,
        proxy: input.proxy ? sealProxySettings(d.secrets, repo.id, null, input.proxy) : null,
        rollbackOnFailure: input.rollbackOnFailure ?? d.config.mirrorRollbackDefault,
      })
      .returning();
    // As in Quay, creating the mirror puts the repository in the MIRROR state.
    await tx.update(repositories).set({ state: 'mirror' }).where(eq(repositories.id, repo.id));
    await enqueueMirrorReconcile(tx, repo.fullName);
    return row!;
  });
}

/** The registry (API host and port) a reference points at, for comparing two references. */
function registryOf(reference: string): string {
  try {
    return parseReference(reference).apiAuthority.toLowerCase();
  } catch {
    return reference;
  }
}

export async function updateMirrorConfig(d: MirrorDeps, repo: Repository, body: MirrorConfigBody): Promise<MirrorConfigRow> {
  const input = parseMirrorInput(body, new UpstreamHostPolicy(d.config.mirrorAllowedHosts));
  if (input.has('external_reference') && input.externalReference === '') throw invalid('Empty string is an invalid repository location.');
  validateCredentials(input);
  return d.db.transaction(async (tx) => {
    const [current] = await tx.select().from(mirrorConfigs).where(eq(mirrorConfigs.repositoryId, repo.id)).for('update');
    if (!current) throw new MirrorError('not_found', `repository ${repo.fullName} has no mirror configuration`);
    const changes: Partial<typeof mirrorConfigs.$inferInsert> = {};
    if (input.isEnabled !== undefined) changes.isEnabled = input.isEnabled;
    if (input.externalReference !== undefined) changes.externalReference = input.externalReference;
    if (input.robotUsername !== undefined) changes.robotId = await mirrorRobot(tx, repo, input.robotUsername);
    if (input.syncStartDate !== undefined) changes.syncStartDate = input.syncStartDate;
    if (input.syncInterval !== undefined) changes.syncInterval = input.syncInterval;
    if (input.has('external_registry_username')) {
      changes.username = input.username || null;
      // Quay: the username alone keeps the password; both together replace it (null clears).
      if (input.has('external_registry_password')) {
        changes.passwordEnc = input.password ? d.secrets.seal(input.password, passwordContext(repo.id)) : null;
      }
    }
    if (input.externalReference !== undefined && !input.has('external_registry_password') && registryOf(input.externalReference) !== registryOf(current.externalReference)) {
      // Credentials belong to the registry they were typed for: pointing the mirror at another
      // registry must not send them there (an admin of the repository is not necessarily the
      // person who knows the password). They are kept only when given again in this request.
      changes.passwordEnc = null;
      if (!input.has('external_registry_username')) changes.username = null;
    }
    if (input.verifyTls !== undefined) changes.verifyTls = input.verifyTls;
    if (input.unsignedImages !== undefined) changes.unsignedImages = input.unsignedImages;
    if (input.proxy !== undefined) changes.proxy = sealProxySettings(d.secrets, repo.id, current.proxy, input.proxy);
    if (input.tagGlobs !== undefined) changes.tagGlobs = input.tagGlobs;
    if (input.rollbackOnFailure !== undefined) changes.rollbackOnFailure = input.rollbackOnFailure;
    const [row] = await tx
      .update(mirrorConfigs)
      .set({ ...changes, updatedAt: sql`now()` })
      .where(eq(mirrorConfigs.id, current.id))
      .returning();
    await enqueueMirrorReconcile(tx, repo.fullName);
    return row!;
  });
}

/** Meridian extension: removes the mirror (and, through the reconcile, its schedule); the
 * repository goes back to the NORMAL state and keeps its tags. */
export async function deleteMirrorConfig(d: Pick<MirrorDeps, 'db'>, repo: Repository): Promise<void> {
  await d.db.transaction(async (tx) => {
    const gone = await tx.delete(mirrorConfigs).where(eq(mirrorConfigs.repositoryId, repo.id)).returning({ id: mirrorConfigs.id });
    if (gone.length === 0) throw new MirrorError('not_found', `repository ${repo.fullName} has no mirror configuration`);
    await tx.update(repositories).set({ state: 'normal' }).where(and(eq(repositories.id, repo.id), eq(repositories.state, 'mirror')));
    await enqueueMirrorReconcile(tx, repo.fullName);
  });
}

/** For whoever deletes repositories: the cascade removes the mirror row; this removes its
 * schedule (call it in the same transaction as the delete). */
export async function mirrorRepositoryDeleted(tx: DbOrTx, fullName: string): Promise<void> {
  await enqueueMirrorReconcile(tx, fullName);
}

/** Quay's update_sync_status_to_sync_now: refused while a sync runs; retries at least one. */
export async function requestSyncNow(d: Pick<MirrorDeps, 'db'>, repo: Repository): Promise<void> {
  await d.db.transaction(async (tx) => {
    const [current] = await tx.select().from(mirrorConfigs).where(eq(mirrorConfigs.repositoryId, repo.id)).for('update');
    if (!current) throw new MirrorError('not_found', `repository ${repo.fullName} has no mirror configuration`);
    if (current.syncStatus === 'SYNCING') throw new MirrorError('not_found', 'a sync is already running');
    const [r] = await tx.select({ state: repositories.state }).from(repositories).where(eq(repositories.id, repo.id));
    if (r?.state !== 'mirror') throw new MirrorError('conflict', `repository ${repo.fullName} is not in the MIRROR state`);
    await tx
      .update(mirrorConfigs)
      .set({
        syncStatus: 'SYNC_NOW',
        syncExpirationDate: null,
        syncRetriesRemaining: sql`greatest(${mirrorConfigs.syncRetriesRemaining}, 1)`,
        updatedAt: sql`now()`,
      })
      .where(eq(mirrorConfigs.id, current.id));
    await enqueueMirrorReconcile(tx, repo.fullName);
  });
}

/** Quay's update_sync_status_to_cancel: only a queued or running sync can be cancelled. */
export async function requestSyncCancel(d: Pick<MirrorDeps, 'db'>, repo: Repository): Promise<void> {
  await d.db.transaction(async (tx) => {
    const [current] = await tx.select().from(mirrorConfigs).where(eq(mirrorConfigs.repositoryId, repo.id)).for('update');
    if (!current) throw new MirrorError('not_found', `repository ${repo.fullName} has no mirror configuration`);
    if (current.syncStatus !== 'SYNCING' && current.syncStatus !== 'SYNC_NOW') throw new MirrorError('not_found', 'no sync is queued or running');
    await tx
      .update(mirrorConfigs)
      .set({ syncStatus: 'CANCEL', syncExpirationDate: null, syncRetriesRemaining: 0, updatedAt: sql`now()` })
      .where(eq(mirrorConfigs.id, current.id));
    await enqueueMirrorReconcile(tx, repo.fullName);
  });
}

// ------------------------------------------------------------------ views

export async function mirrorConfigView(db: DbOrTx, row: MirrorConfigRow): Promise<MirrorConfigView> {
  let robot: string | null = null;
  if (row.robotId !== null) {
    const [r] = await db
      .select({ ns: namespaces.name, short: robots.shortName })
      .from(robots)
      .innerJoin(namespaces, eq(robots.namespaceId, namespaces.id))
      .where(eq(robots.id, row.robotId));
    robot = r ? `${r.ns}+${r.short}` : null;
  }
  return {
    is_enabled: row.isEnabled,
    mirror_type: 'PULL',
    external_reference: row.externalReference,
    external_registry_username: row.username,
    external_registry_config: {
      verify_tls: row.verifyTls,
      unsigned_images: row.unsignedImages,
      proxy: maskedProxySettings(row.proxy),
    },
    sync_interval: row.syncInterval,
    sync_start_date: formatQuayDate(row.syncStartDate)!,
    sync_expiration_date: formatQuayDate(row.syncExpirationDate),
    sync_retries_remaining: row.syncRetriesRemaining,
    sync_status: row.syncStatus,
    root_rule: { rule_kind: 'tag_glob_csv', rule_value: row.tagGlobs },
    robot_username: robot,
    rollback_on_failure: row.rollbackOnFailure,
  };
}

export interface MirrorRunView {
  id: number;
  workflow_id: string;
  run_id: string;
  trigger: string | null;
  status: MirrorRunRow['status'];
  reason: string | null;
  started: string;
  finished: string | null;
  duration_seconds: number | null;
  bytes: number;
  tags: NonNullable<MirrorRunRow['tagResults']>;
}

export function mirrorRunView(r: MirrorRunRow): MirrorRunView {
  return {
    id: r.id,
    workflow_id: r.workflowId,
    run_id: r.runId,
    trigger: r.trigger,
    status: r.status,
    reason: r.reason,
    started: r.startedAt.toISOString(),
    finished: r.finishedAt?.toISOString() ?? null,
    duration_seconds: r.finishedAt ? (r.finishedAt.getTime() - r.startedAt.getTime()) / 1000 : null,
    bytes: r.bytes,
    tags: r.tagResults ?? [],
  };
}

/** Newest first; `before` (a run id) pages back. */
export async function listMirrorRuns(db: DbOrTx, configId: number, opts: { limit: number; before?: number }): Promise<MirrorRunRow[]> {
  return db
    .select()
    .from(mirrorRuns)
    .where(and(eq(mirrorRuns.configId, configId), opts.before !== undefined ? lt(mirrorRuns.id, opts.before) : undefined))
    .orderBy(desc(mirrorRuns.id))
    .limit(opts.limit);
}
