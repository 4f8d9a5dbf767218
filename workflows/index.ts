// Every workflow Meridian runs. This file and everything it imports is bundled into the
// deterministic workflow sandbox: no Node modules, and activities by type only (see eslint.config.js).
export * from './replication.ts';
export * from './backfill.ts';
export * from './remove-location.ts';
export * from './maintenance.ts';
export * from './mirror.ts';
