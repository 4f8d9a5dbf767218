// An extra S3 server (a new region) for tests that add and remove locations.
import { randomBytes } from 'node:crypto';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { freePort } from '../../devstack/ports.ts';
import type { ManagedProcess } from '../../devstack/process.ts';
import { s3Server } from '../../devstack/s3.ts';
import { S3Driver } from '../../storage/s3.ts';

export interface ExtraRegion {
  name: string;
  endpoint: string;
  bucket: string;
  credentials: { accessKeyId: string; secretAccessKey: string };
  driver: S3Driver;
  server: ManagedProcess;
  stop(): Promise<void>;
}

export async function startExtraRegion(name: string, bucket = 'extra'): Promise<ExtraRegion> {
  const port = await freePort();
  const dir = mkdtempSync(path.join(tmpdir(), `meridian-${name}-`));
  const credentials = { accessKeyId: `key-${name}`, secretAccessKey: randomBytes(12).toString('hex') };
  const server = s3Server({ region: name, port, dataDir: dir, logFile: path.join(dir, 'log'), ...credentials });
  await server.start();
  const endpoint = `http://127.0.0.1:${port}`;
  const driver = new S3Driver({ name, endpoint, region: 'us-east-1', bucket, ...credentials });
  await driver.ensureBucket();
  return {
    name,
    endpoint,
    bucket,
    credentials,
    driver,
    server,
    async stop() {
      driver.close();
      await server.stop();
    },
  };
}
