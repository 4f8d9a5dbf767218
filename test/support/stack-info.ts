import type { EphemeralStack } from '../../devstack/ephemeral.ts';

/** What global setup hands every test file: the ephemeral stack's addresses (a plain, serialisable
 * subset of it: inject() copies values between processes) plus what the test run adds. */
export type StackInfo = Pick<
  EphemeralStack,
  'databaseUrl' | 'redisUrl' | 'redisKeyPrefix' | 'temporalAddress' | 'temporalKind' | 'temporalEnv' | 'regions' | 's3Credentials' | 'keys' | 'dataDir'
> & {
  /** Each test file gets its own namespace (test/support/per-file.ts). */
  temporalNamespace: string;
  workflowBundlePath: string;
  controlUrl: string;
};
