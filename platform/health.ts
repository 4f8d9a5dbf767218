// Health of this process's dependencies (/health/instance) and of the whole system including
// every storage location (/health/endtoend, what a global load balancer should watch).
import { randomUUID } from 'node:crypto';
import type { StorageDriver } from '../storage/driver.ts';
import { healthProbeKey } from '../storage/paths.ts';
import type { Services } from './services.ts';

export interface CheckResult {
  name: string;
  kind: 'database' | 'redis' | 'temporal' | 'storage';
  ok: boolean;
  latencyMs: number;
  error?: string;
}

export interface HealthReport {
  ok: boolean;
  checks: CheckResult[];
}

const CHECK_TIMEOUT_MS = 3000;

async function timed(name: string, kind: CheckResult['kind'], fn: () => Promise<unknown>): Promise<CheckResult> {
  const start = performance.now();
  let timer: NodeJS.Timeout | undefined;
  try {
    await Promise.race([
      fn(),
      new Promise((_, reject) => {
        timer = setTimeout(() => reject(new Error(`timed out after ${CHECK_TIMEOUT_MS} ms`)), CHECK_TIMEOUT_MS);
      }),
    ]);
    return { name, kind, ok: true, latencyMs: Math.round(performance.now() - start) };
  } catch (e) {
    return { name, kind, ok: false, latencyMs: Math.round(performance.now() - start), error: e instanceof Error ? e.message : String(e) };
  } finally {
    clearTimeout(timer);
  }
}

export function instanceChecks(s: Services): Promise<CheckResult>[] {
  return [
    timed('database', 'database', () => s.sql`select 1`),
    timed('redis', 'redis', () => s.redis.ping()),
    timed('temporal', 'temporal', async () => {
      await s.temporal.connection.ensureConnected();
      await s.temporal.connection.workflowService.getSystemInfo({});
    }),
  ];
}

/** A small write, read back and delete in one location. */
export async function probeLocation(driver: StorageDriver, prefix: string, instance: string): Promise<void> {
  const key = healthProbeKey(prefix, `${instance}-${randomUUID()}`);
  const body = Buffer.from(`meridian health probe ${new Date().toISOString()}`);
  await driver.write(key, body);
  try {
    const r = await driver.read(key);
    const chunks: Buffer[] = [];
    for await (const c of r.body) chunks.push(c as Buffer);
    if (!Buffer.concat(chunks).equals(body)) throw new Error('read back different bytes than written');
  } finally {
    await driver.delete(key);
  }
}

export async function instanceHealth(s: Services): Promise<HealthReport> {
  const checks = await Promise.all(instanceChecks(s));
  return { ok: checks.every((c) => c.ok), checks };
}

export async function endToEndHealth(s: Services): Promise<HealthReport> {
  const storage = (async () => {
    await s.locations.refresh();
    return Promise.all(
      s.locations.all().map((l) => timed(l.name, 'storage', () => probeLocation(l.driver, l.pathPrefix, s.config.instanceName))),
    );
  })().catch((e: unknown) => [
    { name: 'locations', kind: 'storage' as const, ok: false, latencyMs: 0, error: e instanceof Error ? e.message : String(e) },
  ]);
  const [inst, stor] = await Promise.all([Promise.all(instanceChecks(s)), storage]);
  const checks = [...inst, ...stor];
  return { ok: checks.every((c) => c.ok), checks };
}
