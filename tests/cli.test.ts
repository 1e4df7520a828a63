// The `skytale` CLI against real processes: help, the account/key/token commands against the
// real API server, and `dev` (the local stack) with doctor and a channel round trip on top.
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { spawn, type ChildProcess } from 'node:child_process'
import { generateKeyPairSync } from 'node:crypto'
import { mkdtempSync, rmSync, statSync, existsSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import readline from 'node:readline'
// @ts-expect-error plain JS helper
import { REPO, startApiServer } from './helpers/stack.mjs'

const BIN = join(REPO, 'bin/skytale.js')

/** Environment without any SKYTALE_* of the caller. */
function cleanEnv(extra: Record<string, string | undefined> = {}) {
  const env: Record<string, string | undefined> = {}
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('SKYTALE_') || k === 'SKYTALE_RELAY_BIN') env[k] = v
  return { ...env, ...extra }
}

function run(args: string[], env: Record<string, string | undefined> = {}, cwd?: string, timeoutMs = 60_000) {
  return new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve, reject) => {
    const child = spawn(process.execPath, [BIN, ...args], { env: cleanEnv(env), cwd, stdio: ['ignore', 'pipe', 'pipe'] })
    let stdout = ''
    let stderr = ''
    child.stdout.on('data', (d) => { stdout += d })
    child.stderr.on('data', (d) => { stderr += d })
    const timer = setTimeout(() => { child.kill('SIGKILL'); reject(new Error(`skytale ${args.join(' ')} timed out: ${stderr}`)) }, timeoutMs)
    child.on('exit', (code) => { clearTimeout(timer); resolve({ code, stdout, stderr }) })
  })
}

describe('skytale CLI: help', () => {
  it('prints help at top level and for every command', async () => {
    const top = await run(['--help'])
    expect(top.code).toBe(0)
    const commands = ['dev', 'signup', 'keys', 'token', 'send', 'listen', 'invite', 'join', 'doctor', 'create']
    for (const c of commands) expect(top.stdout).toContain(`  ${c} `)
    const helps = await Promise.all(commands.map((c) => run([c, '--help'])))
    helps.forEach((h, i) => {
      expect(h.code, commands[i]).toBe(0)
      expect(h.stdout).toContain(`Usage: skytale ${commands[i]}`)
      expect(h.stdout).toContain('--api-url')
    })
    const bad = await run(['nope'])
    expect(bad.code).toBe(1)
    expect(bad.stderr).toMatch(/^error \[SKYTALE_INVALID_ARGUMENT\]: unknown command "nope"/)
    const missing = await run(['send', 'a/b/c'])
    expect(missing.code).toBe(1)
    expect(missing.stderr).toContain('usage: skytale send <channel> <text>')
    const unknownFlag = await run(['token', '--bogus'])
    expect(unknownFlag.code).toBe(1)
    expect(unknownFlag.stderr).toMatch(/^error \[SKYTALE_INVALID_ARGUMENT\]: .*--bogus/)
  })
})

