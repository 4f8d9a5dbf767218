import { defineConfig } from 'vitest/config';

// `npm run test:regions`: the multi-region topology (devstack/regions.ts) and its fault tests.
// Each file starts its own topology — network namespaces, so it runs as root — with its own
// PostgreSQL, Redis and Temporal; none of test/support/global-setup.ts's shared stack.
export default defineConfig({
  test: {
    include: ['test/regions-topology*.test.ts'],
    fileParallelism: false,
    pool: 'forks',
    testTimeout: 420_000,
    hookTimeout: 480_000,
    reporters: ['default'],
    env: { AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED: 'true' },
  },
});
