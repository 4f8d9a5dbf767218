export interface StackInfo {
  databaseUrl: string;
  redisUrl: string;
  redisKeyPrefix: string;
  temporalAddress: string;
  /** Each test file gets its own namespace (test/support/per-file.ts). */
  temporalNamespace: string;
  regions: { name: string; port: number }[];
  s3Credentials: { accessKeyId: string; secretAccessKey: string };
  dataDir: string;
  workflowBundlePath: string;
  controlUrl: string;
}
