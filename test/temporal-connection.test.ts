// Connection settings for any Temporal cluster (the `temporal` CLI's variables): TLS with a CA,
// a client certificate and a server name, an API key, the namespace; one-line errors for bad
// values; and the same settings reaching a real mutual-TLS frontend (the server test project).
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Connection } from '@temporalio/client';
import { NativeConnection } from '@temporalio/worker';
import { describe, expect, it } from 'vitest';
import { loadConfig as loadFullConfig } from '../config.ts';
import { DEV_TLS } from '../devstack/temporal-server.ts';
import { temporalConnectOptions } from '../platform/temporal.ts';
import { configErrorOf } from './support/entrypoints.ts';
import { stackInfo, testConfig } from './support/harness.ts';

/** Only the Temporal settings matter here; the keys are random. */
const loadConfig = (env: Record<string, string>) => loadFullConfig(env, { requireKeys: false });
const configError = (env: Record<string, string>) => configErrorOf(loadConfig, env);

describe('Temporal connection settings', () => {
  it('is plaintext to the dev server by default', () => {
    const t = loadConfig({}).temporal;
    expect(t).toEqual({ address: '127.0.0.1:7233', namespace: 'default' });
    expect(temporalConnectOptions(t)).toEqual({ address: '127.0.0.1:7233', tls: false });
  });

  it('reads mutual TLS from files, with a server name', () => {
    const t = loadConfig({
      TEMPORAL_ADDRESS: 'temporal.internal:7233',
      TEMPORAL_NAMESPACE: 'registry',
      TEMPORAL_TLS_SERVER_CA_CERT_PATH: DEV_TLS.ca,
      TEMPORAL_TLS_CLIENT_CERT_PATH: DEV_TLS.clientCert,
      TEMPORAL_TLS_CLIENT_KEY_PATH: DEV_TLS.clientKey,
      TEMPORAL_TLS_SERVER_NAME: 'frontend.temporal.internal',
    }).temporal;
    const o = temporalConnectOptions(t);
    expect(t.namespace).toBe('registry');
    expect(o.address).toBe('temporal.internal:7233');
    expect(o.tls).toMatchObject({ serverNameOverride: 'frontend.temporal.internal' });
    const tls = o.tls as { serverRootCACertificate: Buffer; clientCertPair: { crt: Buffer; key: Buffer } };
    expect(tls.serverRootCACertificate.toString()).toContain('BEGIN CERTIFICATE');
    expect(tls.clientCertPair.crt.toString()).toContain('BEGIN CERTIFICATE');
    expect(tls.clientCertPair.key.toString()).toContain('PRIVATE KEY');
    expect(o).not.toHaveProperty('apiKey');
  });

  it('takes PEM data inline (escaped newlines as Kubernetes secrets often have them)', () => {
    const pem = '-----BEGIN CERTIFICATE-----\\nMIIB\\n-----END CERTIFICATE-----\\n';
    const t = loadConfig({ TEMPORAL_TLS_SERVER_CA_CERT_DATA: pem }).temporal;
    expect(t.tls?.serverCa?.toString()).toBe('-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n');
  });

  it('with an API key (Temporal Cloud) turns TLS on with the system roots, unless TEMPORAL_TLS=false', () => {
    const cloud = temporalConnectOptions(
      loadConfig({ TEMPORAL_ADDRESS: 'eu-west-1.aws.api.temporal.io:7233', TEMPORAL_NAMESPACE: 'acme.a1b2c', TEMPORAL_API_KEY: 'key-123' }).temporal,
    );
    expect(cloud).toEqual({ address: 'eu-west-1.aws.api.temporal.io:7233', tls: {}, apiKey: 'key-123' });
    const plain = temporalConnectOptions(loadConfig({ TEMPORAL_API_KEY: 'key-123', TEMPORAL_TLS: 'false' }).temporal);
    expect(plain).toEqual({ address: '127.0.0.1:7233', tls: false, apiKey: 'key-123' });
    expect(temporalConnectOptions(loadConfig({ TEMPORAL_TLS: 'true' }).temporal).tls).toEqual({});
  });

  it('never prints an API key or key material in an error', () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'meridian-tls-'));
    const notPem = path.join(dir, 'key.txt');
    writeFileSync(notPem, 'super-secret-key-material');
    const e = configError({ TEMPORAL_TLS_CLIENT_CERT_PATH: DEV_TLS.clientCert, TEMPORAL_TLS_CLIENT_KEY_PATH: notPem, TEMPORAL_API_KEY: 'key-123' });
    expect(e.message).toBe('TEMPORAL_TLS_CLIENT_KEY_PATH: expected a PEM private key');
    expect(e.message).not.toContain('super-secret');
  });

  it.each([
    [{ TEMPORAL_TLS_SERVER_CA_CERT_PATH: '/nonexistent/ca.pem' }, 'TEMPORAL_TLS_SERVER_CA_CERT_PATH', /cannot read \/nonexistent\/ca.pem: ENOENT/],
    [{ TEMPORAL_TLS_SERVER_CA_CERT_PATH: DEV_TLS.ca, TEMPORAL_TLS_SERVER_CA_CERT_DATA: 'x' }, 'TEMPORAL_TLS_SERVER_CA_CERT_PATH', /not both/],
    [{ TEMPORAL_TLS_SERVER_CA_CERT_DATA: 'not a certificate' }, 'TEMPORAL_TLS_SERVER_CA_CERT_DATA', /expected a PEM certificate/],
    [{ TEMPORAL_TLS_CLIENT_CERT_PATH: DEV_TLS.clientCert }, 'TEMPORAL_TLS_CLIENT_KEY_PATH', /needs its key/],
    [{ TEMPORAL_TLS_CLIENT_KEY_PATH: DEV_TLS.clientKey }, 'TEMPORAL_TLS_CLIENT_CERT_PATH', /needs its key/],
    [{ TEMPORAL_TLS: 'false', TEMPORAL_TLS_SERVER_NAME: 'x' }, 'TEMPORAL_TLS', /is false but/],
    [{ TEMPORAL_TLS: 'perhaps' }, 'TEMPORAL_TLS', /true or false/],
    [{ MERIDIAN_WORKER_METRICS_ADDRESS: '9464' }, 'MERIDIAN_WORKER_METRICS_ADDRESS', /host:port/],
  ])('names the bad variable in %o', (env, variable, problem) => {
    const e = configError(env as Record<string, string>);
    expect(e.variable).toBe(variable);
    expect(e.message).toMatch(problem);
    expect(e.message).not.toContain('\n');
  });

  it('connects a client and a worker connection with these settings to the test server', async () => {
    const options = temporalConnectOptions(testConfig().temporal);
    if (stackInfo().temporalKind === 'server') {
      // The real server requires a client certificate: without one the handshake is refused.
      await expect(
        Connection.connect({ address: options.address, tls: { ...(options.tls as object), clientCertPair: undefined }, connectTimeout: 3000 }),
      ).rejects.toThrow();
    }
    const client = await Connection.connect(options);
    const native = await NativeConnection.connect(options);
    try {
      const info = await client.workflowService.getSystemInfo({});
      expect(info.capabilities).toBeTruthy();
      expect((await native.workflowService.getSystemInfo({})).capabilities).toBeTruthy();
    } finally {
      await client.close();
      await native.close();
    }
  });
});
