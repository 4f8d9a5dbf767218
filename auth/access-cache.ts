// Per-process memory of what authorization reads from PostgreSQL, so that a pull costs one small
// query for access instead of four or five.
//
// Everything remembered here belongs to one *access version*: the number in the single
// `access_version` row, which triggers bump inside every transaction that changes accounts,
// robots, memberships, grants, repositories or mirror robots (migration 0006). Each request reads
// the version first (platform/cache-versions.ts: one prepared query, shared by the requests in
// flight, started after the request arrived), then answers from the snapshot of that version,
// loading what is missing. Why a revocation is refused on the very next
// request, on every process:
// - the bump commits atomically with the revocation, so a request that starts after the
//   revocation's response reads the new version, finds an empty snapshot and reads the database;
// - a snapshot is only filled by requests that already read its version, i.e. after that
//   version's change had committed, so nothing older than the change is ever cached under it;
// - a request whose version read was overtaken by a newer one (pool connections answer out of
//   order) gets a throw-away snapshot, never the newer one.
// The trigger, not the application, does the bumping: no writer (API, CLI, workers, psql) can
// forget it.
import type postgres from 'postgres';
import type { Config } from '../config.ts';
import { readCacheVersions, SnapshotSeries, VersionedMemo } from '../platform/cache-versions.ts';
import type { Principal } from './principal.ts';
import { type TokenAccess, verifyRegistryToken } from './tokens.ts';

/** What this process remembers about access under one access version. */
export class AccessSnapshot extends VersionedMemo {}

const series = new WeakMap<postgres.Sql, SnapshotSeries<AccessSnapshot>>();

/** The snapshot for the access version as of now (one query, shared with concurrent requests:
 * platform/cache-versions.ts), or for `version` when the caller has just read it. */
export async function accessSnapshot(sql: postgres.Sql, version?: bigint): Promise<AccessSnapshot> {
  const v = version ?? (await readCacheVersions(sql)).access;
  let s = series.get(sql);
  if (!s) series.set(sql, (s = new SnapshotSeries((n) => new AccessSnapshot(n))));
  return s.at(v);
}

// Verified registry tokens, by their text: a token's claims never change, so verifying the
// signature once is enough until it expires. Whether its principal still exists is not part of
// this (that is checked per access version).
const TOKENS_MAX = 10_000;
type VerifiedTokens = Map<string, { verified: { principal: Principal; access: TokenAccess }; expiresMs: number }>;
/** By signing key (and audience, in the map key): processes running several configurations
 * (tests) must not accept one's tokens in another. */
const verifiedByKey = new WeakMap<object, VerifiedTokens>();

/** verifyRegistryToken, remembering valid tokens until their expiry. */
export async function verifyRegistryTokenCached(
  cfg: Pick<Config, 'publicUrl' | 'tokenSigningKey'>,
  token: string,
): Promise<{ principal: Principal; access: TokenAccess } | undefined> {
  let verifiedTokens = verifiedByKey.get(cfg.tokenSigningKey);
  if (!verifiedTokens) verifiedByKey.set(cfg.tokenSigningKey, (verifiedTokens = new Map()));
  const key = `${cfg.publicUrl} ${token}`;
  const hit = verifiedTokens.get(key);
  if (hit) {
    if (hit.expiresMs > Date.now()) return hit.verified;
    verifiedTokens.delete(key);
  }
  const verified = await verifyRegistryToken(cfg, token);
  const exp = verified && tokenExpiry(token);
  if (verified && exp !== undefined) {
    if (verifiedTokens.size >= TOKENS_MAX) verifiedTokens.delete(verifiedTokens.keys().next().value!);
    verifiedTokens.set(key, { verified, expiresMs: exp * 1000 });
  }
  return verified;
}

/** The `exp` claim of a token whose signature was just verified. */
function tokenExpiry(token: string): number | undefined {
  try {
    const payload = JSON.parse(Buffer.from(token.split('.')[1] ?? '', 'base64url').toString('utf8')) as { exp?: unknown };
    return typeof payload.exp === 'number' ? payload.exp : undefined;
  } catch {
    return undefined;
  }
}
