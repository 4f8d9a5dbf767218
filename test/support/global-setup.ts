// Starts the real services every integration test talks to, once per `npm test`: a Temporal dev
// server (or, with MERIDIAN_TEST_TEMPORAL=server, the real Temporal server), three S3 servers (us-east, eu-west, ap-south), a throw-away PostgreSQL database and a
// private Redis key prefix; bundles the workflows once. Tests reach them through inject() and may
// stop/start a service through the small control server below (to simulate outages).
import { writeFileSync } from 'node:fs';
import { createServer } from 'node:http';
import path from 'node:path';
import type { TestProject } from 'vitest/node';
import { startEphemeralStack } from '../../devstack/ephemeral.ts';
import { freePort } from '../../devstack/ports.ts';
import type { LocalStack } from '../../devstack/stack.ts';
import { bundleWorkflows } from '../../workers/bundle.ts';
import type { StackInfo } from './stack-info.ts';

export default async function setup(project: TestProject) {
  const [eph, bundle] = await Promise.all([
    startEphemeralStack({
      name: 'test',
      registerLocations: false,
      keepData: !!process.env.MERIDIAN_KEEP_TEST_DATA,
      temporal: process.env.MERIDIAN_TEST_TEMPORAL === 'server' ? 'server' : 'dev',
    }),
    bundleWorkflows(),
  ]);
  const bundlePath = path.join(eph.dataDir, 'workflow-bundle.js');
  writeFileSync(bundlePath, bundle.code);
  const control = await startControlServer(eph.stack);
  const info: StackInfo = {
    databaseUrl: eph.databaseUrl,
    redisUrl: eph.redisUrl,
    redisKeyPrefix: eph.redisKeyPrefix,
    temporalAddress: eph.temporalAddress,
    temporalKind: eph.temporalKind,
    temporalEnv: eph.temporalEnv,
    temporalNamespace: 'default',
    regions: eph.regions,
    s3Credentials: eph.s3Credentials,
    keys: eph.keys,
    dataDir: eph.dataDir,
    workflowBundlePath: bundlePath,
    controlUrl: control.url,
  };
  project.provide('stack', info);
  return async () => {
    await control.close();
    await eph.destroy();
  };
}

/** POST /<service>/<stop|start|kill> where service is `temporal` or `s3-<region>`. */
async function startControlServer(stack: LocalStack): Promise<{ url: string; close: () => Promise<void> }> {
  const server = createServer(async (req, res) => {
    const m = /^\/([a-z0-9-]+)\/(stop|start|kill)$/.exec(req.url ?? '');
    const proc = m?.[1] === 'temporal' ? stack.temporal : stack.s3.get(m?.[1]?.replace(/^s3-/, '') ?? '');
    if (!m || !proc || req.method !== 'POST') {
      res.writeHead(404).end();
      return;
    }
    try {
      if (m[2] === 'stop') await proc.stop();
      else if (m[2] === 'kill') await proc.kill();
      else if (!proc.running) await proc.start();
      res.writeHead(204).end();
    } catch (e) {
      res.writeHead(500).end((e as Error).message);
    }
  });
  const port = await freePort();
  await new Promise<void>((r) => server.listen(port, '127.0.0.1', r));
  return { url: `http://127.0.0.1:${port}`, close: () => new Promise((r) => server.close(() => r())) };
}

declare module 'vitest' {
  export interface ProvidedContext {
    stack: StackInfo;
  }
}
