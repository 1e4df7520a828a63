// CrewAI through MCP, end to end: a Python crew (crewai, scripted BaseLLM, no network model)
// gets the Skytale tools from skytale-mcp over stdio (MCPServerStdio), joins a channel, sends to
// a Node agent and reads the Node agent's answer. The venv is created once and cached under
// $HOME/.cache/skytale-venv-crewai-<hash of examples/crewai/requirements.txt>; if it cannot be
// built here the test fails with pip's output (it is never skipped).
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { spawn } from 'node:child_process'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
// @ts-expect-error plain JS helper
import { REPO } from '../helpers/stack.mjs'
// @ts-expect-error plain JS helper
import { startWorld } from './helpers/world.mjs'
// @ts-expect-error plain JS helper
import { ensureVenv } from './helpers/python-venv.mjs'

const EXAMPLE = join(REPO, 'examples/crewai/crew_example.py')
const REQUIREMENTS = join(REPO, 'examples/crewai/requirements.txt')

describe('CrewAI crew with skytale-mcp', () => {
  let world: any
  let node: any
  let python = ''
  let venvError: Error | null = null

  beforeAll(async () => {
    // The venv first (slow when cold), kept apart so that a failure is reported by the test.
    try {
      const venv = await ensureVenv({ requirements: REQUIREMENTS, prefix: 'skytale-venv-crewai' })
      python = venv.python
      process.stderr.write(`[crewai] venv ${venv.cached ? 'cached' : 'created'} in ${venv.ms} ms: ${venv.dir}\n`)
    } catch (e) {
      venvError = e as Error
    }
    world = await startWorld('crewai')
    node = world.node
  }, 900_000)
  afterAll(async () => {
    await world?.stop()
  })

  it('the crew sends into a channel a Node agent reads, and reads what the Node agent answered', async () => {
    if (venvError) throw new Error(`the CrewAI venv could not be created (Python 3.10–3.13 and network access to PyPI are needed): ${venvError.message}`)
    const ch = 'acme/crew/room'
    await node.call('create', { channel: ch })
    const token: string = await node.call('invite', { channel: ch, maxUses: 1, ttlSeconds: 600 })

    const crew = spawn(python, [EXAMPLE, '--scripted'], {
      env: {
        PATH: process.env.PATH ?? '',
        HOME: process.env.HOME ?? tmpdir(),
        SKYTALE_NODE: process.execPath,
        ...world.agentEnv('crew-agent'),
        SKYTALE_CHANNEL: ch,
        SKYTALE_INVITE: token,
        SKYTALE_TEXT: 'hello from the crew',
        CREWAI_DISABLE_TELEMETRY: 'true',
        OTEL_SDK_DISABLED: 'true',
        CREWAI_STORAGE_DIR: join(world.root, 'crewai'),
        PYTHONUNBUFFERED: '1',
        PYTHONDONTWRITEBYTECODE: '1',
      },
      stdio: ['ignore', 'pipe', 'pipe'],
    })
    let out = ''
    let err = ''
    crew.stdout.on('data', (d) => { out += d })
    crew.stderr.on('data', (d) => { err += d })
    const exited = new Promise<number | string | null>((resolve) => crew.on('exit', (code, signal) => resolve(code ?? signal)))
    const within = <T>(p: Promise<T>, ms: number, what: string) => Promise.race([
      p,
      new Promise<never>((_, reject) => setTimeout(() => reject(new Error(`${what} within ${ms} ms; crew output:\n${out}\n${err}`)), ms)),
    ])
    try {
      // The Node agent reads what the crew sent, then answers; the crew waits for the answer.
      const got = await within(Promise.race([
        node.call('receiveN', { channel: ch, count: 1, timeoutMs: 150_000 }),
        exited.then((code) => { throw new Error(`the crew exited (${code}) before sending:\n${out}\n${err}`) }),
      ]), 160_000, 'no message from the crew')
      expect(got).toEqual(['hello from the crew'])
      await node.call('send', { channel: ch, text: 'hi crew, node here' })
      const code = await within(exited, 100_000, 'the crew did not finish')
      expect(code, `crew output:\n${out}\n${err}`).toBe(0)
    } finally {
      if (crew.exitCode === null) crew.kill('SIGKILL')
    }
    const line = out.split('\n').find((l) => l.startsWith('SKYTALE_RESULT '))
    expect(line, `no result line in:\n${out}\n${err}`).toBeTruthy()
    expect(JSON.parse(line!.slice('SKYTALE_RESULT '.length)).result).toBe('node-agent: hi crew, node here')
    expect((await node.call('members', { channel: ch })).sort()).toEqual(['crew-agent', 'node-agent'])
  }, 300_000)
})
