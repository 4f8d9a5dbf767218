// Database connections. One postgres.js pool per process; Drizzle on top for typed queries.
import { drizzle, type PostgresJsDatabase } from 'drizzle-orm/postgres-js';
import postgres from 'postgres';
import * as schema from './schema.ts';

export type Database = PostgresJsDatabase<typeof schema>;
/** A transaction handle: the same query API as Database. */
export type Tx = Parameters<Parameters<Database['transaction']>[0]>[0];
export type DbOrTx = Database | Tx;

export interface DbHandle {
  db: Database;
  sql: postgres.Sql;
  close(): Promise<void>;
}

export function connectDatabase(url: string, opts: { max?: number; applicationName?: string } = {}): DbHandle {
  const sql = postgres(url, {
    max: opts.max ?? 10,
    onnotice: () => {},
    connection: { application_name: opts.applicationName ?? 'meridian' },
    // bigint columns come back as numbers through Drizzle's mode: 'number'; sizes stay < 2^53.
  });
  const db = drizzle(sql, { schema });
  return { db, sql, close: () => sql.end({ timeout: 5 }) };
}

/** postgres.js's and the socket's codes for a database that could not be reached or dropped the
 * connection, and the SQLSTATEs of a server shutting down, starting up, refusing or out of
 * connections (classes 08 and 53, 57P01-57P04). */
const UNREACHABLE_CODES = new Set(['CONNECTION_CLOSED', 'CONNECTION_DESTROYED', 'CONNECTION_ENDED', 'CONNECT_TIMEOUT', 'ECONNREFUSED', 'ECONNRESET', 'EPIPE', 'ETIMEDOUT', 'EHOSTUNREACH', 'ENETUNREACH']);
const UNAVAILABLE_SQLSTATE = /^(08...|53...|57P0[1-4])$/;

/** The error means PostgreSQL is unavailable for now (restarting, unreachable, out of
 * connections), not that the request was wrong: answer 503 and let the client retry. A socket
 * code counts only on a query's error (inside Drizzle's DrizzleQueryError, or postgres.js's own
 * connection error, which names the server's address): at the top level an ECONNRESET is the
 * client going away. */
export function isDatabaseUnavailable(e: unknown): boolean {
  let cur: unknown = e;
  for (let depth = 0; cur && typeof cur === 'object' && depth < 5; depth++) {
    const { code, name } = cur as { code?: unknown; name?: unknown };
    if (typeof code === 'string') {
      if (name === 'PostgresError' && UNAVAILABLE_SQLSTATE.test(code)) return true;
      if (UNREACHABLE_CODES.has(code) && (depth > 0 || 'address' in cur)) return true;
    }
    cur = (cur as { cause?: unknown }).cause;
  }
  return false;
}
