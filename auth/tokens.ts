// Registry bearer tokens (Docker's token authentication): short-lived JWTs signed with
// MERIDIAN_TOKEN_KEY whose `access` claim lists what they grant, and long-lived refresh tokens
// (stored only as hashes) that clients trade for new access tokens.
import { randomUUID } from 'node:crypto';
import { and, eq, gt, isNull, or, sql } from 'drizzle-orm';
import { SignJWT, jwtVerify } from 'jose';
import type { Config } from '../config.ts';
import type { DbOrTx } from '../db/client.ts';
import { tokens } from '../db/schema.ts';
import { generateToken, tokenHash } from './passwords.ts';
import type { Principal, RepoAction } from './principal.ts';

export const ISSUER = 'meridian';
const REFRESH_TTL_DAYS = 90;

/** One entry of a token's `access` claim. */
export interface AccessEntry {
  type: 'repository' | 'registry';
  name: string;
  actions: string[];
}

/** What a token grants, by resource: `repository:<name>` → actions, `registry:catalog` → ['*']. */
export type TokenAccess = Map<string, Set<string>>;

export interface Scope {
  type: 'repository' | 'registry';
  name: string;
  actions: string[];
}

/** `repository:org/app:pull,push` (names cannot contain ':'); unknown types are ignored. */
export function parseScope(raw: string): Scope | undefined {
  const first = raw.indexOf(':');
  const last = raw.lastIndexOf(':');
  if (first <= 0 || last === first) return undefined;
  const type = raw.slice(0, first).replace(/\(.*\)$/, '');
  const name = raw.slice(first + 1, last);
  const actions = raw
    .slice(last + 1)
    .split(',')
    .map((a) => a.trim())
    .filter(Boolean);
  if ((type !== 'repository' && type !== 'registry') || name === '' || actions.length === 0) return undefined;
  return { type, name, actions };
}

export function formatScope(type: string, name: string, actions: readonly string[]): string {
  return `${type}:${name}:${actions.join(',')}`;
}

/** The token service name: what clients send as `service` and we put in `aud`. */
export function tokenService(cfg: Pick<Config, 'publicUrl'>): string {
  return new URL(cfg.publicUrl).host;
}

interface PrincipalClaim {
  k: 'a' | 'u' | 'r';
  id?: number;
  n?: string;
  ns?: number;
  su?: boolean;
}

function principalClaim(p: Principal): PrincipalClaim {
  if (p.kind === 'user') return { k: 'u', id: p.userId, n: p.username, su: p.superuser };
  if (p.kind === 'robot') return { k: 'r', id: p.robotId, n: p.name, ns: p.namespaceId };
  return { k: 'a' };
}

function principalFrom(c: PrincipalClaim): Principal | undefined {
  if (c.k === 'a') return { kind: 'anonymous' };
  if (c.k === 'u' && typeof c.id === 'number' && typeof c.n === 'string') return { kind: 'user', userId: c.id, username: c.n, superuser: c.su === true };
  if (c.k === 'r' && typeof c.id === 'number' && typeof c.n === 'string' && typeof c.ns === 'number') return { kind: 'robot', robotId: c.id, name: c.n, namespaceId: c.ns };
  return undefined;
}

export function principalSubject(p: Principal): string {
  return p.kind === 'anonymous' ? '' : p.kind === 'user' ? p.username : p.name;
}

export async function issueRegistryToken(
  cfg: Pick<Config, 'publicUrl' | 'tokenSigningKey' | 'tokenTtlSeconds'>,
  principal: Principal,
  access: AccessEntry[],
): Promise<{ token: string; expiresIn: number; issuedAt: string }> {
  const now = Math.floor(Date.now() / 1000);
  const token = await new SignJWT({ access, mp: principalClaim(principal) })
    .setProtectedHeader({ alg: 'HS256', typ: 'JWT' })
    .setIssuer(ISSUER)
    .setSubject(principalSubject(principal))
    .setAudience(tokenService(cfg))
    .setIssuedAt(now)
    .setNotBefore(now - 5)
    .setExpirationTime(now + cfg.tokenTtlSeconds)
    .setJti(randomUUID())
    .sign(cfg.tokenSigningKey);
  return { token, expiresIn: cfg.tokenTtlSeconds, issuedAt: new Date(now * 1000).toISOString() };
}

/** The principal and grants of a valid token; undefined for anything else (expired, forged…). */
export async function verifyRegistryToken(
  cfg: Pick<Config, 'publicUrl' | 'tokenSigningKey'>,
  token: string,
): Promise<{ principal: Principal; access: TokenAccess } | undefined> {
  try {
    const { payload } = await jwtVerify(token, cfg.tokenSigningKey, { issuer: ISSUER, audience: tokenService(cfg), algorithms: ['HS256'] });
    const principal = principalFrom((payload.mp ?? {}) as PrincipalClaim);
    if (!principal || !Array.isArray(payload.access)) return undefined;
    const access: TokenAccess = new Map();
    for (const e of payload.access as AccessEntry[]) {
      if (!e || typeof e.name !== 'string' || !Array.isArray(e.actions)) continue;
      access.set(`${e.type}:${e.name}`, new Set(e.actions));
    }
    return { principal, access };
  } catch {
    return undefined;
  }
}

export function tokenGrants(access: TokenAccess, repository: string, actions: RepoAction[]): boolean {
  const granted = access.get(`repository:${repository}`);
  return actions.every((a) => granted?.has(a) || granted?.has('*'));
}

/** A refresh token for the principal (users and robots only). The plaintext is returned once. */
export async function issueRefreshToken(db: DbOrTx, principal: Principal): Promise<string | undefined> {
  if (principal.kind === 'anonymous') return undefined;
  const token = generateToken(32);
  await db.insert(tokens).values({
    kind: 'refresh',
    tokenHash: tokenHash(token),
    userId: principal.kind === 'user' ? principal.userId : null,
    robotId: principal.kind === 'robot' ? principal.robotId : null,
    expiresAt: sql`now() + make_interval(days => ${REFRESH_TTL_DAYS})`,
  });
  return token;
}

/** The owner of a live refresh token, as ids (the caller turns them into a principal). */
export async function refreshTokenOwner(db: DbOrTx, token: string): Promise<{ userId: number | null; robotId: number | null } | undefined> {
  const [row] = await db
    .update(tokens)
    .set({ lastUsedAt: sql`now()` })
    .where(and(eq(tokens.tokenHash, tokenHash(token)), eq(tokens.kind, 'refresh'), isNull(tokens.revokedAt), or(isNull(tokens.expiresAt), gt(tokens.expiresAt, sql`now()`))))
    .returning({ userId: tokens.userId, robotId: tokens.robotId });
  return row;
}
