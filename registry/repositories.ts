// Repositories: looked up by their full path (`namespace/name`), created explicitly through the
// management API or implicitly by a push from someone allowed to create in the namespace.
import { and, eq } from 'drizzle-orm';
import type { DbOrTx } from '../db/client.ts';
import { namespaces, repositories } from '../db/schema.ts';
import { DomainError } from '../platform/errors.ts';
import { parseRepositoryPath } from './names.ts';

export type RepositoryRow = typeof repositories.$inferSelect;
export type Repository = RepositoryRow & { namespaceName: string; fullName: string };

export class RepositoryError extends DomainError {}

export async function findRepository(db: DbOrTx, fullName: string): Promise<Repository | undefined> {
  const path = parseRepositoryPath(fullName);
  if (!path) return undefined;
  const [row] = await db
    .select({ repo: repositories, namespaceName: namespaces.name })
    .from(repositories)
    .innerJoin(namespaces, eq(repositories.namespaceId, namespaces.id))
    .where(and(eq(namespaces.name, path.namespace), eq(repositories.name, path.name)));
  return row ? { ...row.repo, namespaceName: row.namespaceName, fullName } : undefined;
}

export async function findRepositoryById(db: DbOrTx, id: number): Promise<Repository | undefined> {
  const [row] = await db
    .select({ repo: repositories, namespaceName: namespaces.name })
    .from(repositories)
    .innerJoin(namespaces, eq(repositories.namespaceId, namespaces.id))
    .where(eq(repositories.id, id));
  return row ? { ...row.repo, namespaceName: row.namespaceName, fullName: `${row.namespaceName}/${row.repo.name}` } : undefined;
}

export interface CreateRepositoryInput {
  fullName: string;
  visibility?: 'public' | 'private';
  description?: string;
  state?: 'normal' | 'mirror';
}

/** Creates the repository, or returns the existing one when `ifExists` is 'return'. The
 * namespace must exist. */
export async function createRepository(
  db: DbOrTx,
  input: CreateRepositoryInput,
  ifExists: 'return' | 'error' = 'error',
): Promise<Repository> {
  const path = parseRepositoryPath(input.fullName);
  if (!path) throw new RepositoryError('invalid', `"${input.fullName}" is not a valid repository name (namespace/name, lowercase)`);
  const [ns] = await db.select().from(namespaces).where(eq(namespaces.name, path.namespace));
  if (!ns) throw new RepositoryError('not_found', `namespace "${path.namespace}" does not exist`);
  const [created] = await db
    .insert(repositories)
    .values({
      namespaceId: ns.id,
      name: path.name,
      visibility: input.visibility ?? 'private',
      description: input.description ?? '',
      state: input.state ?? 'normal',
    })
    .onConflictDoNothing()
    .returning();
  if (created) return { ...created, namespaceName: ns.name, fullName: input.fullName };
  if (ifExists === 'error') throw new RepositoryError('conflict', `repository "${input.fullName}" already exists`);
  return (await findRepository(db, input.fullName))!;
}

export async function deleteRepository(db: DbOrTx, repo: Repository): Promise<void> {
  await db.delete(repositories).where(eq(repositories.id, repo.id));
}

export type RepositoryState = 'normal' | 'mirror' | 'readonly';

export async function setRepositoryState(db: DbOrTx, repo: Repository, state: RepositoryState): Promise<void> {
  await db.update(repositories).set({ state }).where(eq(repositories.id, repo.id));
}

export async function setRepositoryVisibility(db: DbOrTx, repo: Repository, visibility: 'public' | 'private'): Promise<void> {
  await db.update(repositories).set({ visibility }).where(eq(repositories.id, repo.id));
}
