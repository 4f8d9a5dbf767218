// Manifests: parsed and validated on PUT, stored byte for byte (their digest is of exactly those
// bytes), linked to the blobs and child manifests they reference, found by tag or digest.
import { and, asc, eq, inArray, sql } from 'drizzle-orm';
import type { DbOrTx } from '../db/client.ts';
import { manifestBlobs, manifestChildren, manifests, tags } from '../db/schema.ts';
import { claimBlobsForManifest, linkedDigests } from './blobs.ts';
import { type DigestAlgorithm, isDigest, parseDigest } from './digest.ts';
import { digestOf } from './hashing.ts';
import type { Repository } from './repositories.ts';

export const MEDIA_TYPES = {
  ociManifest: 'application/vnd.oci.image.manifest.v1+json',
  ociIndex: 'application/vnd.oci.image.index.v1+json',
  dockerManifest: 'application/vnd.docker.distribution.manifest.v2+json',
  dockerList: 'application/vnd.docker.distribution.manifest.list.v2+json',
  ociEmpty: 'application/vnd.oci.empty.v1+json',
} as const;

const IMAGE_TYPES = new Set<string>([MEDIA_TYPES.ociManifest, MEDIA_TYPES.dockerManifest]);
const INDEX_TYPES = new Set<string>([MEDIA_TYPES.ociIndex, MEDIA_TYPES.dockerList]);
export const MANIFEST_MEDIA_TYPES = [...IMAGE_TYPES, ...INDEX_TYPES];
const SCHEMA1 = /^application\/vnd\.docker\.distribution\.manifest\.v1\+(prettyjws|json)$/;

/** Manifests are small; a bigger body is refused before it is parsed. */
export const MAX_MANIFEST_BYTES = 4 * 1024 * 1024;

export type ManifestRow = typeof manifests.$inferSelect;

export class ManifestError extends Error {
  constructor(
    readonly code: 'MANIFEST_INVALID' | 'MANIFEST_BLOB_UNKNOWN' | 'MANIFEST_UNKNOWN' | 'DIGEST_INVALID' | 'SIZE_INVALID' | 'TAG_INVALID',
    message: string,
    readonly detail?: unknown,
  ) {
    super(message);
    this.name = 'ManifestError';
  }
}

export interface Descriptor {
  mediaType: string;
  digest: string;
  size: number;
  urls?: string[];
  artifactType?: string;
  annotations?: Record<string, string>;
  platform?: unknown;
  data?: string;
}

