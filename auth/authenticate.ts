// Who is calling: `Authorization: Basic` (a user's password, or a robot's name and token),
// `Authorization: Bearer` (a registry token from /v2/auth, or an API token), or nobody.
// Argon2 is deliberately slow, and clients such as skopeo send Basic credentials on every
// request, so successful verifications are remembered briefly in this process — keyed by a hash
// of the credentials, never the credentials themselves. Password logins pass the login throttle
// (login-throttle.ts) first, and an unknown or disabled account costs the same Argon2 verification
// as a known one, so that neither speed nor answers tell which accounts exist.
import { createHash, timingSafeEqual } from 'node:crypto';
import { and, eq, gt, isNull, or } from 'drizzle-orm';
import { namespaces, robots, tokens, users } from '../db/schema.ts';
import type { Services } from '../platform/services.ts';
import type { AccessSnapshot } from './access-cache.ts';
import { verifyRegistryTokenCached } from './access-cache.ts';
import { robotByName, userByName } from './accounts.ts';
import type { LoginAttempt } from './login-throttle.ts';
import { hashPassword, tokenHash, verifyPassword } from './passwords.ts';
import type { Principal } from './principal.ts';
import type { TokenAccess } from './tokens.ts';

export class AuthenticationError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'AuthenticationError';
  }
}

export interface Authenticated {
  principal: Principal;
  via: 'none' | 'basic' | 'registry-token' | 'api-token';
  /** For registry tokens: what the token grants. */
  access?: TokenAccess;
}

// A cache hit skips only the Argon2 computation: the user's row is still read on every request
// and the entry counts only while the stored hash is the one it was verified against and the
// user is enabled, so a password change or a disabled account takes effect at once.
const CACHE_TTL_MS = 60_000;
const CACHE_MAX = 10_000;
const basicCache = new Map<string, { storedHash: string; expires: number }>();

function cacheKey(name: string, secret: string): string {
  return createHash('sha256').update(name).update('\0').update(secret).digest('base64');
}

function sameHash(a: string, b: string): boolean {
  const x = Buffer.from(a);
  const y = Buffer.from(b);
  return x.length === y.length && timingSafeEqual(x, y);
}

function userPrincipal(s: Services, user: { id: number; username: string }): Principal {
  return { kind: 'user', userId: user.id, username: user.username, superuser: s.config.superusers.includes(user.username) };
}

// What an unknown, disabled or password-less account is verified against: same algorithm and
// cost as real hashes, of a random password nobody knows.
let dummyHash: Promise<string> | undefined;
function unknownAccountHash(): Promise<string> {
  dummyHash ??= hashPassword(createHash('sha256').update(String(Math.random())).update(String(process.hrtime.bigint())).digest('base64'));
  return dummyHash;
}

/** Verifies a user's password or a robot's token. Null when they do not match. With a snapshot,
 * the account rows are read once per access version (see access-cache.ts). */
async function verifyCredentials(s: Services, name: string, secret: string, snap?: AccessSnapshot): Promise<Principal | null> {
  if (name === '' || name.length > 512 || secret === '' || secret.length > 1024) return null;
  if (name.includes('+')) {
    // Robot tokens are long random strings: a SHA-256 lookup is fast, no cache needed.
    const robot = await (snap ? snap.memo(`robot:${name}`, () => robotByName(s.db, name)) : robotByName(s.db, name));
    if (!robot || !sameHash(robot.tokenHash, tokenHash(secret))) return null;
    return { kind: 'robot', robotId: robot.id, name: `${robot.namespaceName}+${robot.shortName}`, namespaceId: robot.namespaceId };
  }
  const user = await (snap ? snap.memo(`user:${name}`, () => userByName(s.db, name)) : userByName(s.db, name));
  if (!user?.enabled || !user.passwordHash) {
    await verifyPassword(await unknownAccountHash(), secret);
    return null;
  }
  const key = cacheKey(name, secret);
  const hit = basicCache.get(key);
  if (hit && hit.expires > Date.now() && sameHash(hit.storedHash, user.passwordHash)) return userPrincipal(s, user);
  if (!(await verifyPassword(user.passwordHash, secret))) {
    basicCache.delete(key);
    return null;
  }
  if (basicCache.size >= CACHE_MAX) basicCache.delete(basicCache.keys().next().value!);
  basicCache.set(key, { storedHash: user.passwordHash, expires: Date.now() + CACHE_TTL_MS });
  return userPrincipal(s, user);
}

/** A password (or robot token) login: throttled per account and address (LoginThrottledError
 * when over the limit), counted when it fails. Null when the credentials do not match. */
export async function verifyLogin(s: Services, attempt: LoginAttempt & { secret: string }, snap?: AccessSnapshot): Promise<Principal | null> {
  const failures = await s.loginThrottle.check(attempt);
  const principal = await verifyCredentials(s, attempt.name, attempt.secret, snap);
  if (principal) await s.loginThrottle.succeeded(attempt, failures);
  else await s.loginThrottle.failed(attempt);
  return principal;
}

