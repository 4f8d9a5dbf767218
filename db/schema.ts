// The data model. One PostgreSQL database is shared by every instance in every region (as in
// Quay's geo-replication); blob bytes live in the storage locations, everything else here.
// Unique constraints, not application checks, keep concurrent writers consistent.
import { sql } from 'drizzle-orm';
import {
  bigint,
  bigserial,
  boolean,
  check,
  customType,
  index,
  integer,
  jsonb,
  pgTable,
  primaryKey,
  text,
  timestamp,
  uniqueIndex,
  uuid,
} from 'drizzle-orm/pg-core';

const bytea = customType<{ data: Buffer; driverData: Buffer }>({ dataType: () => 'bytea' });
const createdAt = () => timestamp('created_at', { withTimezone: true }).notNull().defaultNow();
const id = () => bigserial('id', { mode: 'number' }).primaryKey();
const ref = (name: string) => bigint(name, { mode: 'number' });

// ---------------------------------------------------------------- accounts and namespaces

/** A user's own namespace or an organization: the first path component of a repository. */
export const namespaces = pgTable(
  'namespaces',
  {
    id: id(),
    name: text('name').notNull(),
    kind: text('kind', { enum: ['user', 'organization'] }).notNull(),
    /** Per-namespace replication: the locations this namespace's blobs go to; null = the defaults. */
    replicationLocations: text('replication_locations').array(),
    /** Per-namespace GC grace period (Quay's time machine), seconds; null = MERIDIAN_GC_GRACE. */
    gcGraceSeconds: integer('gc_grace_seconds'),
    createdAt: createdAt(),
  },
  (t) => [uniqueIndex('namespaces_name_key').on(t.name)],
);

export const users = pgTable(
  'users',
  {
    id: id(),
    username: text('username').notNull(),
    email: text('email'),
    passwordHash: text('password_hash'),
    namespaceId: ref('namespace_id')
      .notNull()
      .references(() => namespaces.id, { onDelete: 'cascade' }),
    enabled: boolean('enabled').notNull().default(true),
    createdAt: createdAt(),
  },
  (t) => [uniqueIndex('users_username_key').on(t.username), uniqueIndex('users_namespace_key').on(t.namespaceId)],
);

/** Who administers or may create repositories in an organization. */
export const namespaceMembers = pgTable(
  'namespace_members',
  {
    namespaceId: ref('namespace_id')
      .notNull()
      .references(() => namespaces.id, { onDelete: 'cascade' }),
    userId: ref('user_id')
      .notNull()
      .references(() => users.id, { onDelete: 'cascade' }),
    role: text('role', { enum: ['admin', 'creator', 'member'] }).notNull(),
    createdAt: createdAt(),
  },
  (t) => [primaryKey({ columns: [t.namespaceId, t.userId] })],
);

/** Robot accounts, named `<namespace>+<short>`, authenticating with a generated token. */
export const robots = pgTable(
  'robots',
  {
    id: id(),
    namespaceId: ref('namespace_id')
      .notNull()
      .references(() => namespaces.id, { onDelete: 'cascade' }),
    shortName: text('short_name').notNull(),
    description: text('description').notNull().default(''),
    tokenHash: text('token_hash').notNull(),
    createdAt: createdAt(),
  },
  (t) => [uniqueIndex('robots_namespace_short_key').on(t.namespaceId, t.shortName)],
);

/** Refresh tokens handed to docker/podman by the token endpoint, and API tokens. Only hashes. */
export const tokens = pgTable(
  'tokens',
  {
    id: id(),
    kind: text('kind', { enum: ['refresh', 'api'] }).notNull(),
    tokenHash: text('token_hash').notNull(),
    userId: ref('user_id').references(() => users.id, { onDelete: 'cascade' }),
    robotId: ref('robot_id').references(() => robots.id, { onDelete: 'cascade' }),
    expiresAt: timestamp('expires_at', { withTimezone: true }),
    lastUsedAt: timestamp('last_used_at', { withTimezone: true }),
    revokedAt: timestamp('revoked_at', { withTimezone: true }),
    createdAt: createdAt(),
  },
  (t) => [
    uniqueIndex('tokens_hash_key').on(t.tokenHash),
    check('tokens_one_owner', sql`(${t.userId} is null) <> (${t.robotId} is null)`),
  ],
);

// ---------------------------------------------------------------- repositories

