// Test helper: starts the real API server (PGlite) and the real relay binary as child
// processes on loopback, and creates accounts. Used by the networked end-to-end tests.
import { spawn } from 'node:child_process'
import { existsSync, readdirSync } from 'node:fs'
import { dirname, join, resolve } from 'node:path'
import readline from 'node:readline'
import { fileURLToPath } from 'node:url'
import { createRequire } from 'node:module'

const binaries = createRequire(import.meta.url)('../../lib/binaries.js')

export const REPO = resolve(dirname(fileURLToPath(import.meta.url)), '../..')

/** Path of the relay binary (lib/binaries.js: SKYTALE_RELAY_BIN, npm/relay-<platform>/ after `npm run build`, cargo target dirs). */
export function relayBinary() {
  const bin = binaries.relayBinary()
  if (!existsSync(bin)) throw new Error(`relay binary not found at ${bin}: run npm run build`)
  return bin
}

/** Path of the hostile test agent (`tests/hostile`, built with the workspace by `npm run build`). */
export function hostileBinary() {
  return testBinary('skytale-hostile', 'SKYTALE_HOSTILE_BIN')
}

/** Path of a test binary of the workspace (`tests/<name>`, built by `npm run build`). */
function testBinary(name, envVar) {
  if (process.env[envVar]) return process.env[envVar]
  const targetDirs = [process.env.CARGO_TARGET_DIR ? resolve(REPO, process.env.CARGO_TARGET_DIR) : null, join(REPO, 'target')].filter(Boolean)
  const tried = []
  for (const dir of targetDirs.filter((d) => existsSync(d))) {
    for (const sub of readdirSync(dir, { withFileTypes: true }).filter((d) => d.isDirectory()).map((d) => join(dir, d.name, 'release')).concat([join(dir, 'release')])) {
      const bin = join(sub, name)
      tried.push(bin)
      if (existsSync(bin)) return bin
    }
  }
  throw new Error(`${name} not found (tried ${tried.join(', ')}): run npm run build`)
}

/** Path of the adversarial relay proxy (`tests/mitm`). */
export function mitmBinary() {
  return testBinary('skytale-mitm', 'SKYTALE_MITM_BIN')
}

/**
 * Starts the adversarial relay proxy in front of the relay at `relayAddress`. Agents that use
 * `mitm.address` as their relay go through it; `mitm.call(op, args)` scripts its faults
 * (`add` a rule, `clear`, `stats`, `inject`; see tests/mitm/src/main.rs).
 */
export async function startMitm({ relayAddress }) {
  const child = spawn(mitmBinary(), ['--relay', relayAddress], { stdio: ['pipe', 'pipe', 'inherit'], env: { ...process.env, RUST_LOG: 'error' } })
  const rl = readline.createInterface({ input: child.stdout })
  const pending = new Map()
  let next = 1
  const address = await new Promise((resolveAddr, reject) => {
    const timer = setTimeout(() => reject(new Error('mitm did not start')), 30_000)
    rl.on('line', (line) => {
      const m = line.match(/^skytale-mitm listening (\S+)/)
      if (m) { clearTimeout(timer); resolveAddr(m[1]); return }
      let msg
      try { msg = JSON.parse(line) } catch { return }
      const p = pending.get(msg.id)
      if (!p) return
      pending.delete(msg.id)
      if (msg.ok) p.resolve(msg.value)
      else p.reject(new Error(`mitm: ${msg.message}`))
    })
    child.on('exit', (code, signal) => { clearTimeout(timer); reject(new Error(`mitm exited early (${code ?? signal})`)) })
  })
  return {
    ...handle(child),
    address,
    call(op, args = {}) {
      const id = next++
      return new Promise((resolveCall, reject) => {
        pending.set(id, { resolve: resolveCall, reject })
        child.stdin.write(JSON.stringify({ id, op, ...args }) + '\n')
      })
    },
  }
}

