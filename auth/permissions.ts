// The permission model, one place for /v2, the token endpoint and /api/v1.
//
// - Superusers (config) may do everything.
// - A user owns their own namespace: admin on every repository in it.
// - Organization members with role `admin` are admin on every repository of the organization;
//   role `creator` may create repositories there.
// - Otherwise access comes from repository_permissions (users and robots): read = pull,
//   write = pull + push + delete, admin = that + manage. Robots have no implicit rights.
//   Write may delete tags and manifests, as in Quay (a CI robot retags and cleans up what it
//   pushed; regctl's `tag rm` deletes the tag, and where that is refused it pushes a dummy
//   manifest over the tag and then cannot remove it). The token scope's `delete` action is
//   granted with write.
// - Whoever creates a repository without already administering its namespace (an organization
//   member with role `creator`) becomes its admin, as in Quay: see grantCreatorAdmin.
// - Public repositories may be pulled by anyone, including anonymous clients.
// - A repository that does not exist yet may be pushed to (and so created) by whoever may
//   create repositories in its namespace.
// - Mirror repositories are read-only for everyone, superusers included, except the robot named
//   in the mirror's configuration; read-only repositories are read-only for everyone.
import { and, eq, sql } from 'drizzle-orm';
import type { DbOrTx } from '../db/client.ts';
import { mirrorConfigs, namespaceMembers, namespaces, repositoryPermissions } from '../db/schema.ts';
import { parseRepositoryPath } from '../registry/names.ts';
import { findRepository, type Repository } from '../registry/repositories.ts';
import type { Principal, RepoAction } from './principal.ts';

export type RepoRole = 'read' | 'write' | 'admin';

const ACTIONS_OF_ROLE: Record<RepoRole, RepoAction[]> = {
  read: ['pull'],
  write: ['pull', 'push', 'delete'],
  admin: ['pull', 'push', 'delete'],
};

const RANK: Record<RepoRole, number> = { read: 1, write: 2, admin: 3 };

function best(a: RepoRole | null, b: RepoRole | null): RepoRole | null {
  if (!a) return b;
  if (!b) return a;
  return RANK[a] >= RANK[b] ? a : b;
}

export interface RepositoryAccess {
  repo: Repository | undefined;
  /** The principal's role on the repository (before read-only rules). */
  role: RepoRole | null;
  /** What it may do through /v2. */
  actions: Set<RepoAction>;
  /** Why write actions are refused despite the role (a mirror), to tell the client. */
  readOnlyReason?: string;
}

async function namespaceRole(db: DbOrTx, p: Principal, namespaceId: number, namespaceName: string, kind: 'user' | 'organization'): Promise<RepoRole | null> {
  if (p.kind !== 'user') return null;
  if (p.superuser) return 'admin';
  if (kind === 'user') return namespaceName === p.username ? 'admin' : null;
  const [m] = await db
    .select({ role: namespaceMembers.role })
    .from(namespaceMembers)
    .where(and(eq(namespaceMembers.namespaceId, namespaceId), eq(namespaceMembers.userId, p.userId)));
  return m?.role === 'admin' ? 'admin' : null;
}

async function grantedRole(db: DbOrTx, p: Principal, repositoryId: number): Promise<RepoRole | null> {
  if (p.kind === 'anonymous') return null;
  const [row] = await db
    .select({ role: repositoryPermissions.role })
    .from(repositoryPermissions)
    .where(
      and(
        eq(repositoryPermissions.repositoryId, repositoryId),
        p.kind === 'user' ? eq(repositoryPermissions.userId, p.userId) : eq(repositoryPermissions.robotId, p.robotId),
      ),
    );
  return row?.role ?? null;
}

/** Whether the principal may create repositories in the namespace. */
export async function mayCreateIn(db: DbOrTx, p: Principal, namespace: string): Promise<boolean> {
  if (p.kind !== 'user') return false;
  if (p.superuser) return true;
  const [ns] = await db.select().from(namespaces).where(eq(namespaces.name, namespace));
  if (!ns) return false;
  if (ns.kind === 'user') return ns.name === p.username;
  const [m] = await db
    .select({ role: namespaceMembers.role })
    .from(namespaceMembers)
    .where(and(eq(namespaceMembers.namespaceId, ns.id), eq(namespaceMembers.userId, p.userId)));
  return m?.role === 'admin' || m?.role === 'creator';
}

/** The namespaces the principal may create repositories in (its own, and organizations where it
 * is an admin or a creator), for telling a user who pushes elsewhere where they may. Superusers
 * may create anywhere: none listed. */
export async function creatableNamespaces(db: DbOrTx, p: Principal): Promise<string[]> {
  if (p.kind !== 'user' || p.superuser) return [];
  const orgs = await db
    .select({ name: namespaces.name })
    .from(namespaceMembers)
    .innerJoin(namespaces, eq(namespaces.id, namespaceMembers.namespaceId))
    .where(and(eq(namespaceMembers.userId, p.userId), sql`${namespaceMembers.role} in ('admin', 'creator')`));
  return [p.username, ...orgs.map((o) => o.name).sort()];
}

