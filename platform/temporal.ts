import { Client, Connection } from '@temporalio/client';
import { temporalConnection, type TemporalConnectionConfig } from '../temporal.config.ts';

export interface TemporalHandle {
  client: Client;
  connection: Connection;
  close(): Promise<void>;
}

/** A lazily connected client: the API starts and serves pushes while Temporal is down; calls
 * fail until it is back and the outbox keeps what must reach it. */
export function connectTemporal(cfg: { temporal: TemporalConnectionConfig }): TemporalHandle {
  const { address, namespace } = temporalConnection(cfg);
  const connection = Connection.lazy({ address, connectTimeout: 2000 });
  const client = new Client({ connection, namespace });
  return { client, connection, close: () => connection.close() };
}