/** What a request presents: its Authorization header, and the client address logins are
 * throttled by. A Koa context is one. */
export interface Presented {
  /** The Authorization header; absent or empty means none. */
  authorization?: string;
  address: string;
}

/** The credentials a Koa request presents. */
export function presented(ctx: { get(field: string): string; ip: string }): Presented {
  return { authorization: ctx.get('Authorization') || undefined, address: ctx.ip };
}

/** Forgets cached verifications (tests). */
export function forgetCachedCredentials(): void {
  basicCache.clear();
}

export function parseBasic(header: string): { name: string; secret: string } | undefined {
  const m = /^Basic\s+([A-Za-z0-9+/=_-]+)\s*$/i.exec(header);
  if (!m) return undefined;
  const decoded = Buffer.from(m[1]!, 'base64').toString('utf8');
  const i = decoded.indexOf(':');
  if (i < 0) return undefined;
  const name = decoded.slice(0, i);
  const secret = decoded.slice(i + 1);
  // No account name holds a control character, and PostgreSQL refuses NUL in text: malformed.
  if (/[\u0000-\u001f\u007f]/.test(name) || secret.includes('\u0000') || name.length > 512 || secret.length > 4096) return undefined;
  return { name, secret };
}

async function apiTokenPrincipal(s: Services, token: string): Promise<Principal | null> {
  const [row] = await s.db
    .select({ userId: tokens.userId, robotId: tokens.robotId, username: users.username, enabled: users.enabled, robotShort: robots.shortName, robotNs: robots.namespaceId, nsName: namespaces.name })
    .from(tokens)
    .leftJoin(users, eq(tokens.userId, users.id))
    .leftJoin(robots, eq(tokens.robotId, robots.id))
    .leftJoin(namespaces, eq(robots.namespaceId, namespaces.id))
    .where(and(eq(tokens.tokenHash, tokenHash(token)), eq(tokens.kind, 'api'), isNull(tokens.revokedAt), or(isNull(tokens.expiresAt), gt(tokens.expiresAt, new Date()))));
  if (row?.userId && row.username && row.enabled) {
    return { kind: 'user', userId: row.userId, username: row.username, superuser: s.config.superusers.includes(row.username) };
  }
  if (row?.robotId && row.robotShort && row.robotNs && row.nsName) {
    return { kind: 'robot', robotId: row.robotId, name: `${row.nsName}+${row.robotShort}`, namespaceId: row.robotNs };
  }
  return null;
}

/** The token's principal as it is now: null when the user was disabled or deleted or the robot
 * deleted since the token was issued (tokens live minutes; a removed account must stop at once).
 * Superuser status is read from the configuration, not trusted from the token. */
async function currentPrincipal(s: Services, p: Principal, snap?: AccessSnapshot): Promise<Principal | null> {
  if (p.kind === 'anonymous') return p;
  if (snap) {
    const key = p.kind === 'user' ? `current:u:${p.userId}:${p.username}` : `current:r:${p.robotId}`;
    return snap.memo(key, () => currentPrincipal(s, p));
  }
  if (p.kind === 'user') {
    const [u] = await s.db.select({ id: users.id, username: users.username, enabled: users.enabled }).from(users).where(eq(users.id, p.userId));
    return u?.enabled && u.username === p.username ? userPrincipal(s, u) : null;
  }
  const [r] = await s.db.select({ id: robots.id }).from(robots).where(eq(robots.id, p.robotId));
  return r ? p : null;
}

/**
 * Authenticates an Authorization header. `bearer` says what a Bearer token may be here: registry
 * tokens on /v2, API tokens on /api/v1. Throws AuthenticationError for credentials that are
 * present but wrong, LoginThrottledError when a password login is over its limit; no header is
 * the anonymous principal.
 */
export async function authenticate(s: Services, req: Presented, bearer: 'registry' | 'api', snap?: AccessSnapshot): Promise<Authenticated> {
  const header = req.authorization;
  if (!header) return { principal: { kind: 'anonymous' }, via: 'none' };
  if (header.length > 8192) throw new AuthenticationError('Authorization header too large');
  if (/^Basic\s/i.test(header)) {
    const creds = parseBasic(header);
    if (!creds) throw new AuthenticationError('malformed Basic credentials');
    const principal = await verifyLogin(s, { ...creds, address: req.address }, snap);
    if (!principal) throw new AuthenticationError('invalid username or password');
    return { principal, via: 'basic' };
  }
  const m = /^Bearer\s+(\S+)\s*$/i.exec(header);
  if (!m) throw new AuthenticationError('unsupported Authorization scheme');
  if (bearer === 'registry') {
    const verified = await verifyRegistryTokenCached(s.config, m[1]!);
    const principal = verified && (await currentPrincipal(s, verified.principal, snap));
    if (!verified || !principal) throw new AuthenticationError('invalid or expired token');
    return { principal, via: 'registry-token', access: verified.access };
  }
  const principal = await apiTokenPrincipal(s, m[1]!);
  if (!principal) throw new AuthenticationError('invalid or expired token');
  return { principal, via: 'api-token' };
}