export const repositories = pgTable(
  'repositories',
  {
    id: id(),
    namespaceId: ref('namespace_id')
      .notNull()
      .references(() => namespaces.id, { onDelete: 'cascade' }),
    /** The path below the namespace: `app` or `team/app`. */
    name: text('name').notNull(),
    visibility: text('visibility', { enum: ['public', 'private'] }).notNull().default('private'),
    /** `mirror` repositories are read-only for all but the mirror's robot. */
    state: text('state', { enum: ['normal', 'mirror', 'readonly'] }).notNull().default('normal'),
    description: text('description').notNull().default(''),
    createdAt: createdAt(),
  },
  (t) => [uniqueIndex('repositories_namespace_name_key').on(t.namespaceId, t.name)],
);

export const repositoryPermissions = pgTable(
  'repository_permissions',
  {
    id: id(),
    repositoryId: ref('repository_id')
      .notNull()
      .references(() => repositories.id, { onDelete: 'cascade' }),
    userId: ref('user_id').references(() => users.id, { onDelete: 'cascade' }),
    robotId: ref('robot_id').references(() => robots.id, { onDelete: 'cascade' }),
    role: text('role', { enum: ['read', 'write', 'admin'] }).notNull(),
    createdAt: createdAt(),
  },
  (t) => [
    uniqueIndex('repository_permissions_user_key').on(t.repositoryId, t.userId).where(sql`${t.userId} is not null`),
    uniqueIndex('repository_permissions_robot_key').on(t.repositoryId, t.robotId).where(sql`${t.robotId} is not null`),
    check('repository_permissions_one_grantee', sql`(${t.userId} is null) <> (${t.robotId} is null)`),
  ],
);

// ---------------------------------------------------------------- storage

export const storageLocations = pgTable(
  'storage_locations',
  {
    id: id(),
    name: text('name').notNull(),
    region: text('region').notNull(),
    endpoint: text('endpoint').notNull(),
    /** The S3 signing region of the endpoint. */
    s3Region: text('s3_region').notNull().default('us-east-1'),
    bucket: text('bucket').notNull(),
    pathPrefix: text('path_prefix').notNull().default(''),
    /** `env:<PREFIX>` reads <PREFIX>_ACCESS_KEY/_SECRET_KEY; `stored` uses the encrypted columns. */
    credentialsRef: text('credentials_ref').notNull(),
    accessKeyEnc: bytea('access_key_enc'),
    secretKeyEnc: bytea('secret_key_enc'),
    replicateByDefault: boolean('replicate_by_default').notNull().default(true),
    state: text('state', { enum: ['active', 'draining'] }).notNull().default('active'),
    createdAt: createdAt(),
  },
  (t) => [uniqueIndex('storage_locations_name_key').on(t.name)],
);

/** A content-addressed blob, stored once whatever the number of repositories using it. */
export const blobs = pgTable(
  'blobs',
  {
    id: id(),
    digest: text('digest').notNull(),
    size: bigint('size', { mode: 'number' }).notNull(),
    mediaType: text('media_type'),
    createdAt: createdAt(),
  },
  (t) => [uniqueIndex('blobs_digest_key').on(t.digest)],
);

/** That a blob's bytes are in a location, verified by digest at verified_at. */
export const blobPlacements = pgTable(
  'blob_placements',
  {
    id: id(),
    blobId: ref('blob_id')
      .notNull()
      .references(() => blobs.id, { onDelete: 'cascade' }),
    locationId: ref('location_id')
      .notNull()
      .references(() => storageLocations.id, { onDelete: 'cascade' }),
    /** `deleting`: marked by GC, not served, object intact (a reference revives it); `purging`:
     * GC or the orphan sweep (`purge_owner`) is deleting its object (gc/blobs.ts describes the
     * protocol); `damaged`: the scrub found
     * its object missing or its bytes wrong — not served, not a replication source or holder,
     * available again once replication re-copied it (replication/scrub.ts). */
    state: text('state', { enum: ['available', 'deleting', 'purging', 'damaged'] }).notNull().default('available'),
    /** The object holding the bytes, when it is not the content address (a chunked upload's own
     * object becomes the blob rather than being copied). Null = `blobKey(prefix, digest)`.
     * Always resolve with `storage/paths.ts` `placementKey`. */
    objectKey: text('object_key'),
    /** Who deletes a `purging` placement's object and then the row: `gc` (gc/blobs.ts; also rows
     * from before this column, null) or `orphans` — the orphan sweep's claim on an object no row
     * accounted for (gc/orphans.ts), which GC leaves alone (its purge must neither count nor
     * delete it) unless the claim is older than any sweep takes over one object. */
    purgeOwner: text('purge_owner', { enum: ['gc', 'orphans'] }),
    /** When `purge_owner` claimed the placement. */
    purgeClaimedAt: timestamp('purge_claimed_at', { withTimezone: true }),
    verifiedAt: timestamp('verified_at', { withTimezone: true }).notNull().defaultNow(),
    createdAt: createdAt(),
  },
  (t) => [
    uniqueIndex('blob_placements_blob_location_key').on(t.blobId, t.locationId),
    index('blob_placements_location_idx').on(t.locationId, t.blobId),
  ],
);

