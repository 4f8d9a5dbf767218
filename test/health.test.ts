import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestApi, stackControl } from './support/harness.ts';

type Report = { status: string; failing: string[]; checks: { name: string; ok: boolean; kind: string }[] };

describe('health endpoints', () => {
  let api: Awaited<ReturnType<typeof startTestApi>>;
  beforeAll(async () => {
    api = await startTestApi();
  });
  afterAll(async () => {
    await stackControl.start('s3-eu-west');
    await api?.close();
  });

  async function get(path: string): Promise<{ status: number; body: Report }> {
    const r = await fetch(`${api.url}${path}`);
    return { status: r.status, body: (await r.json()) as Report };
  }

  it('reports every dependency healthy', async () => {
    const inst = await get('/health/instance');
    expect(inst.status).toBe(200);
    expect(inst.body.checks.map((c) => c.name).sort()).toEqual(['database', 'redis', 'temporal']);
    const e2e = await get('/health/endtoend');
    expect(e2e.status).toBe(200);
    expect(e2e.body.checks.filter((c) => c.kind === 'storage').map((c) => c.name)).toEqual(['us-east', 'eu-west', 'ap-south']);
    expect(e2e.body.checks.every((c) => c.ok)).toBe(true);
  });

  it('answers /v2/ with the distribution API version header', async () => {
    const r = await fetch(`${api.url}/v2/`);
    expect(r.headers.get('docker-distribution-api-version')).toBe('registry/2.0');
  });

  it('turns endtoend to 503 naming a stopped region, while the instance stays healthy', async () => {
    await stackControl.stop('s3-eu-west');
    const e2e = await get('/health/endtoend');
    expect(e2e.status).toBe(503);
    expect(e2e.body.failing).toEqual(['eu-west']);
    expect((await get('/health/instance')).status).toBe(200);
    await stackControl.start('s3-eu-west');
    expect((await get('/health/endtoend')).status).toBe(200);
  });
});