export interface ParsedManifest {
  mediaType: string;
  kind: 'image' | 'index';
  /** Config and layers (image) — the blobs it needs. */
  blobs: Descriptor[];
  /** Platform manifests (index). */
  children: Descriptor[];
  subject?: Descriptor;
  artifactType?: string;
  annotations?: Record<string, string>;
  /** The config's media type, which stands for the artifact type when none is set. */
  configMediaType?: string;
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function descriptor(v: unknown, where: string): Descriptor {
  if (!isObject(v)) throw new ManifestError('MANIFEST_INVALID', `${where} is not a descriptor`);
  const { mediaType, digest, size } = v;
  if (typeof mediaType !== 'string' || mediaType === '') throw new ManifestError('MANIFEST_INVALID', `${where}.mediaType is missing`);
  if (typeof digest !== 'string' || !isDigest(digest)) throw new ManifestError('MANIFEST_INVALID', `${where}.digest is not a valid digest`);
  if (typeof size !== 'number' || !Number.isSafeInteger(size) || size < 0) throw new ManifestError('MANIFEST_INVALID', `${where}.size is not a size`);
  if (v.urls !== undefined && (!Array.isArray(v.urls) || v.urls.some((u) => typeof u !== 'string'))) {
    throw new ManifestError('MANIFEST_INVALID', `${where}.urls must be a list of strings`);
  }
  if (v.data !== undefined) {
    if (typeof v.data !== 'string') throw new ManifestError('MANIFEST_INVALID', `${where}.data must be base64`);
    const bytes = Buffer.from(v.data, 'base64');
    if (bytes.length !== size || digestOf(bytes, parseDigest(digest).algorithm) !== digest) {
      throw new ManifestError('MANIFEST_INVALID', `${where}.data does not match its digest and size`);
    }
  }
  return v as unknown as Descriptor;
}

/** Parses and validates a manifest. `contentType` is the request's Content-Type. */
export function parseManifest(bytes: Buffer, contentType: string | undefined): ParsedManifest {
  let doc: unknown;
  try {
    doc = JSON.parse(bytes.toString('utf8'));
  } catch {
    throw new ManifestError('MANIFEST_INVALID', 'manifest is not valid JSON');
  }
  if (!isObject(doc)) throw new ManifestError('MANIFEST_INVALID', 'manifest is not a JSON object');
  const declared = typeof doc.mediaType === 'string' ? doc.mediaType : undefined;
  const header = contentType?.split(';')[0]?.trim().toLowerCase();
  const headerType = header && header !== 'application/json' && header !== 'application/octet-stream' ? header : undefined;
  if (headerType && SCHEMA1.test(headerType)) throw new ManifestError('MANIFEST_INVALID', 'Docker schema 1 manifests are not supported; push schema 2 or OCI');
  if (declared && headerType && declared !== headerType) {
    throw new ManifestError('MANIFEST_INVALID', `mediaType ${declared} does not match Content-Type ${headerType}`);
  }
  let mediaType = declared ?? headerType;
  if (!mediaType) {
    // OCI manifests may omit mediaType; tell an index from an image by its fields.
    mediaType = Array.isArray(doc.manifests) ? MEDIA_TYPES.ociIndex : MEDIA_TYPES.ociManifest;
  }
  if (doc.schemaVersion !== 2) throw new ManifestError('MANIFEST_INVALID', 'schemaVersion must be 2');
  const subject = doc.subject === undefined ? undefined : descriptor(doc.subject, 'subject');
  const artifactType = typeof doc.artifactType === 'string' ? doc.artifactType : undefined;
  const annotations = isObject(doc.annotations) ? (doc.annotations as Record<string, string>) : undefined;
  if (IMAGE_TYPES.has(mediaType)) {
    if (doc.manifests !== undefined) throw new ManifestError('MANIFEST_INVALID', 'an image manifest has no "manifests"');
    const config = descriptor(doc.config, 'config');
    if (!Array.isArray(doc.layers)) throw new ManifestError('MANIFEST_INVALID', 'layers must be a list');
    const layers = doc.layers.map((l, i) => descriptor(l, `layers[${i}]`));
    return { mediaType, kind: 'image', blobs: [config, ...layers], children: [], subject, artifactType, annotations, configMediaType: config.mediaType };
  }
  if (INDEX_TYPES.has(mediaType)) {
    if (!Array.isArray(doc.manifests)) throw new ManifestError('MANIFEST_INVALID', 'manifests must be a list');
    if (doc.layers !== undefined || doc.config !== undefined) throw new ManifestError('MANIFEST_INVALID', 'an index has no config or layers');
    const children = doc.manifests.map((m, i) => descriptor(m, `manifests[${i}]`));
    return { mediaType, kind: 'index', blobs: [], children, subject, artifactType, annotations };
  }
  throw new ManifestError('MANIFEST_INVALID', `unsupported manifest media type ${mediaType}`);
}

/** Layers that live outside registries (Docker foreign layers, OCI non-distributable) need not be pushed. */
function mustBePushed(d: Descriptor): boolean {
  return !(d.urls && d.urls.length > 0) && !/nondistributable|foreign/.test(d.mediaType);
}

export async function manifestByDigest(db: DbOrTx, repositoryId: number, digest: string): Promise<ManifestRow | undefined> {
  const [row] = await db.select().from(manifests).where(and(eq(manifests.repositoryId, repositoryId), eq(manifests.digest, digest)));
  return row;
}

/** Inserts the manifest unless stored, and locks its row FOR KEY SHARE: GC deletes expired
 * manifests under FOR UPDATE, so tagging one and deleting it serialize; one deleted between the
 * insert and the lock is inserted again. */
async function storeManifest(tx: DbOrTx, row: typeof manifests.$inferInsert): Promise<ManifestRow> {
  for (let attempt = 0; attempt < 3; attempt++) {
    await tx.insert(manifests).values(row).onConflictDoNothing();
    const [stored] = await tx
      .select()
      .from(manifests)
      .where(and(eq(manifests.repositoryId, row.repositoryId), eq(manifests.digest, row.digest)))
      .for('key share');
    if (stored) return stored;
  }
  throw new Error(`manifest ${row.digest} keeps disappearing`);
}

export async function manifestByTag(db: DbOrTx, repositoryId: number, tag: string): Promise<ManifestRow | undefined> {
  const [row] = await db
    .select({ m: manifests })
    .from(tags)
    .innerJoin(manifests, eq(tags.manifestId, manifests.id))
    .where(and(eq(tags.repositoryId, repositoryId), eq(tags.name, tag)));
  return row?.m;
}

export async function resolveManifest(db: DbOrTx, repositoryId: number, reference: string): Promise<ManifestRow | undefined> {
  return isDigest(reference) ? manifestByDigest(db, repositoryId, reference) : manifestByTag(db, repositoryId, reference);
}

export interface PutManifestResult {
  manifest: ManifestRow;
  digest: string;
  subject?: string;
}

/**
 * Stores a manifest in a repository under its digest and, when `tags` are given, points them at
 * it. Refuses manifests that reference blobs or manifests the repository does not have (a
 * subject may be missing: referrers can be pushed before what they refer to).
 */
export async function putManifest(
  tx: DbOrTx,
  repo: Repository,
  input: { bytes: Buffer; contentType: string | undefined; digestReference?: string; tags: string[] },
): Promise<PutManifestResult> {
  if (input.bytes.length > MAX_MANIFEST_BYTES) {
    throw new ManifestError('SIZE_INVALID', `manifest is larger than ${MAX_MANIFEST_BYTES} bytes`);
  }
  const parsed = parseManifest(input.bytes, input.contentType);
  const algorithm: DigestAlgorithm = input.digestReference ? parseDigest(input.digestReference).algorithm : 'sha256';
  const digest = digestOf(input.bytes, algorithm);
  if (input.digestReference && input.digestReference !== digest) {
    throw new ManifestError('DIGEST_INVALID', `manifest digest is ${digest}, not ${input.digestReference}`);
  }

  const needed = parsed.blobs.filter(mustBePushed);
  const have = await linkedDigests(tx, repo.id, [...new Set(needed.map((d) => d.digest))]);
  const missingBlobs = needed.filter((d) => !have.has(d.digest));
  if (missingBlobs.length > 0) {
    throw new ManifestError('MANIFEST_BLOB_UNKNOWN', `blob ${missingBlobs[0]!.digest} is not in repository ${repo.fullName}`, {
      digests: missingBlobs.map((d) => d.digest),
    });
  }
  // GC may have marked some of them meanwhile: revive those, refuse those whose copies are gone.
  const collected = await claimBlobsForManifest(tx, [...new Map([...have.values()].map((b) => [b.id, b])).values()], repo.fullName);
  if (collected.length > 0) {
    throw new ManifestError('MANIFEST_BLOB_UNKNOWN', `blob ${collected[0]} was garbage-collected; push it again`, { digests: collected });
  }
  const childDigests = [...new Set(parsed.children.map((c) => c.digest))];
  const childRows =
    childDigests.length === 0
      ? []
      : await tx
          .select({ id: manifests.id, digest: manifests.digest })
          .from(manifests)
          .where(and(eq(manifests.repositoryId, repo.id), inArray(manifests.digest, childDigests)));
  if (childRows.length !== childDigests.length) {
    const found = new Set(childRows.map((r) => r.digest));
    const missing = childDigests.filter((d) => !found.has(d));
    throw new ManifestError('MANIFEST_BLOB_UNKNOWN', `manifest ${missing[0]} is not in repository ${repo.fullName}`, { digests: missing });
  }

  const row = {
    repositoryId: repo.id,
    digest,
    mediaType: parsed.mediaType,
    artifactType: parsed.artifactType ?? null,
    subjectDigest: parsed.subject?.digest ?? null,
    annotations: parsed.annotations ?? null,
    size: input.bytes.length,
    content: input.bytes,
  };
  const manifest = await storeManifest(tx, row);
  const blobIds = [...new Set([...have.values()].map((b) => b.id))];
  if (blobIds.length > 0) {
    await tx.insert(manifestBlobs).values(blobIds.map((blobId) => ({ manifestId: manifest.id, blobId }))).onConflictDoNothing();
  }
  if (childRows.length > 0) {
    await tx.insert(manifestChildren).values(childRows.map((c) => ({ parentId: manifest.id, childId: c.id }))).onConflictDoNothing();
  }
  for (const tag of input.tags) await setTag(tx, repo.id, tag, manifest.id);
  return { manifest, digest, subject: parsed.subject?.digest };
}

export async function setTag(tx: DbOrTx, repositoryId: number, tag: string, manifestId: number): Promise<void> {
  await tx
    .insert(tags)
    .values({ repositoryId, name: tag, manifestId })
    .onConflictDoUpdate({ target: [tags.repositoryId, tags.name], set: { manifestId, updatedAt: sql`now()` } });
}

export async function deleteTag(tx: DbOrTx, repositoryId: number, tag: string): Promise<boolean> {
  const rows = await tx.delete(tags).where(and(eq(tags.repositoryId, repositoryId), eq(tags.name, tag))).returning();
  return rows.length > 0;
}

/** Deletes a manifest and the tags pointing at it. */
export async function deleteManifest(tx: DbOrTx, repositoryId: number, digest: string): Promise<boolean> {
  const rows = await tx.delete(manifests).where(and(eq(manifests.repositoryId, repositoryId), eq(manifests.digest, digest))).returning({ id: manifests.id });
  return rows.length > 0;
}

export async function listTags(db: DbOrTx, repositoryId: number, opts: { last?: string; limit: number }): Promise<string[]> {
  const rows = await db
    .select({ name: tags.name })
    .from(tags)
    .where(and(eq(tags.repositoryId, repositoryId), opts.last ? sql`${tags.name} collate "C" > ${opts.last}` : undefined))
    .orderBy(sql`${tags.name} collate "C"`)
    .limit(opts.limit);
  return rows.map((r) => r.name);
}

export interface Referrer {
  mediaType: string;
  digest: string;
  size: number;
  artifactType?: string;
  annotations?: Record<string, string>;
}

/** Manifests in the repository whose subject is `digest` (the referrers API). */
export async function listReferrers(db: DbOrTx, repositoryId: number, subject: string, artifactType?: string): Promise<Referrer[]> {
  const rows = await db
    .select()
    .from(manifests)
    .where(and(eq(manifests.repositoryId, repositoryId), eq(manifests.subjectDigest, subject)))
    .orderBy(asc(manifests.id));
  const out: Referrer[] = [];
  for (const m of rows) {
    // The artifact type is the manifest's artifactType, else its config's media type.
    let type = m.artifactType ?? undefined;
    if (!type && m.mediaType !== MEDIA_TYPES.ociIndex) {
      try {
        type = parseManifest(m.content, m.mediaType).configMediaType;
      } catch {
        type = undefined;
      }
    }
    if (artifactType && type !== artifactType) continue;
    out.push({
      mediaType: m.mediaType,
      digest: m.digest,
      size: m.size,
      ...(type ? { artifactType: type } : {}),
      ...(m.annotations ? { annotations: m.annotations } : {}),
    });
  }
  return out;
}