/** Which repositories may use a blob (pushed, mounted or mirrored into them). */
export const repositoryBlobs = pgTable(
  'repository_blobs',
  {
    repositoryId: ref('repository_id')
      .notNull()
      .references(() => repositories.id, { onDelete: 'cascade' }),
    blobId: ref('blob_id')
      .notNull()
      .references(() => blobs.id, { onDelete: 'cascade' }),
    createdAt: createdAt(),
  },
  (t) => [primaryKey({ columns: [t.repositoryId, t.blobId] }), index('repository_blobs_blob_idx').on(t.blobId)],
);

/** An upload in progress. Its bytes go to a multipart upload in one location; the hash state is
 * saved after every chunk so any instance can continue it without reading the bytes back. */
export const uploadSessions = pgTable(
  'upload_sessions',
  {
    id: uuid('id').primaryKey(),
    repositoryId: ref('repository_id')
      .notNull()
      .references(() => repositories.id, { onDelete: 'cascade' }),
    locationId: ref('location_id')
      .notNull()
      .references(() => storageLocations.id, { onDelete: 'cascade' }),
    /** Temporary object key of the multipart upload. */
    objectKey: text('object_key').notNull(),
    multipartUploadId: text('multipart_upload_id'),
    /** Completed parts: [{ partNumber, etag, size }]. */
    parts: jsonb('parts').$type<{ partNumber: number; etag: string; size: number }[]>().notNull().default([]),
    /** Bytes received so far (parts plus tail). */
    size: bigint('size', { mode: 'number' }).notNull().default(0),
    /** Bytes received after the last full part, kept in small side objects until a part fills. */
    tailSize: integer('tail_size').notNull().default(0),
    /** The first of those objects (sessions begun before tail_keys existed use only this one). */
    tailKey: text('tail_key'),
    /** The tail objects after tail_key, in order: each chunk that does not fill a part adds one,
     * so a chunk never reads back or rewrites the bytes before it. */
    tailKeys: text('tail_keys').array().notNull().default(sql`'{}'::text[]`),
    hashAlgorithm: text('hash_algorithm').notNull().default('sha256'),
    hashState: bytea('hash_state'),
    /** Bumped by every chunk; a chunk commits only if nobody else did in between. */
    version: integer('version').notNull().default(0),
    /** Set while a request is writing a chunk, so two requests never write parts at once. */
    busyUntil: timestamp('busy_until', { withTimezone: true }),
    createdByUserId: ref('created_by_user_id'),
    createdByRobotId: ref('created_by_robot_id'),
    createdAt: createdAt(),
    updatedAt: timestamp('updated_at', { withTimezone: true }).notNull().defaultNow(),
  },
  (t) => [index('upload_sessions_updated_idx').on(t.updatedAt)],
);

// ---------------------------------------------------------------- manifests and tags

/** Manifests are small (≤ 4 MiB) and kept here byte for byte; their digest is of these bytes. */
export const manifests = pgTable(
  'manifests',
  {
    id: id(),
    repositoryId: ref('repository_id')
      .notNull()
      .references(() => repositories.id, { onDelete: 'cascade' }),
    digest: text('digest').notNull(),
    mediaType: text('media_type').notNull(),
    artifactType: text('artifact_type'),
    subjectDigest: text('subject_digest'),
    annotations: jsonb('annotations').$type<Record<string, string>>(),
    size: integer('size').notNull(),
    content: bytea('content').notNull(),
    createdAt: createdAt(),
  },
  (t) => [
    uniqueIndex('manifests_repository_digest_key').on(t.repositoryId, t.digest),
    index('manifests_subject_idx').on(t.repositoryId, t.subjectDigest),
  ],
);

export const tags = pgTable(
  'tags',
  {
    id: id(),
    repositoryId: ref('repository_id')
      .notNull()
      .references(() => repositories.id, { onDelete: 'cascade' }),
    name: text('name').notNull(),
    manifestId: ref('manifest_id')
      .notNull()
      .references(() => manifests.id, { onDelete: 'cascade' }),
    updatedAt: timestamp('updated_at', { withTimezone: true }).notNull().defaultNow(),
  },
  (t) => [uniqueIndex('tags_repository_name_key').on(t.repositoryId, t.name), index('tags_manifest_idx').on(t.manifestId)],
);

