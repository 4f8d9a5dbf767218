// Per-namespace replication: a namespace may name the locations its blobs go to instead of the
// default set (Quay offers this only through support). Existing blobs follow on the next backfill.
import { eq } from 'drizzle-orm';
import { namespaces } from '../db/schema.ts';
import type { Services } from '../platform/services.ts';
import { OperationError } from './operations.ts';

export async function setNamespaceReplication(s: Services, namespace: string, locations: string[] | null): Promise<{ namespace: string; locations: string[] | null }> {
  if (locations !== null) {
    if (locations.length === 0) throw new OperationError('invalid', 'locations: give at least one location, or null for the defaults');
    await s.locations.refresh();
    const unknown = locations.filter((n) => !s.locations.byName(n));
    if (unknown.length > 0) throw new OperationError('invalid', `unknown location ${unknown.map((n) => `"${n}"`).join(', ')}`);
  }
  const rows = await s.db
    .update(namespaces)
    .set({ replicationLocations: locations === null ? null : [...new Set(locations)] })
    .where(eq(namespaces.name, namespace))
    .returning({ name: namespaces.name, locations: namespaces.replicationLocations });
  if (rows.length === 0) throw new OperationError('not_found', `namespace ${namespace} does not exist`);
  return { namespace: rows[0]!.name, locations: rows[0]!.locations };
}

export async function namespaceReplication(s: Services, namespace: string): Promise<{ namespace: string; locations: string[] | null }> {
  const [row] = await s.db.select({ name: namespaces.name, locations: namespaces.replicationLocations }).from(namespaces).where(eq(namespaces.name, namespace));
  if (!row) throw new OperationError('not_found', `namespace ${namespace} does not exist`);
  return { namespace: row.name, locations: row.locations };
}
