// The connection to Temporal, built from one set of settings (config.ts `TemporalSettings`) for
// every client: the API and the outbox relay (a lazy @temporalio/client Connection), each worker
// (a NativeConnection), the CLI's `temporal setup`, the tests.
import { Client, Connection, type ConnectionOptions, type TLSConfig } from '@temporalio/client';
import type { TemporalSettings } from '../config.ts';

export interface TemporalHandle {
  client: Client;
  connection: Connection;
  close(): Promise<void>;
}

/** What both connection kinds take: address, TLS (CA, client pair, server name), API key. */
export interface TemporalConnectOptions {
  address: string;
  tls?: TLSConfig | boolean;
  apiKey?: string;
}

export function temporalConnectOptions(t: TemporalSettings): TemporalConnectOptions {
  const tls: TLSConfig | undefined = t.tls
    ? {
        ...(t.tls.serverCa ? { serverRootCACertificate: t.tls.serverCa } : {}),
        ...(t.tls.clientCert && t.tls.clientKey ? { clientCertPair: { crt: t.tls.clientCert, key: t.tls.clientKey } } : {}),
        ...(t.tls.serverName ? { serverNameOverride: t.tls.serverName } : {}),
      }
    : undefined;
  return {
    address: t.address,
    // Explicitly off without TLS settings: the SDK would otherwise turn TLS on for an API key.
    tls: tls ?? false,
    ...(t.apiKey ? { apiKey: t.apiKey } : {}),
  };
}

/** A lazily connected client: the API starts and serves pushes while Temporal is down; calls
 * fail until it is back and the outbox keeps what must reach it. */
export function connectTemporal(cfg: { temporal: TemporalSettings }): TemporalHandle {
  const options: ConnectionOptions = { ...temporalConnectOptions(cfg.temporal), connectTimeout: 2000 };
  const connection = Connection.lazy(options);
  const client = new Client({ connection, namespace: cfg.temporal.namespace });
  return { client, connection, close: () => connection.close() };
}