/** Layers and config a manifest references: a blob in use is never garbage. */
export const manifestBlobs = pgTable(
  'manifest_blobs',
  {
    manifestId: ref('manifest_id')
      .notNull()
      .references(() => manifests.id, { onDelete: 'cascade' }),
    blobId: ref('blob_id')
      .notNull()
      .references(() => blobs.id, { onDelete: 'no action' }),
  },
  (t) => [primaryKey({ columns: [t.manifestId, t.blobId] }), index('manifest_blobs_blob_idx').on(t.blobId)],
);

/** The manifests an index (manifest list) references. */
export const manifestChildren = pgTable(
  'manifest_children',
  {
    parentId: ref('parent_id')
      .notNull()
      .references(() => manifests.id, { onDelete: 'cascade' }),
    // Deleting a manifest an index refers to is allowed (as in the distribution registry); the
    // index keeps its bytes, the reference row goes.
    childId: ref('child_id')
      .notNull()
      .references(() => manifests.id, { onDelete: 'cascade' }),
  },
  (t) => [primaryKey({ columns: [t.parentId, t.childId] }), index('manifest_children_child_idx').on(t.childId)],
);

// ---------------------------------------------------------------- mirroring

export const mirrorConfigs = pgTable(
  'mirror_configs',
  {
    id: id(),
    repositoryId: ref('repository_id')
      .notNull()
      .references(() => repositories.id, { onDelete: 'cascade' }),
    isEnabled: boolean('is_enabled').notNull().default(true),
    externalReference: text('external_reference').notNull(),
    username: text('username'),
    /** AES-256-GCM under MERIDIAN_SECRET_KEY; never returned by the API. */
    passwordEnc: bytea('password_enc'),
    syncInterval: integer('sync_interval').notNull(),
    syncStartDate: timestamp('sync_start_date', { withTimezone: true }).notNull(),
    tagGlobs: text('tag_globs').array().notNull(),
    robotId: ref('robot_id').references(() => robots.id, { onDelete: 'set null' }),
    verifyTls: boolean('verify_tls').notNull().default(true),
    unsignedImages: boolean('unsigned_images').notNull().default(false),
    // Proxy URLs without their passwords, which are sealed beside them (mirror/proxy-secrets.ts).
    proxy: jsonb('proxy').$type<{
      http_proxy?: string | null;
      https_proxy?: string | null;
      no_proxy?: string | null;
      http_proxy_password_enc?: string | null;
      https_proxy_password_enc?: string | null;
    }>(),
    rollbackOnFailure: boolean('rollback_on_failure').notNull(),
    syncStatus: text('sync_status', { enum: ['NEVER_RUN', 'SYNC_NOW', 'SYNCING', 'SUCCESS', 'FAIL', 'CANCEL'] })
      .notNull()
      .default('NEVER_RUN'),
    syncExpirationDate: timestamp('sync_expiration_date', { withTimezone: true }),
    syncRetriesRemaining: integer('sync_retries_remaining').notNull().default(3),
    createdAt: createdAt(),
    updatedAt: timestamp('updated_at', { withTimezone: true }).notNull().defaultNow(),
  },
  (t) => [uniqueIndex('mirror_configs_repository_key').on(t.repositoryId)],
);

export const mirrorRuns = pgTable(
  'mirror_runs',
  {
    id: id(),
    configId: ref('config_id')
      .notNull()
      .references(() => mirrorConfigs.id, { onDelete: 'cascade' }),
    workflowId: text('workflow_id').notNull(),
    runId: text('run_id').notNull(),
    status: text('status', { enum: ['SYNCING', 'SUCCESS', 'FAIL', 'CANCEL'] }).notNull(),
    reason: text('reason'),
    tagResults: jsonb('tag_results').$type<{ tag: string; status: string; digest?: string; error?: string }[]>(),
    bytes: bigint('bytes', { mode: 'number' }).notNull().default(0),
    /** The repository's tags (name → manifest digest) when the run began: what a rollback restores. */
    tagsBefore: jsonb('tags_before').$type<Record<string, string>>(),
    /** The upstream tags the run copies (those matching the globs), fixed when it lists them. */
    plannedTags: text('planned_tags').array(),
    /** `schedule` (the interval) or `manual` (sync-now). */
    trigger: text('trigger'),
    startedAt: timestamp('started_at', { withTimezone: true }).notNull().defaultNow(),
    finishedAt: timestamp('finished_at', { withTimezone: true }),
  },
  (t) => [uniqueIndex('mirror_runs_run_key').on(t.runId), index('mirror_runs_config_idx').on(t.configId, t.startedAt)],
);

