// The SLIM bridge end to end (issue 13): starts the real API server and relay, then runs the
// pytest suite in tests/bridge (real slim-bindings, pinned in requirements.txt) against them.
// The venv is created once and cached under $HOME/.cache/skytale-venv-slim-<hash of requirements>.
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { spawnSync } from 'node:child_process'
import { createHash } from 'node:crypto'
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs'
import { homedir, tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
// @ts-expect-error plain JS helper
import { REPO, signup, startApiServer, startRelay } from '../helpers/stack.mjs'

const HERE = join(REPO, 'tests', 'bridge')

/** The bridge binary: $SKYTALE_BRIDGE_BIN, else built by `npm run build:bridge`. */
function bridgeBinary(): string {
  if (process.env.SKYTALE_BRIDGE_BIN) return process.env.SKYTALE_BRIDGE_BIN
  const candidates = [
    process.env.CARGO_TARGET_DIR ? join(resolve(REPO, process.env.CARGO_TARGET_DIR), 'release', 'skytale-bridge') : '',
    join(REPO, 'crates', 'skytale-bridge', 'target', 'release', 'skytale-bridge'),
  ].filter(Boolean)
  const found = candidates.find((c) => existsSync(c))
  if (!found) throw new Error(`skytale-bridge not built (looked in ${candidates.join(', ')}): run npm run build:bridge`)
  return found
}

/** The log files of the bridges the suite started under `root` (tests/bridge/harness.py). */
function bridgeLogs(root: string): string[] {
  return readdirSync(root)
    .filter((d) => d.startsWith('bridge-'))
    .map((d) => join(root, d, 'bridge.log'))
    .filter((f) => existsSync(f))
}

/** Creates (once) the venv keyed by the hash of requirements.txt; returns its python. */
function venvPython(): string {
  const req = join(HERE, 'requirements.txt')
  const hash = createHash('sha256').update(readFileSync(req)).digest('hex').slice(0, 16)
  const dir = join(homedir(), '.cache', `skytale-venv-slim-${hash}`)
  const py = join(dir, 'bin', 'python')
  if (!existsSync(join(dir, '.complete'))) {
    rmSync(dir, { recursive: true, force: true })
    const t0 = Date.now()
    for (const [cmd, args] of [
      ['python3', ['-m', 'venv', dir]],
      [py, ['-m', 'pip', 'install', '-q', '-r', req]],
      ['touch', [join(dir, '.complete')]],
    ] as [string, string[]][]) {
      const r = spawnSync(cmd, args, { stdio: 'inherit' })
      if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} failed`)
    }
    console.log(`created ${dir} in ${Date.now() - t0} ms`)
  }
  return py
}

describe('skytale-bridge: slim-bindings app ↔ bridge ↔ relay ↔ Node agent', () => {
  let root: string
  let api: Awaited<ReturnType<typeof startApiServer>>
  let relay: Awaited<ReturnType<typeof startRelay>>
  let apiKey: string

  beforeAll(async () => {
    root = mkdtempSync(join(tmpdir(), 'skytale-bridge-e2e-'))
    api = await startApiServer({ dataDir: join(root, 'api') })
    relay = await startRelay({ dataDir: join(root, 'relay'), jwksUrl: `${api.url}/.well-known/jwks.json` })
    apiKey = await signup(api.url, 'acme')
  }, 300_000)
  afterAll(async () => {
    await relay?.kill()
    await api?.stop()
    if (root) rmSync(root, { recursive: true, force: true })
  })

  it('pytest suite passes (round trips, invites, kill -9 restart, refusals)', async () => {
    const py = venvPython()
    const bin = bridgeBinary()
    const { spawn } = await import('node:child_process')
    const code = await new Promise<number>((done) => {
      const child = spawn(py, ['-m', 'pytest', '-x', '-q', '-s', '-p', 'no:cacheprovider', HERE], {
        stdio: 'inherit',
        env: {
          ...process.env,
          SKYTALE_API_URL: api.url,
          SKYTALE_API_KEY: apiKey,
          SKYTALE_RELAY: relay.address,
          SKYTALE_BRIDGE_BIN: bin,
          SKYTALE_NODE: process.execPath,
          SKYTALE_MANAGER_WORKER: join(REPO, 'tests', 'helpers', 'manager-worker.mjs'),
          SKYTALE_RELAY_DATA_DIR: join(root, 'relay'),
          SKYTALE_TEST_ROOT: root,
        },
      })
      child.on('exit', (c) => done(c ?? 1))
    })
    // The bridges' logs go away with the root dir: show their ends when the suite failed.
    if (code !== 0) for (const log of bridgeLogs(root)) console.error(`--- ${log} (last 60 lines)\n${readFileSync(log, 'utf8').split('\n').slice(-60).join('\n')}`)
    expect(code).toBe(0)
  }, 1_200_000)
})
