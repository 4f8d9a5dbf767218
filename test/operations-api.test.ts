// Geo-replication operations through the API and the CLI: adding a location (probed, offered a
// backfill), removing one, placements, the summary, per-namespace policies, secrets rotation.
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import path from 'node:path';
import { eq } from 'drizzle-orm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createUser } from '../auth/accounts.ts';
import { storageLocations } from '../db/schema.ts';
import { PROJECT_ROOT } from '../devstack/tools.ts';
import { SecretBox } from '../security/secretbox.ts';
import { sealContext } from '../storage/locations.ts';
import type { RunningWorkers } from '../workers/main.ts';
import { startExtraRegion, type ExtraRegion } from './support/extra-region.ts';
import { basic, createTestUser, startTestApi, startTestWorkers } from './support/harness.ts';
import { OciClient } from './support/oci-client.ts';

describe('replication operations API and CLI', () => {
  let api: Awaited<ReturnType<typeof startTestApi>>;
  let workers: RunningWorkers;
  let extra: ExtraRegion;
  let root: string;
  const rootName = `root-${randomBytes(3).toString('hex')}`;

  beforeAll(async () => {
    api = await startTestApi({ MERIDIAN_SUPERUSERS: rootName });
    await api.services.db.transaction((tx) => createUser(tx, { username: rootName, password: 'root-password' }));
    root = basic(rootName, 'root-password');
    extra = await startExtraRegion('mx-central');
    workers = await startTestWorkers({ control: true, mirror: false, copyLocations: ['us-east', 'eu-west', 'ap-south', 'mx-central'] });
  });
  afterAll(async () => {
    await workers?.stop();
    const [loc] = await api.services.db.select().from(storageLocations).where(eq(storageLocations.name, 'mx-central'));
    if (loc) await api.services.db.delete(storageLocations).where(eq(storageLocations.id, loc.id));
    await extra?.stop();
    await api?.close();
  });

  async function call(method: string, p: string, auth: string | undefined, body?: unknown) {
    const r = await fetch(`${api.url}/api/v1${p}`, { method, headers: { ...(auth ? { Authorization: auth } : {}), 'Content-Type': 'application/json' }, body: body === undefined ? undefined : JSON.stringify(body) });
    const text = await r.text();
    return { status: r.status, json: text ? JSON.parse(text) : undefined, text };
  }

  it('lists locations with their health and never their credentials; operators only', async () => {
    const r = await call('GET', '/locations', root);
    expect(r.status).toBe(200);
    const names = r.json.locations.map((l: { name: string }) => l.name);
    expect(names).toEqual(expect.arrayContaining(['us-east', 'eu-west', 'ap-south']));
    expect(r.json.locations[0]).toMatchObject({ region: expect.any(String), endpoint: expect.stringMatching(/^http/), bucket: 'meridian', state: 'active', health: { healthy: true } });
    expect(r.text).not.toContain(api.config.devS3.secretAccessKey);
    expect(r.text).not.toMatch(/accessKey|secretKey|credentials/i);
    const user = await createTestUser('notops');
    expect((await call('GET', '/locations', user.authorization)).status).toBe(403);
    expect((await call('GET', '/replication/summary', undefined)).status).toBe(401);
  });

  it('refuses a location it cannot write to, and adds one it can, with a backfill hint', async () => {
    const bad = await call('POST', '/locations', root, { name: 'mx-central', region: 'mx', endpoint: extra.endpoint, bucket: extra.bucket, credentials: { access_key: 'wrong', secret_key: 'wrong' } });
    expect(bad.status).toBe(503);
    expect(bad.json.detail).toMatch(/cannot use the location/);
    expect((await call('POST', '/locations', root, { name: 'Bad Name', region: 'x', endpoint: extra.endpoint, bucket: 'b1b', credentials: { ref: 'env:X' } })).status).toBe(400);
    const ok = await call('POST', '/locations', root, {
      name: 'mx-central',
      region: 'mx',
      endpoint: extra.endpoint,
      bucket: extra.bucket,
      replicate_by_default: true,
      credentials: { access_key: extra.credentials.accessKeyId, secret_key: extra.credentials.secretAccessKey },
    });
    expect(ok.status).toBe(201);
    expect(ok.json.location).toMatchObject({ name: 'mx-central', region: 'mx', state: 'active' });
    expect(ok.json.hint).toMatch(/backfill/);
    // Stored credentials are encrypted at rest.
    const [row] = await api.services.db.select().from(storageLocations).where(eq(storageLocations.name, 'mx-central'));
    expect(row!.credentialsRef).toBe('stored');
    expect(row!.secretKeyEnc!.includes(Buffer.from(extra.credentials.secretAccessKey))).toBe(false);
    expect((await call('POST', '/locations', root, { name: 'mx-central', region: 'mx', endpoint: extra.endpoint, bucket: extra.bucket, credentials: { access_key: extra.credentials.accessKeyId, secret_key: extra.credentials.secretAccessKey } })).status).toBe(409);
  });

  it('backfills through the API, shows placements and the summary', async () => {
    const user = await createTestUser('opsdata');
    const digest = await new OciClient({ baseUrl: api.url, authorization: user.authorization }).pushBlob(`${user.username}/d`, randomBytes(3000));
    const started = await call('POST', '/replication/backfill', root, { location: 'mx-central' });
    expect(started.status).toBe(202);
    expect(started.json.workflowId).toBe('backfill/mx-central');
    await expect.poll(async () => (await call('GET', '/replication/backfill?location=mx-central', root)).json.status, { timeout: 60_000 }).toBe('COMPLETED');
    const progress = (await call('GET', '/replication/backfill?location=mx-central', root)).json;
    expect(progress.progress).toMatchObject({ done: true, failed: 0 });
    const placements = (await call('GET', `/blobs/${digest}/placements`, root)).json;
    expect(placements.placements.map((p: { location: string }) => p.location)).toContain('mx-central');
    expect((await call('GET', '/blobs/sha256:zz/placements', root)).status).toBe(400);
    const summary = (await call('GET', '/replication/summary', root)).json.locations;
    const mx = summary.find((l: { location: string }) => l.location === 'mx-central');
    expect(mx).toMatchObject({ blobsPending: 0, healthy: true });
    expect(mx.blobsHeld).toBeGreaterThan(0);
  });

  it('sets a namespace replication policy (namespace admins), validated against the locations', async () => {
    const owner = await createTestUser('policyowner');
    const other = await createTestUser('stranger');
    const path_ = `/namespace/${owner.username}/replication`;
    expect((await call('PUT', path_, owner.authorization, { locations: ['us-east', 'mx-central'] })).json).toEqual({ namespace: owner.username, locations: ['us-east', 'mx-central'] });
    expect((await call('PUT', path_, owner.authorization, { locations: ['nowhere'] })).status).toBe(400);
    expect((await call('PUT', path_, other.authorization, { locations: null })).status).toBe(403);
    expect((await call('PUT', path_, owner.authorization, { locations: null })).json.locations).toBeNull();
  });

  it('rotates secrets at rest to a new key, and back', async () => {
    const current = api.config.secretKey.toString('base64');
    const fresh = randomBytes(32).toString('base64');
    const rotate = async (key: string, previous: string) => {
      const other = await startTestApi({ MERIDIAN_SUPERUSERS: rootName, MERIDIAN_SECRET_KEY: key, MERIDIAN_SECRET_KEY_PREVIOUS: previous });
      try {
        const r = await fetch(`${other.url}/api/v1/superuser/secrets/rotate`, { method: 'POST', headers: { Authorization: root } });
        expect(r.status).toBe(200);
        return (await r.json()) as { locationCredentials: number; failed: string[] };
      } finally {
        await other.close();
      }
    };
    const forward = await rotate(fresh, current);
    expect(forward.locationCredentials).toBeGreaterThanOrEqual(1);
    expect(forward.failed.filter((f) => f.includes('mx-central'))).toEqual([]);
    // Sealed with the new key alone now: the old key no longer opens the stored S3 keys.
    const [row] = await api.services.db.select().from(storageLocations).where(eq(storageLocations.name, 'mx-central'));
    expect(() => new SecretBox(api.config.secretKey).open(row!.secretKeyEnc!, sealContext('mx-central', 'secret'))).toThrow(/not configured/);
    expect(new SecretBox(Buffer.from(fresh, 'base64')).open(row!.secretKeyEnc!, sealContext('mx-central', 'secret'))).toBe(extra.credentials.secretAccessKey);
    // And back, so that this instance (still on the old key) can use the location again.
    expect((await rotate(current, fresh)).locationCredentials).toBeGreaterThanOrEqual(1);
    const unauthorised = await call('POST', '/superuser/secrets/rotate', (await createTestUser('nosecrets')).authorization);
    expect(unauthorised.status).toBe(403);
  });

  it('removes a location through the CLI with --yes, waiting for the workflow', async () => {
    const out = await new Promise<{ code: number | null; out: string; err: string }>((resolve) => {
      const child = spawn(path.join(PROJECT_ROOT, 'bin', 'meridian'), ['location', 'remove', 'mx-central', '--yes', '--purge'], {
        env: { ...process.env, MERIDIAN_URL: api.url, MERIDIAN_USERNAME: rootName, MERIDIAN_PASSWORD: 'root-password' },
      });
      let o = '';
      let e = '';
      child.stdout.on('data', (d: Buffer) => (o += d.toString()));
      child.stderr.on('data', (d: Buffer) => (e += d.toString()));
      child.on('exit', (code) => resolve({ code, out: o.trim(), err: e.trim() }));
    });
    expect(out.err).toBe('');
    expect(out.code).toBe(0);
    expect(out.out).toMatch(/^removal of mx-central started \(workflow remove-location\/mx-central\)\nremoved mx-central: \d+ blobs copied elsewhere first, \d+ placements deleted$/);
    expect(await api.services.db.select().from(storageLocations).where(eq(storageLocations.name, 'mx-central'))).toEqual([]);
    expect(await extra.driver.list('sha256/')).toEqual([]);
  });
});
