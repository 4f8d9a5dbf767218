// Helpers shared by the mirror tests and the mirror benchmark: a namespace with a robot and a
// repository, a mirror config pointed at an upstream, waiting for runs.
import { randomBytes } from 'node:crypto';
import { desc, eq } from 'drizzle-orm';
import { createRobot, createUser, namespaceByName } from '../../auth/accounts.ts';
import { mirrorConfigs, mirrorRuns } from '../../db/schema.ts';
import { createMirrorConfig, formatQuayDate, type MirrorConfigRow, type MirrorRunRow } from '../../mirror/config.ts';
import type { Services } from '../../platform/services.ts';
import { listTags, manifestByTag } from '../../registry/manifests.ts';
import { createRepository, type Repository } from '../../registry/repositories.ts';

export interface MirrorFixture {
  namespace: string;
  robot: string;
  robotToken: string;
  repo: Repository;
}

/** A fresh user namespace with a robot `<ns>+mirror` and an empty repository `<ns>/<name>`. */
export async function mirrorFixture(s: Services, name = 'mirrored'): Promise<MirrorFixture> {
  const namespace = `mirror-${randomBytes(4).toString('hex')}`;
  await s.db.transaction((tx) => createUser(tx, { username: namespace, password: `pw-${randomBytes(8).toString('hex')}` }));
  const ns = (await namespaceByName(s.db, namespace))!;
  const robot = await s.db.transaction((tx) => createRobot(tx, { namespace: ns, shortName: 'mirror' }));
  const repo = await createRepository(s.db, { fullName: `${namespace}/${name}` });
  return { namespace, robot: robot.name, robotToken: robot.token, repo };
}

export function mirrorBody(f: MirrorFixture, upstreamRef: string, extra: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    external_reference: upstreamRef,
    sync_interval: 3600,
    // In the past: the grid is aligned, and nothing runs until the interval comes round or sync-now.
    sync_start_date: formatQuayDate(new Date(Date.now() - 60_000)),
    root_rule: { rule_kind: 'tag_glob_csv', rule_value: ['*'] },
    robot_username: f.robot,
    external_registry_config: { verify_tls: false },
    ...extra,
  };
}

export async function createMirror(s: Services, f: MirrorFixture, body: Record<string, unknown>): Promise<MirrorConfigRow> {
  const fresh = { ...f.repo, state: 'mirror' as const };
  return createMirrorConfig(s, fresh, body);
}

export async function mirrorConfigOf(s: Services, repositoryId: number): Promise<MirrorConfigRow> {
  const [row] = await s.db.select().from(mirrorConfigs).where(eq(mirrorConfigs.repositoryId, repositoryId));
  if (!row) throw new Error('no mirror config');
  return row;
}

export async function runsOf(s: Services, configId: number): Promise<MirrorRunRow[]> {
  return s.db.select().from(mirrorRuns).where(eq(mirrorRuns.configId, configId)).orderBy(desc(mirrorRuns.id));
}

export async function waitFor<T>(what: string, fn: () => Promise<T | undefined | false>, timeoutMs = 90_000, intervalMs = 250): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const v = await fn();
      if (v !== undefined && v !== false) return v as T;
    } catch (e) {
      last = e;
    }
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}${last ? `: ${(last as Error).message}` : ''}`);
    await new Promise((r) => setTimeout(r, intervalMs));
  }
}

/** Waits until `count` runs of the config have finished; returns the newest. */
export async function waitForRuns(s: Services, configId: number, count: number, timeoutMs = 120_000): Promise<MirrorRunRow> {
  return waitFor(
    `${count} finished mirror run(s)`,
    async () => {
      const runs = await runsOf(s, configId);
      const finished = runs.filter((r) => r.finishedAt !== null);
      return finished.length >= count && runs[0]!.finishedAt !== null ? runs[0] : undefined;
    },
    timeoutMs,
  );
}

/** tag → manifest digest of the local repository. */
export async function localTags(s: Services, repositoryId: number): Promise<Record<string, string>> {
  const names = await listTags(s.db, repositoryId, { limit: 10_000 });
  const out: Record<string, string> = {};
  for (const n of names) out[n] = (await manifestByTag(s.db, repositoryId, n))!.digest;
  return out;
}
