#!/usr/bin/env bash
# `npm test`: the whole suite against the Temporal dev server, then the Temporal-heavy tests
# (vitest.config.ts, REAL_SERVER_TESTS) against the real Temporal server. Arguments (test files,
# -t patterns) go to both runs; a file outside REAL_SERVER_TESTS is simply not run the second time.
set -euo pipefail
cd "$(dirname "$0")/.."
npx vitest run "$@"
MERIDIAN_TEST_TEMPORAL=server npx vitest run --passWithNoTests "$@"
