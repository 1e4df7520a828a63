// The published types of @skytale/langchain and @skytale/mcp compile against a typical use.
import { describe, expect, it } from 'vitest'
import { spawnSync } from 'node:child_process'
import { join } from 'node:path'
// @ts-expect-error plain JS helper
import { REPO } from '../helpers/stack.mjs'

describe('integration package types', () => {
  it('tsc accepts tests/integrations/types/usage.ts', () => {
    const tsc = join(REPO, 'node_modules', 'typescript', 'bin', 'tsc')
    const r = spawnSync(process.execPath, [tsc, '-p', join(REPO, 'tests/integrations/types/tsconfig.json')], { encoding: 'utf8' })
    expect(`${r.stdout}${r.stderr}`).toBe('')
    expect(r.status).toBe(0)
  })
})
