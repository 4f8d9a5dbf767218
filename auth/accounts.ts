// Users, organizations and robot accounts. A user owns a namespace of the same name; an
// organization is a namespace with members.
import { and, eq, isNull, sql } from 'drizzle-orm';
import type { DbOrTx } from '../db/client.ts';
import { namespaceMembers, namespaces, robots, tokens, users } from '../db/schema.ts';
import { DomainError } from '../platform/errors.ts';
import { generateToken, hashPassword, tokenHash } from './passwords.ts';

/** Quay's namespace rule: lowercase letters, digits, `_` and `-`, 2–255 characters. */
export const NAMESPACE_NAME = /^[a-z0-9][a-z0-9_-]{1,254}$/;
export const ROBOT_SHORT_NAME = /^[a-z][a-z0-9_]{1,254}$/;

export class AccountError extends DomainError {}

/** Quay's words for a taken user or organization name (scripts compare them). */
export const NAME_TAKEN = 'A user or organization with this name already exists';

function checkNamespaceName(name: string): void {
  if (!NAMESPACE_NAME.test(name)) {
    throw new AccountError('invalid', `"${name}" is not a valid name: use 2-255 lowercase letters, digits, "_" or "-", starting with a letter or digit`);
  }
}

export type UserRow = typeof users.$inferSelect;
export type RobotRow = typeof robots.$inferSelect;
export type NamespaceRow = typeof namespaces.$inferSelect;

export async function createUser(tx: DbOrTx, input: { username: string; password: string; email?: string }): Promise<UserRow> {
  checkNamespaceName(input.username);
  if (input.password.length < 8) throw new AccountError('invalid', 'password must be at least 8 characters');
  const passwordHash = await hashPassword(input.password);
  const [ns] = await tx.insert(namespaces).values({ name: input.username, kind: 'user' }).onConflictDoNothing().returning();
  if (!ns) throw new AccountError('conflict', NAME_TAKEN);
  const [user] = await tx
    .insert(users)
    .values({ username: input.username, email: input.email ?? null, passwordHash, namespaceId: ns.id })
    .returning();
  return user!;
}

export async function setPassword(tx: DbOrTx, userId: number, password: string): Promise<void> {
  if (password.length < 8) throw new AccountError('invalid', 'password must be at least 8 characters');
  await tx.update(users).set({ passwordHash: await hashPassword(password) }).where(eq(users.id, userId));
}

export async function createOrganization(tx: DbOrTx, input: { name: string; creatorUserId: number }): Promise<NamespaceRow> {
  checkNamespaceName(input.name);
  const [ns] = await tx.insert(namespaces).values({ name: input.name, kind: 'organization' }).onConflictDoNothing().returning();
  if (!ns) throw new AccountError('conflict', NAME_TAKEN);
  await tx.insert(namespaceMembers).values({ namespaceId: ns.id, userId: input.creatorUserId, role: 'admin' });
  return ns;
}

export async function namespaceByName(tx: DbOrTx, name: string): Promise<NamespaceRow | undefined> {
  const [ns] = await tx.select().from(namespaces).where(eq(namespaces.name, name));
  return ns;
}

export async function userByName(tx: DbOrTx, username: string): Promise<UserRow | undefined> {
  const [u] = await tx.select().from(users).where(eq(users.username, username));
  return u;
}

/** Creates a robot `<namespace>+<short>` with a new token (shown once). A robot that exists
 * already is a conflict, as in Quay. */
export async function createRobot(
  tx: DbOrTx,
  input: { namespace: NamespaceRow; shortName: string; description?: string },
): Promise<{ robot: RobotRow; name: string; token: string }> {
  if (!ROBOT_SHORT_NAME.test(input.shortName)) {
    throw new AccountError('invalid', `"${input.shortName}" is not a valid robot name: lowercase letters, digits and "_", starting with a letter`);
  }
  if ((input.description ?? '').length > 255) throw new AccountError('invalid', 'description: at most 255 characters');
  const token = generateToken();
  const [robot] = await tx
    .insert(robots)
    .values({ namespaceId: input.namespace.id, shortName: input.shortName, description: input.description ?? '', tokenHash: tokenHash(token) })
    .onConflictDoNothing()
    .returning();
  if (!robot) throw new AccountError('conflict', `Existing robot with name: ${robotName(input.namespace.name, input.shortName)}`);
  return { robot, name: robotName(input.namespace.name, robot.shortName), token };
}

/** A new token for an existing robot; the old one stops working at once, and so do the refresh
 * and API tokens obtained with it (a token is regenerated because it leaked). */
export async function regenerateRobotToken(tx: DbOrTx, robotId: number): Promise<string> {
  const token = generateToken();
  await tx.update(robots).set({ tokenHash: tokenHash(token) }).where(eq(robots.id, robotId));
  await tx.update(tokens).set({ revokedAt: sql`now()` }).where(and(eq(tokens.robotId, robotId), isNull(tokens.revokedAt)));
  return token;
}

export function robotName(namespace: string, shortName: string): string {
  return `${namespace}+${shortName}`;
}

export function parseRobotName(name: string): { namespace: string; shortName: string } | undefined {
  const i = name.indexOf('+');
  if (i <= 0 || i === name.length - 1) return undefined;
  return { namespace: name.slice(0, i), shortName: name.slice(i + 1) };
}

export async function robotByName(tx: DbOrTx, name: string): Promise<(RobotRow & { namespaceName: string }) | undefined> {
  const parsed = parseRobotName(name);
  if (!parsed) return undefined;
  const [row] = await tx
    .select({ robot: robots, namespaceName: namespaces.name })
    .from(robots)
    .innerJoin(namespaces, eq(robots.namespaceId, namespaces.id))
    .where(and(eq(namespaces.name, parsed.namespace), eq(robots.shortName, parsed.shortName)));
  return row ? { ...row.robot, namespaceName: row.namespaceName } : undefined;
}