describe('skytale CLI: accounts, keys, tokens', () => {
  let root: string
  let api: any
  beforeAll(async () => {
    root = mkdtempSync(join(tmpdir(), 'skytale-cli-api-'))
    api = await startApiServer({ dataDir: join(root, 'api') })
  })
  afterAll(async () => {
    await api?.stop()
    rmSync(root, { recursive: true, force: true })
  })

  it('signup → keys create/list/revoke → token', async () => {
    const env = { SKYTALE_API_URL: api.url }
    const signup = await run(['signup', '--email', 'ops@acme.test', '--name', 'ops', '--org', 'acme-cli'], env)
    expect(signup.code, signup.stderr).toBe(0)
    const key = signup.stdout.trim()
    expect(key).toMatch(/^sk_live_[A-Za-z0-9_-]{43}$/)
    expect(signup.stderr).toContain('shown once')

    const again = await run(['signup', '--email', 'x@acme.test', '--name', 'x', '--org', 'acme-cli'], env)
    expect(again.code).toBe(1)
    expect(again.stderr).toMatch(/^error \[SKYTALE_CONFLICT\]: /)

    const withKey = { ...env, SKYTALE_API_KEY: key }
    const created = await run(['keys', 'create', '--name', 'second', '--agent', 'cli-bot'], withKey)
    expect(created.code, created.stderr).toBe(0)
    const key2 = created.stdout.trim()
    expect(key2).toMatch(/^sk_live_/)
    const id2 = created.stderr.match(/key (key_\S+)/)![1]

    const list = await run(['keys', 'list'], withKey)
    expect(list.code).toBe(0)
    expect(list.stdout).toContain(id2)
    expect(list.stdout).toContain('second')
    expect(list.stdout).not.toContain(key) // never the keys themselves
    expect(list.stdout).not.toContain(key2)

    // Tokens are for registered agents only; an agent key only for its own identity.
    const unregistered = await run(['token'], { ...env, SKYTALE_API_KEY: key2, SKYTALE_IDENTITY: 'cli-bot' })
    expect(unregistered.stderr).toMatch(/^error \[SKYTALE_AGENT_NOT_REGISTERED\]: /)
    const reg = await fetch(`${api.url}/v1/agents`, {
      method: 'POST',
      headers: { authorization: `Bearer ${key2}`, 'content-type': 'application/json' },
      body: JSON.stringify({ identity: 'cli-bot', signatureKey: generateKeyPairSync('ed25519').publicKey.export({ format: 'jwk' }).x }),
    })
    expect(reg.status).toBe(201)
    const other = await run(['token'], { ...env, SKYTALE_API_KEY: key2, SKYTALE_IDENTITY: 'someone-else' })
    expect(other.stderr).toMatch(/^error \[SKYTALE_AUTH_IDENTITY_FORBIDDEN\]: /)
    const token = await run(['token'], { ...env, SKYTALE_API_KEY: key2, SKYTALE_IDENTITY: 'cli-bot' })
    expect(token.code, token.stderr).toBe(0)
    expect(token.stdout.trim().split('.')).toHaveLength(3)
    expect(token.stderr).toContain('valid until')

    const revoke = await run(['keys', 'revoke', id2], withKey)
    expect(revoke.code, revoke.stderr).toBe(0)
    const afterRevoke = await run(['token'], { ...env, SKYTALE_API_KEY: key2 })
    expect(afterRevoke.code).toBe(1)
    expect(afterRevoke.stderr).toMatch(/^error \[SKYTALE_AUTH_KEY_REVOKED\]: /)
    expect(afterRevoke.stderr).not.toContain(key2)

    const noServer = await run(['token'], { SKYTALE_API_URL: 'http://127.0.0.1:9', SKYTALE_API_KEY: key })
    expect(noServer.code).toBe(1)
    expect(noServer.stderr).toMatch(/^error \[SKYTALE_API_UNREACHABLE\]: cannot reach the API server/)
    expect(noServer.stderr).not.toContain(key)
  })
})

