// Lint. The rule that matters most: workflow code runs in Temporal's deterministic sandbox, so
// files under workflows/ may import no Node module, no I/O library and activities only as types.
import { builtinModules } from 'node:module';
import tseslint from 'typescript-eslint';

const nodeModules = [...builtinModules, ...builtinModules.map((m) => `node:${m}`)];

export default tseslint.config(
  { ignores: ['node_modules/**', '.data/**', '.tools/**', 'dist/**', 'db/migrations/**'] },
  ...tseslint.configs.recommended,
  {
    rules: {
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_' }],
      '@typescript-eslint/consistent-type-imports': ['error', { fixStyle: 'inline-type-imports' }],
    },
  },
  {
    // Tests read loosely typed JSON answers.
    files: ['test/**/*.ts', 'bench/**/*.ts'],
    rules: { '@typescript-eslint/no-explicit-any': 'off' },
  },
  {
    files: ['workflows/**/*.ts'],
    rules: {
      '@typescript-eslint/no-restricted-imports': [
        'error',
        {
          paths: nodeModules.map((name) => ({ name, message: 'Workflows run in a deterministic sandbox: no Node modules.' })),
          patterns: [
            {
              group: ['**/activities', '**/activities/*', '**/activities/**'],
              allowTypeImports: true,
              message: 'Import activities as types only (import type * as activities) and call them through proxyActivities.',
            },
            {
              group: [
                '**/platform/**', '**/storage/**', '**/db/**', '**/api/**', '**/workers/**', '**/mirror/upstream*',
                'ioredis', 'postgres', 'drizzle-orm', 'drizzle-orm/*', '@aws-sdk/*', 'koa', '@koa/*', 'undici', 'pino',
                '@temporalio/client', '@temporalio/worker', '@temporalio/activity',
              ],
              message: 'Workflows must not do I/O; do it in an activity.',
            },
          ],
        },
      ],
      'no-restricted-globals': ['error', { name: 'process', message: 'No process in workflows: pass values as arguments.' }],
    },
  },
);