/** Whether the principal administers the namespace (its robots, its policies). */
export async function isNamespaceAdmin(db: DbOrTx, p: Principal, namespace: string): Promise<boolean> {
  if (p.kind !== 'user') return false;
  if (p.superuser) return true;
  const [ns] = await db.select().from(namespaces).where(eq(namespaces.name, namespace));
  if (!ns) return false;
  return (await namespaceRole(db, p, ns.id, ns.name, ns.kind)) === 'admin';
}

export async function repositoryRole(db: DbOrTx, p: Principal, repo: Repository): Promise<RepoRole | null> {
  const [ns] = await db.select().from(namespaces).where(eq(namespaces.id, repo.namespaceId));
  let role = ns ? await namespaceRole(db, p, ns.id, ns.name, ns.kind) : null;
  if (role !== 'admin') role = best(role, await grantedRole(db, p, repo.id));
  if (repo.visibility === 'public') role = best(role, 'read');
  return role;
}

async function mirrorRobotId(db: DbOrTx, repositoryId: number): Promise<number | null> {
  const [row] = await db.select({ robotId: mirrorConfigs.robotId }).from(mirrorConfigs).where(eq(mirrorConfigs.repositoryId, repositoryId));
  return row?.robotId ?? null;
}

/** What the principal may do to the repository `fullName` (which may not exist yet). */
export async function repositoryAccess(db: DbOrTx, p: Principal, fullName: string): Promise<RepositoryAccess> {
  const repo = await findRepository(db, fullName);
  if (!repo) {
    const path = parseRepositoryPath(fullName);
    const create = path ? await mayCreateIn(db, p, path.namespace) : false;
    return { repo, role: null, actions: new Set(create ? ['pull', 'push'] : []) };
  }
  const role = await repositoryRole(db, p, repo);
  const actions = new Set<RepoAction>(role ? ACTIONS_OF_ROLE[role] : []);
  if (repo.state === 'mirror') {
    const robotId = await mirrorRobotId(db, repo.id);
    const isMirrorRobot = p.kind === 'robot' && robotId !== null && p.robotId === robotId;
    if (isMirrorRobot) {
      // The mirror's robot writes what the sync brings, whatever the permission rows say.
      actions.add('pull').add('push').add('delete');
    } else {
      actions.delete('push');
      actions.delete('delete');
      return { repo, role, actions, readOnlyReason: `${fullName} is a mirrored repository; only its mirror robot may write` };
    }
  } else if (repo.state === 'readonly') {
    actions.delete('push');
    actions.delete('delete');
    return { repo, role, actions, readOnlyReason: `${fullName} is read-only` };
  }
  return { repo, role, actions };
}

/**
 * Makes the creator of a repository its admin when nothing else would give them rights on it:
 * an organization member with role `creator` (Quay grants the creating user admin likewise).
 * Owners, organization admins and superusers already administer it and get no extra row.
 * Call it right after creating a repository on a principal's behalf (management API, first push).
 */
export async function grantCreatorAdmin(db: DbOrTx, p: Principal, repo: Repository): Promise<void> {
  if (p.kind !== 'user' || p.superuser) return;
  if (await isNamespaceAdmin(db, p, repo.namespaceName)) return;
  await db
    .insert(repositoryPermissions)
    .values({ repositoryId: repo.id, userId: p.userId, role: 'admin' })
    .onConflictDoNothing();
}

/** Repository names the principal may pull, in byte order, after `last`. */
export async function visibleRepositoryNames(db: DbOrTx, p: Principal, opts: { last?: string; limit: number }): Promise<string[]> {
  const full = sql<string>`(n.name || '/' || r.name)`;
  const userId = p.kind === 'user' ? p.userId : -1;
  const robotId = p.kind === 'robot' ? p.robotId : -1;
  const username = p.kind === 'user' ? p.username : '';
  const everything = p.kind === 'user' && p.superuser;
  const rows = await db.execute<{ full: string }>(sql`
    select ${full} as full from repositories r join namespaces n on n.id = r.namespace_id
    where (${opts.last ?? null}::text is null or ${full} collate "C" > ${opts.last ?? ''})
      and (
        ${everything}
        or r.visibility = 'public'
        or (n.kind = 'user' and n.name = ${username})
        or exists (select 1 from namespace_members m where m.namespace_id = n.id and m.user_id = ${userId} and m.role = 'admin')
        or exists (select 1 from repository_permissions rp where rp.repository_id = r.id
                   and (rp.user_id = ${userId} or rp.robot_id = ${robotId}))
      )
    order by ${full} collate "C" limit ${opts.limit}`);
  return rows.map((r) => r.full);
}

export { ACTIONS_OF_ROLE };