/** Runs the hostile agent with `--flag value` pairs; resolves with its JSON answer. */
export function runHostile(command, flags) {
  const args = [command, ...Object.entries(flags).flatMap(([k, v]) => [`--${k}`, String(v)])]
  return new Promise((resolveRun, reject) => {
    const child = spawn(hostileBinary(), args, { stdio: ['ignore', 'pipe', 'inherit'], env: { ...process.env, RUST_LOG: 'error' } })
    let out = ''
    child.stdout.on('data', (d) => { out += d })
    child.on('error', reject)
    child.on('exit', () => {
      try { resolveRun(JSON.parse(out.trim().split('\n').pop())) } catch { reject(new Error(`hostile agent printed: ${out}`)) }
    })
  })
}

/** Calls the API server; resolves with `{status, body}`. */
export async function api(apiUrl, method, path, key, body) {
  const headers = { ...(key ? { authorization: `Bearer ${key}` } : {}), ...(body ? { 'content-type': 'application/json' } : {}) }
  const res = await fetch(`${apiUrl}${path}`, { method, headers, body: body ? JSON.stringify(body) : undefined })
  const text = await res.text()
  return { status: res.status, body: text ? JSON.parse(text) : null }
}

function waitForLine(child, pattern, what, timeoutMs = 60_000) {
  return new Promise((resolveLine, reject) => {
    const rl = readline.createInterface({ input: child.stdout })
    const timer = setTimeout(() => reject(new Error(`${what} did not start within ${timeoutMs} ms`)), timeoutMs)
    rl.on('line', (line) => {
      const m = line.match(pattern)
      if (m) { clearTimeout(timer); resolveLine(m) }
    })
    child.on('exit', (code, signal) => { clearTimeout(timer); reject(new Error(`${what} exited early (${code ?? signal})`)) })
  })
}

function handle(child) {
  const exited = new Promise((r) => child.on('exit', (code, signal) => r({ code, signal })))
  return {
    child,
    exited,
    async kill() { if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL'); return exited },
    async stop() { if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM'); return exited },
  }
}

/** Starts the API server on a free port with an embedded PGlite store in `dataDir`. */
export async function startApiServer({ dataDir, env = {} }) {
  const child = spawn(process.execPath, [join(REPO, 'api-server/dist/main.js')], {
    env: {
      ...process.env,
      PORT: '0',
      HOST: '127.0.0.1',
      SKYTALE_API_DATA_DIR: dataDir,
      SKYTALE_ARGON2_MEMORY_KIB: '1024',
      SKYTALE_ARGON2_TIME_COST: '1',
      SKYTALE_RATE_TOKENS_PER_IP: '100000',
      SKYTALE_RATE_GLOBAL_PER_IP: '100000',
      SKYTALE_RATE_SIGNUP_PER_IP: '100000',
      ...env,
    },
    stdio: ['ignore', 'pipe', 'inherit'],
  })
  const [, url] = await waitForLine(child, /listening on (http:\/\/\S+)/, 'API server')
  return { ...handle(child), url }
}

/** Starts the relay binary with data in `dataDir`, trusting the API server's JWKS. */
export async function startRelay({ dataDir, jwksUrl, listen = '127.0.0.1:0', env = {} }) {
  const child = spawn(relayBinary(), [], {
    env: {
      ...process.env,
      RUST_LOG: process.env.RUST_LOG ?? 'warn',
      SKYTALE_RELAY_DATA_DIR: dataDir,
      SKYTALE_RELAY_LISTEN: listen,
      SKYTALE_RELAY_HTTP_LISTEN: '127.0.0.1:0',
      SKYTALE_RELAY_JWKS_URL: jwksUrl,
      SKYTALE_RELAY_FRAMES_PER_SECOND: '5000',
      SKYTALE_RELAY_BURST: '10000',
      ...env,
    },
    stdio: ['ignore', 'pipe', 'inherit'],
  })
  const [, address, httpUrl] = await waitForLine(child, /^skytale-relay listening (\S+) (\S+)/, 'relay')
  return { ...handle(child), address, httpUrl }
}

/** Creates an account; returns its API key. */
export async function signup(apiUrl, org, name = org) {
  const res = await fetch(`${apiUrl}/v1/accounts`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ email: `${name}@${org}.test`, name, org }),
  })
  if (res.status !== 201) throw new Error(`signup failed: ${res.status} ${await res.text()}`)
  return (await res.json()).apiKey
}
