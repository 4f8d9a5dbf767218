// A namespace's own GC grace period (Quay's time machine per organization): how long its
// untagged manifests stay reachable by digest and its unreferenced blobs are kept. Null = the
// deployment's MERIDIAN_GC_GRACE. It also wins over a run's --grace: it is what the namespace's
// users were promised. A blob linked in several namespaces keeps the longest of their periods.
import { eq } from 'drizzle-orm';
import type { DbOrTx } from '../db/client.ts';
import { namespaces } from '../db/schema.ts';
import { GcError } from './operations.ts';

export interface NamespaceGrace {
  namespace: string;
  /** Null: the default (MERIDIAN_GC_GRACE). */
  graceSeconds: number | null;
}

export async function setNamespaceGrace(db: DbOrTx, namespace: string, graceSeconds: number | null): Promise<NamespaceGrace> {
  const rows = await db
    .update(namespaces)
    .set({ gcGraceSeconds: graceSeconds })
    .where(eq(namespaces.name, namespace))
    .returning({ namespace: namespaces.name, graceSeconds: namespaces.gcGraceSeconds });
  if (rows.length === 0) throw new GcError('not_found', `namespace ${namespace} does not exist`);
  return rows[0]!;
}

export async function namespaceGrace(db: DbOrTx, namespace: string): Promise<NamespaceGrace> {
  const [row] = await db.select({ namespace: namespaces.name, graceSeconds: namespaces.gcGraceSeconds }).from(namespaces).where(eq(namespaces.name, namespace));
  if (!row) throw new GcError('not_found', `namespace ${namespace} does not exist`);
  return row;
}
