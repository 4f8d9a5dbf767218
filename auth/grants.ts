// Granting and revoking repository permissions (users and robots), as Quay's
// /repository/<repo>/permissions/user/<name> does — robots are named `ns+short` there too.
import { and, eq } from 'drizzle-orm';
import type { DbOrTx } from '../db/client.ts';
import { namespaces, repositoryPermissions, robots, users } from '../db/schema.ts';
import { DomainError } from '../platform/errors.ts';
import type { Repository } from '../registry/repositories.ts';
import { robotByName, userByName } from './accounts.ts';
import type { RepoRole } from './permissions.ts';

export const ROLES: RepoRole[] = ['read', 'write', 'admin'];

export interface PermissionView {
  name: string;
  role: RepoRole;
  is_robot: boolean;
}

async function grantee(db: DbOrTx, name: string): Promise<{ userId: number | null; robotId: number | null; isRobot: boolean; robotNamespaceId?: number }> {
  if (name.includes('+')) {
    const robot = await robotByName(db, name);
    if (!robot) throw new DomainError('not_found', `robot ${name} does not exist`);
    return { userId: null, robotId: robot.id, isRobot: true, robotNamespaceId: robot.namespaceId };
  }
  const user = await userByName(db, name);
  if (!user) throw new DomainError('not_found', `user ${name} does not exist`);
  return { userId: user.id, robotId: null, isRobot: false };
}

export async function setPermission(db: DbOrTx, repo: Repository, name: string, role: string): Promise<PermissionView> {
  if (!ROLES.includes(role as RepoRole)) throw new DomainError('invalid', 'role must be one of read, write, admin');
  const g = await grantee(db, name);
  if (g.isRobot && g.robotNamespaceId !== repo.namespaceId) {
    throw new DomainError('invalid', `robot ${name} belongs to another namespace than ${repo.fullName}`);
  }
  const target = g.isRobot ? repositoryPermissions.robotId : repositoryPermissions.userId;
  const updated = await db
    .update(repositoryPermissions)
    .set({ role: role as RepoRole })
    .where(and(eq(repositoryPermissions.repositoryId, repo.id), eq(target, (g.robotId ?? g.userId)!)))
    .returning();
  if (updated.length === 0) {
    await db.insert(repositoryPermissions).values({ repositoryId: repo.id, userId: g.userId, robotId: g.robotId, role: role as RepoRole });
  }
  return { name, role: role as RepoRole, is_robot: g.isRobot };
}

export async function deletePermission(db: DbOrTx, repo: Repository, name: string): Promise<void> {
  const g = await grantee(db, name);
  const target = g.isRobot ? repositoryPermissions.robotId : repositoryPermissions.userId;
  const rows = await db
    .delete(repositoryPermissions)
    .where(and(eq(repositoryPermissions.repositoryId, repo.id), eq(target, (g.robotId ?? g.userId)!)))
    .returning();
  if (rows.length === 0) throw new DomainError('not_found', `${name} has no permission on ${repo.fullName}`);
}

export async function listPermissions(db: DbOrTx, repo: Repository): Promise<PermissionView[]> {
  const rows = await db
    .select({ role: repositoryPermissions.role, username: users.username, robotShort: robots.shortName, robotNs: namespaces.name })
    .from(repositoryPermissions)
    .leftJoin(users, eq(users.id, repositoryPermissions.userId))
    .leftJoin(robots, eq(robots.id, repositoryPermissions.robotId))
    .leftJoin(namespaces, eq(namespaces.id, robots.namespaceId))
    .where(eq(repositoryPermissions.repositoryId, repo.id));
  return rows.map((r) => ({
    name: r.username ?? `${r.robotNs}+${r.robotShort}`,
    role: r.role,
    is_robot: r.username === null,
  }));
}
