import { defineConfig } from 'vitest/config';

// `npm test` runs the suite against the Temporal dev server, then (MERIDIAN_TEST_TEMPORAL=server,
// scripts/test.sh) the tests that lean hardest on Temporal's behaviour again against the real
// server: PostgreSQL persistence and visibility, mutual TLS, its own scheduler and task matching.
const REAL_SERVER_TESTS = [
  'test/replication.test.ts',
  'test/outbox.test.ts',
  'test/mirror-schedule.test.ts',
  'test/replication-resume.test.ts',
  'test/temporal-setup.test.ts',
  'test/temporal-connection.test.ts',
];

export default defineConfig({
  test: {
    include: process.env.MERIDIAN_TEST_TEMPORAL === 'server' ? REAL_SERVER_TESTS : ['test/**/*.test.ts'],
    // Run by `npm run test:regions` (vitest.regions.config.ts): they need network namespaces.
    exclude: ['test/regions-topology*.test.ts', 'node_modules/**'],
    globalSetup: ['test/support/global-setup.ts'],
    setupFiles: ['test/support/per-file.ts'],
    // The integration tests share one local stack (Temporal, three S3 regions, a throw-away
    // database) and some stop parts of it on purpose, so test files run one at a time.
    fileParallelism: false,
    pool: 'forks',
    testTimeout: 120_000,
    hookTimeout: 180_000,
    reporters: ['default'],
    // A rejection postgres.js makes of its own promise when a backend dies mid-transaction (the
    // caller's query has already failed): every Meridian process lets these through
    // (platform/main.ts surviveDroppedDatabaseConnections), so the tests do too. Any other
    // unhandled error still fails the run.
    onUnhandledError: (e) => ((e as { code?: unknown }).code === 'CONNECTION_CLOSED' ? false : undefined),
    env: { AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED: 'true' },
  },
});
