// `npm run demo` (node examples/demo.mjs): exits 0, shows every step, and its relay section
// holds ciphertext only.
import { describe, expect, it } from 'vitest'
import { spawn } from 'node:child_process'
import { join } from 'node:path'
// @ts-expect-error plain JS helper
import { REPO } from './helpers/stack.mjs'

describe('demo', () => {
  it('runs end to end, exits 0, and prints no plaintext in the relay section', async () => {
    const env: Record<string, string | undefined> = {}
    for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('SKYTALE_') || k === 'SKYTALE_RELAY_BIN') env[k] = v
    const { code, stdout, stderr } = await new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve) => {
      const child = spawn(process.execPath, [join(REPO, 'examples/demo.mjs')], { cwd: REPO, env, stdio: ['ignore', 'pipe', 'pipe'] })
      let stdout = ''
      let stderr = ''
      child.stdout.on('data', (d) => { stdout += d })
      child.stderr.on('data', (d) => { stderr += d })
      child.on('exit', (c) => resolve({ code: c, stdout, stderr }))
    })
    expect(code, stdout + stderr).toBe(0)
    expect(stdout).not.toContain('npm run build') // everything was built already
    for (const s of ['Alice creates demo/team/general', 'Alice invites Bob', 'Bob joins with the token', 'bob-agent received from alice-agent', 'alice-agent received from bob-agent']) {
      expect(stdout).toContain(s)
    }
    const plaintexts = [...stdout.matchAll(/sent \(seq \d+\): "([^"]+)"/g)].map((m) => m[1])
    expect(plaintexts).toHaveLength(3)
    const at = stdout.indexOf('What the relay stored')
    expect(at).toBeGreaterThan(0)
    const relaySection = stdout.slice(at)
    // One application row per message sent, with its size and hex ciphertext.
    const seqs = [...stdout.matchAll(/sent \(seq (\d+)\)/g)].map((m) => m[1])
    for (const seq of seqs) {
      expect(relaySection).toMatch(new RegExp(`\\n\\s+${seq}\\s+\\d+\\s+application\\s+(alice|bob)-agent\\s+\\d+\\s+[0-9a-f]{16}…[0-9a-f]{40}\\n`))
    }
    expect(relaySection).toContain('no plaintext anywhere')
    for (const p of plaintexts) expect(relaySection).not.toContain(p)
    expect(relaySection).not.toContain('ALPHA-TANGO')
  })
})
