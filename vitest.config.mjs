// Root vitest config: the SDK's end-to-end tests (real processes). The API server has its own.
import { defineConfig } from 'vitest/config'

export default defineConfig({
  test: {
    include: ['tests/**/*.test.{ts,mjs}'],
    exclude: ['**/node_modules/**', 'api-server/**', 'tests/bench/**'],
    testTimeout: 120_000,
    hookTimeout: 120_000,
    pool: 'forks',
    fileParallelism: false,
  },
})