describe('skytale CLI: dev stack, doctor, channels', () => {
  let root: string
  let dev: ChildProcess
  let devExit: Promise<number | null>
  let env: Record<string, string> = {}
  let devStderr = ''

  beforeAll(async () => {
    root = mkdtempSync(join(tmpdir(), 'skytale-cli-dev-'))
    dev = spawn(process.execPath, [BIN, 'dev', '--root', join(root, '.skytale'), '--api-port', '0', '--relay-port', '0', '--relay-http-port', '0'], {
      env: cleanEnv(),
      cwd: root,
      stdio: ['ignore', 'pipe', 'pipe'],
    })
    devExit = new Promise((r) => dev.on('exit', (code) => r(code)))
    dev.stderr!.on('data', (d) => { devStderr += d })
    const rl = readline.createInterface({ input: dev.stdout! })
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`dev did not print its exports: ${devStderr}`)), 90_000)
      dev.on('exit', (code) => reject(new Error(`dev exited (${code}): ${devStderr}`)))
      rl.on('line', (line) => {
        const m = line.match(/^export (SKYTALE_[A-Z_]+)=(\S+)$/)
        if (m) env[m[1]] = m[2]
        if (Object.keys(env).length === 5) { clearTimeout(timer); resolve() }
      })
    })
  })
  afterAll(async () => {
    // SIGTERM lets `skytale dev` stop its children (SIGKILL would orphan them); SIGKILL only as a last resort.
    if (dev && dev.exitCode === null) {
      dev.kill('SIGTERM')
      const timer = setTimeout(() => dev.kill('SIGKILL'), 15_000)
      await devExit
      clearTimeout(timer)
    }
    rmSync(root, { recursive: true, force: true })
  })

  it('dev prints the export lines and keeps the dev key file private', () => {
    expect(Object.keys(env).sort()).toEqual(['SKYTALE_API_KEY', 'SKYTALE_API_URL', 'SKYTALE_KEYSTORE_KEY', 'SKYTALE_RELAY', 'SKYTALE_RELAY_HTTP'])
    expect(env.SKYTALE_API_URL).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/)
    expect(env.SKYTALE_RELAY).toMatch(/^iroh:\/\/[0-9a-f]{64}@127\.0\.0\.1:\d+$/)
    expect(env.SKYTALE_API_KEY).toMatch(/^sk_live_/)
    expect(devStderr).toContain('DEV ONLY')
    expect(statSync(join(root, '.skytale', 'dev.json')).mode & 0o777).toBe(0o600)
  })

  it('doctor: a healthy stack exits 0; a wrong API key or API URL exits 1 and says what is wrong', async () => {
    const ok = await run(['doctor'], env, root)
    expect(ok.code, ok.stdout + ok.stderr).toBe(0)
    expect(ok.stdout).toContain('everything looks fine')
    expect(ok.stdout).toMatch(/ok\s+relay\s+connected/)

    const badKey = await run(['doctor'], { ...env, SKYTALE_API_KEY: 'sk_live_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA' }, root)
    expect(badKey.code).toBe(1)
    expect(badKey.stdout).toMatch(/FAIL\s+API key\s+the API server does not know this key.*SKYTALE_AUTH_KEY_INVALID/)
    expect(badKey.stdout).toContain('problem(s) found')
    expect(badKey.stdout + badKey.stderr).not.toContain('sk_live_AAAA')

    const noApi = await run(['doctor'], { ...env, SKYTALE_API_URL: 'http://127.0.0.1:9' }, root)
    expect(noApi.code).toBe(1)
    expect(noApi.stdout).toMatch(/FAIL\s+API server\s+cannot reach the API server/)
  })

  it('create, invite, join, send and listen between two identities', async () => {
    const ch = 'dev/cli/general'
    const created = await run(['--identity', 'alice', 'create', ch], env, root)
    expect(created.code, created.stderr).toBe(0)
    const invite = await run(['invite', ch, '--identity', 'alice', '--ttl', '600'], env, root)
    expect(invite.code, invite.stderr).toBe(0)
    const token = invite.stdout.trim()
    expect(token).toMatch(/^skt_inv_/)
    const joined = await run(['--identity', 'bob', 'join', ch, token, '--timeout', '60000'], env, root)
    expect(joined.code, joined.stderr).toBe(0)
    expect(joined.stdout).toContain(`joined ${ch} as bob`)
    const sent = await run(['--identity', 'alice', 'send', ch, 'hello from the CLI'], env, root)
    expect(sent.code, sent.stderr).toBe(0)
    expect(sent.stdout).toMatch(/^sent seq \d+/)

    const listen = spawn(process.execPath, [BIN, '--identity', 'bob', 'listen', ch, '--json'], { env: cleanEnv(env), cwd: root, stdio: ['ignore', 'pipe', 'pipe'] })
    const exited = new Promise<number | null>((r) => listen.on('exit', (code) => r(code)))
    let listenErr = ''
    listen.stderr!.on('data', (d) => { listenErr += d })
    const first = await new Promise<any>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`listen printed nothing: ${listenErr}`)), 60_000)
      readline.createInterface({ input: listen.stdout! }).once('line', (line) => { clearTimeout(timer); resolve(JSON.parse(line)) })
    })
    expect(first).toMatchObject({ channel: ch, sender: 'alice', text: 'hello from the CLI' })
    listen.kill('SIGINT')
    expect(await exited).toBe(0)
    expect(existsSync(join(root, '.skytale', 'agents', 'bob'))).toBe(true)

    const members = await run(['--identity', 'alice', 'members', ch], env, root)
    expect(members.stdout.trim().split('\n').sort()).toEqual(['alice', 'bob'])

    // doctor on an existing keystore: opens with the right key, says so with a wrong one
    const good = await run(['--identity', 'alice', 'doctor'], env, root)
    expect(good.code, good.stdout).toBe(0)
    expect(good.stdout).toMatch(/ok\s+keystore\s+\S+ opens with the configured key/)
    const wrong = await run(['--identity', 'alice', 'doctor'], { ...env, SKYTALE_KEYSTORE_KEY: 'ab'.repeat(32) }, root)
    expect(wrong.code).toBe(1)
    expect(wrong.stdout).toMatch(/FAIL\s+keystore\s+.*does not open it.*SKYTALE_KEYSTORE_WRONG_KEY/)
  })

  it('dev stops both processes on SIGTERM and exits 0', async () => {
    dev.kill('SIGTERM')
    expect(await devExit).toBe(0)
    expect(devStderr).toContain('stopped')
    await expect(fetch(`${env.SKYTALE_API_URL}/health`)).rejects.toThrow()
    await expect(fetch(`${env.SKYTALE_RELAY_HTTP}/health`)).rejects.toThrow()
    expect(existsSync(join(root, '.skytale', 'dev.pid'))).toBe(false)
  })
})

describe('skytale CLI: relay and api', () => {
  it('--which finds the servers of this checkout; a missing one is SKYTALE_NOT_FOUND', async () => {
    const relay = await run(['relay', '--which'])
    expect(relay.code, relay.stderr).toBe(0)
    const [relayPath] = relay.stdout.trim().split('\t')
    expect(existsSync(relayPath)).toBe(true)
    const api = await run(['api', '--which'])
    expect(api.code, api.stderr).toBe(0)
    expect(api.stdout.trim().split('\t')[0]).toMatch(/api-server[\\/]dist[\\/]main\.js$/)
    const missing = await run(['relay', '--which'], { SKYTALE_RELAY_BIN: join(tmpdir(), 'no-such-relay') })
    expect(missing.code).toBe(1)
    expect(missing.stderr).toMatch(/^error \[SKYTALE_NOT_FOUND\]: relay binary not found/)
    const help = await run(['relay', '--help'])
    expect(help.stdout).toContain('Usage: skytale relay')
  })
})