/** Repository notifications (Quay's `/notification`), e.g. webhooks on mirror events. */
export const webhookSubscriptions = pgTable(
  'webhook_subscriptions',
  {
    id: uuid('id').primaryKey(),
    repositoryId: ref('repository_id')
      .notNull()
      .references(() => repositories.id, { onDelete: 'cascade' }),
    event: text('event').notNull(),
    method: text('method').notNull().default('webhook'),
    title: text('title').notNull().default(''),
    url: text('url').notNull(),
    /** HMAC signing secret, encrypted at rest. */
    secretEnc: bytea('secret_enc').notNull(),
    createdAt: createdAt(),
  },
  (t) => [index('webhook_subscriptions_repository_idx').on(t.repositoryId, t.event)],
);

// ---------------------------------------------------------------- transactional outbox

/** Work that must reach Temporal. Written in the same transaction as the change that causes it;
 * the relay delivers it (at least once; workflow ids dedupe) whenever Temporal is reachable.
 * A row is pending (neither delivered nor dead), delivered (kept for a retention, then pruned)
 * or dead: refused by Temporal on every one of the relay's attempts, kept for an operator. */
export const outbox = pgTable(
  'outbox',
  {
    id: id(),
    kind: text('kind').notNull(),
    payload: jsonb('payload').$type<Record<string, unknown>>().notNull(),
    attempts: integer('attempts').notNull().default(0),
    lastError: text('last_error'),
    availableAt: timestamp('available_at', { withTimezone: true }).notNull().defaultNow(),
    deliveredAt: timestamp('delivered_at', { withTimezone: true }),
    /** Set when the relay gave up on the row (attempt limit); an operator may requeue it. */
    deadAt: timestamp('dead_at', { withTimezone: true }),
    createdAt: createdAt(),
  },
  (t) => [
    // The relay takes due rows in id order: this index hands them over in that order (no sort of
    // the whole backlog), and holds only pending rows.
    index('outbox_pending_idx').on(t.id).where(sql`${t.deliveredAt} is null and ${t.deadAt} is null`),
    index('outbox_delivered_idx').on(t.deliveredAt).where(sql`${t.deliveredAt} is not null`),
    index('outbox_dead_idx').on(t.id).where(sql`${t.deadAt} is not null`),
  ],
);

// ---------------------------------------------------------------- access version

/** One row counting changes to what authorization reads (accounts, robots, memberships, grants,
 * repositories, mirror robots). Triggers (migration 0006) bump it in the changing transaction, so
 * the new number becomes visible exactly when the change does; API processes key their
 * authorization caches by it (auth/access-cache.ts) and read it once per request. */
export const accessVersion = pgTable(
  'access_version',
  {
    id: integer('id').primaryKey().default(1),
    version: bigint('version', { mode: 'bigint' }).notNull().default(sql`0`),
  },
  (t) => [check('access_version_single_row', sql`${t.id} = 1`)],
);

/** One row: a number that triggers bump in every transaction deleting a blob or a repository's
 * link to one (migration 0008); API processes cache which blobs a repository may use per value. */
export const blobVersion = pgTable(
  'blob_version',
  {
    id: integer('id').primaryKey().default(1),
    version: bigint('version', { mode: 'bigint' }).notNull().default(sql`0`),
  },
  (t) => [check('blob_version_single_row', sql`${t.id} = 1`)],
);

// ---------------------------------------------------------------- garbage collection

/** Finished garbage-collection runs and dry runs (scheduled or manual): what the API and the
 * metrics report as the last run, what was reclaimable and what was reclaimed per location. */
export const gcRuns = pgTable(
  'gc_runs',
  {
    id: id(),
    workflowId: text('workflow_id').notNull(),
    runId: text('run_id').notNull(),
    dryRun: boolean('dry_run').notNull(),
    /** completed; partial: a location gave up (its copies wait for the next run); failed. */
    outcome: text('outcome', { enum: ['completed', 'partial', 'failed'] }).notNull(),
    startedAt: timestamp('started_at', { withTimezone: true }).notNull(),
    finishedAt: timestamp('finished_at', { withTimezone: true }).notNull().defaultNow(),
    /** The run's final progress (contract/gc.ts GcProgress), and its error when it failed. */
    report: jsonb('report').notNull(),
    error: text('error'),
  },
  (t) => [uniqueIndex('gc_runs_run_key').on(t.runId), index('gc_runs_finished_idx').on(t.dryRun, t.finishedAt)],
);
