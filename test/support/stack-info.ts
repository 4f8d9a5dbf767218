export interface StackInfo {
  databaseUrl: string;
  redisUrl: string;
  redisKeyPrefix: string;
  temporalAddress: string;
  /** `dev` (the Temporal CLI's dev server) or `server` (the real one: PostgreSQL, mutual TLS),
   * chosen by MERIDIAN_TEST_TEMPORAL. */
  temporalKind: 'dev' | 'server';
  /** TEMPORAL_TLS_* a client of the test Temporal needs (none for the dev server). */
  temporalEnv: Record<string, string>;
  /** Each test file gets its own namespace (test/support/per-file.ts). */
  temporalNamespace: string;
  regions: { name: string; port: number }[];
  s3Credentials: { accessKeyId: string; secretAccessKey: string };
  /** MERIDIAN_SECRET_KEY and MERIDIAN_TOKEN_KEY of the test stack. */
  keys: Record<string, string>;
  dataDir: string;
  workflowBundlePath: string;
  controlUrl: string;
}
