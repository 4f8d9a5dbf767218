// Every workflow Meridian runs. This file and everything it imports is bundled into the
// deterministic workflow sandbox: no Node modules, and activities by type only (see eslint.config.js).
export * from './replication.ts';
export * from './backfill.ts';
export * from './remove-location.ts';
export * from './maintenance.ts';
export * from './gc.ts';
export * from './scrub.ts';
export * from './orphans.ts';
export * from './mirror.ts';

// Compiles only while every workflow type of the contract is exported here, under its name and
// with its declared signature.
import type { ImplementsContract } from '../contract/index.ts';
import type * as self from './index.ts';
export type Implemented = ImplementsContract<typeof self>;
