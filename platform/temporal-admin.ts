// What a namespace needs before any Meridian workflow can run in it: to exist, and to know
// Meridian's custom search attributes (a workflow upserting an unknown attribute fails its task,
// a schedule naming one cannot be created). Used by `meridian temporal setup` and by the tests'
// per-file namespaces. Where the connection may not register them (Temporal Cloud, a cluster
// whose operators keep that to themselves) it says exactly what to ask for.
import { setTimeout as sleep } from 'node:timers/promises';
import { type Connection, isGrpcServiceError } from '@temporalio/client';
import { SearchAttributeType } from '@temporalio/common';
import type { SearchAttributeKey } from '@temporalio/common/lib/search-attributes.js';
import { msToTs } from '@temporalio/common/lib/time.js';
import { SEARCH_ATTRIBUTES } from '../temporal.config.ts';

/** A setup step that cannot be done with this connection; the message says what to do instead. */
export class TemporalSetupError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'TemporalSetupError';
  }
}

// gRPC status codes.
const NOT_FOUND = 5;
const ALREADY_EXISTS = 6;
const PERMISSION_DENIED = 7;
const UNIMPLEMENTED = 12;
const UNAVAILABLE = 14;

function code(e: unknown): number | undefined {
  return isGrpcServiceError(e) ? e.code : undefined;
}

/** temporal.api.enums.v1.IndexedValueType */
const INDEXED_VALUE_TYPE: Record<SearchAttributeType, number> = {
  [SearchAttributeType.TEXT]: 1,
  [SearchAttributeType.KEYWORD]: 2,
  [SearchAttributeType.INT]: 3,
  [SearchAttributeType.DOUBLE]: 4,
  [SearchAttributeType.BOOL]: 5,
  [SearchAttributeType.DATETIME]: 6,
  [SearchAttributeType.KEYWORD_LIST]: 7,
};
const TYPE_NAME: Record<number, string> = { 1: 'Text', 2: 'Keyword', 3: 'Int', 4: 'Double', 5: 'Bool', 6: 'Datetime', 7: 'KeywordList' };

/** Custom attributes of each type a namespace on SQL visibility (PostgreSQL, MySQL, SQLite) can
 * hold: the fixed columns of Temporal's visibility schema (v1.20+). Elasticsearch and Temporal
 * Cloud allow more. */
export const SQL_VISIBILITY_SLOTS: Record<SearchAttributeType, number> = {
  [SearchAttributeType.TEXT]: 3,
  [SearchAttributeType.KEYWORD]: 10,
  [SearchAttributeType.INT]: 3,
  [SearchAttributeType.DOUBLE]: 3,
  [SearchAttributeType.BOOL]: 3,
  [SearchAttributeType.DATETIME]: 3,
  [SearchAttributeType.KEYWORD_LIST]: 3,
};

export const MERIDIAN_SEARCH_ATTRIBUTES: SearchAttributeKey<SearchAttributeType>[] = Object.values(SEARCH_ATTRIBUTES);

export type NamespaceOutcome = 'exists' | 'registered';

/** Registers the namespace unless it exists. Retention applies only to a new namespace. */
export async function ensureNamespace(connection: Connection, namespace: string, retentionDays: number): Promise<NamespaceOutcome> {
  try {
    await connection.workflowService.describeNamespace({ namespace });
    return 'exists';
  } catch (e) {
    if (code(e) !== NOT_FOUND) throw e;
  }
  try {
    await connection.workflowService.registerNamespace({
      namespace,
      description: 'Meridian registry: replication, mirroring, maintenance',
      workflowExecutionRetentionPeriod: msToTs(`${retentionDays} days`),
    });
    return 'registered';
  } catch (e) {
    if (code(e) === ALREADY_EXISTS) return 'exists';
    if (code(e) === PERMISSION_DENIED || code(e) === UNIMPLEMENTED) {
      throw new TemporalSetupError(
        `namespace "${namespace}" does not exist and this connection may not register it (${(e as Error).message}); ` +
          `create it (Temporal Cloud: in the Cloud UI or with tcld) and run setup again`,
      );
    }
    throw e;
  }
}

export interface SearchAttributeOutcome {
  added: string[];
  present: string[];
}

/** Adds Meridian's search attributes the namespace lacks; fails on one registered with another type. */
export async function ensureSearchAttributes(
  connection: Connection,
  namespace: string,
  wanted: SearchAttributeKey<SearchAttributeType>[] = MERIDIAN_SEARCH_ATTRIBUTES,
): Promise<SearchAttributeOutcome> {
  // A namespace registered a moment ago may not have reached every frontend's cache yet.
  const existing = await retrying(async () => (await connection.operatorService.listSearchAttributes({ namespace })).customAttributes ?? {});
  const missing: Record<string, number> = {};
  const present: string[] = [];
  for (const k of wanted) {
    const want = INDEXED_VALUE_TYPE[k.type];
    const have = existing[k.name];
    if (have === undefined) missing[k.name] = want;
    else if (have !== want) {
      throw new TemporalSetupError(
        `search attribute ${k.name} is registered in namespace "${namespace}" as ${TYPE_NAME[have] ?? have}, Meridian needs ${TYPE_NAME[want]}; ` +
          `remove it (temporal operator search-attribute remove --name ${k.name}) and run setup again`,
      );
    } else present.push(k.name);
  }
  const added = Object.keys(missing);
  if (added.length === 0) return { added, present };
  try {
    await retrying(() => connection.operatorService.addSearchAttributes({ namespace, searchAttributes: missing }));
  } catch (e) {
    const list = added.map((n) => `${n}=${TYPE_NAME[missing[n]!]}`).join(' ');
    if (code(e) === PERMISSION_DENIED || code(e) === UNIMPLEMENTED) {
      throw new TemporalSetupError(`this connection may not add search attributes to "${namespace}" (${(e as Error).message}); add ${list} and run setup again`);
    }
    // SQL visibility has a fixed number of columns per type.
    if (/too many|limit|exceed/i.test((e as Error).message)) {
      throw new TemporalSetupError(`namespace "${namespace}" has no room for ${list}: ${(e as Error).message}`);
    }
    throw e;
  }
  return { added, present };
}

/** Waits until workflows can be listed by every Meridian search attribute in the namespace: the
 * frontends' namespace and search-attribute caches have caught up with a registration. */
export async function waitForNamespace(
  connection: Connection,
  namespace: string,
  wanted: SearchAttributeKey<SearchAttributeType>[] = MERIDIAN_SEARCH_ATTRIBUTES,
  timeoutMs = 60_000,
): Promise<void> {
  const query = wanted.map((k) => `${k.name} IS NOT NULL`).join(' OR ');
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      await connection.workflowService.countWorkflowExecutions({ namespace, query });
      return;
    } catch (e) {
      if (Date.now() > deadline) {
        throw new TemporalSetupError(`namespace "${namespace}" is not usable after ${timeoutMs / 1000}s: ${(e as Error).message}`);
      }
      await sleep(250);
    }
  }
}

/** Retries NOT_FOUND and UNAVAILABLE for a while: both are what a just-registered namespace or a
 * frontend still starting answers. */
async function retrying<T>(fn: () => Promise<T>, timeoutMs = 30_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      return await fn();
    } catch (e) {
      const c = code(e);
      if ((c !== NOT_FOUND && c !== UNAVAILABLE) || Date.now() > deadline) throw e;
      await sleep(250);
    }
  }
}
