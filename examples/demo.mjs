// Demo (npm run demo): a local stack, two agents, one end-to-end encrypted channel, and a look
// at what the relay stored — ciphertext only.
//
// 1. starts the API server and the relay in a fresh temp directory (lib/dev.js),
// 2. Alice creates demo/team/general and invites Bob; Bob joins with the invite token,
// 3. they talk both ways,
// 4. the stack stops; the demo reads the relay's SQLite store and prints, per message, its
//    sequence number, sender, kind, size and first ciphertext bytes (hex) — never plaintext —
//    and checks that no plaintext occurs in any file the relay wrote.
import { spawnSync } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs'
import { createRequire } from 'node:module'
import { tmpdir } from 'node:os'
import { dirname, join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'

const require = createRequire(import.meta.url)
const REPO = resolve(dirname(fileURLToPath(import.meta.url)), '..')
const dev = require('../lib/dev.js')

const CHANNEL = 'demo/team/general'
const step = (text) => console.log(`\n→ ${text}`)
const info = (text) => console.log(`  ${text}`)

// --- prerequisites: the native addon, the relay binary and the built API server --------------
/** The SDK, or null when its native addon is not built yet (any other load error is thrown). */
function loadSdk() {
  try {
    return require('../lib/index.js')
  } catch (e) {
    if (/Cannot find native binding|Failed to load native binding/.test(e?.message ?? '')) return null
    throw e
  }
}
let sdk = loadSdk()
const missing = [
  !sdk && 'the native addon',
  !existsSync(dev.relayBinary()) && 'the relay binary',
  !existsSync(dev.apiServerEntry()) && 'the API server (api-server/dist)',
].filter(Boolean)
if (missing.length) {
  console.log(`Not built yet: ${missing.join(', ')}. Running \`npm run build\` first (Rust release build: this takes a few minutes, once)…`)
  const npm = process.platform === 'win32' ? 'npm.cmd' : 'npm'
  const r = spawnSync(npm, ['run', 'build'], { cwd: REPO, stdio: 'inherit' })
  if (r.status !== 0) {
    console.error('error [SKYTALE_BUILD_FAILED]: npm run build failed (see above)')
    process.exit(1)
  }
  sdk = loadSdk()
  if (!sdk) {
    console.error('error [SKYTALE_BUILD_FAILED]: the SDK still does not load after npm run build')
    process.exit(1)
  }
}
const { SkytaleChannelManager } = sdk

// --- the stack ----------------------------------------------------------------------------------
const root = mkdtempSync(join(tmpdir(), 'skytale-demo-'))
let stack = null
const managers = []
async function cleanup() {
  await Promise.all(managers.map((m) => m.close().catch(() => {})))
  managers.length = 0
  if (stack) await stack.stop()
  stack = null
}
process.once('SIGINT', async () => { await cleanup(); rmSync(root, { recursive: true, force: true }); process.exit(130) })

const plaintexts = []
/** The next message of `channel` for `mgr` (30 s at most). */
async function nextMessage(mgr, channel) {
  for await (const m of mgr.messages(channel, { signal: AbortSignal.timeout(30_000) })) return m
  throw new Error(`no message arrived on ${channel} within 30 s`)
}

try {
  step('Starting the local stack (API server with PGlite, relay with SQLite) in a temp directory')
  stack = await dev.startDevStack({ root, org: 'demo', apiPort: 0, relayPort: 0, relayHttpPort: 0 })
  info(`API server ${stack.apiUrl}`)
  info(`relay      ${stack.relay}`)
  info(`account    org "${stack.org}" (channels demo/<namespace>/<service>)`)

  const agent = (identity) => {
    const mgr = new SkytaleChannelManager({
      identity,
      apiUrl: stack.apiUrl,
      apiKey: stack.apiKey,
      relay: stack.relay,
      dataDir: join(root, 'agents', identity),
      keystoreKey: randomBytes(32).toString('hex'), // each agent's own keystore key
    })
    managers.push(mgr)
    return mgr
  }
  const alice = agent('alice-agent')
  const bob = agent('bob-agent')
  await Promise.all([alice.ready(), bob.ready()])
  info('alice-agent and bob-agent connected (each with its own encrypted keystore)')

  step(`Alice creates ${CHANNEL}`)
  await alice.create(CHANNEL)
  info(`members: ${(await alice.members(CHANNEL)).join(', ')}`)

  step('Alice invites Bob (one use, valid 10 minutes)')
  const token = await alice.invite(CHANNEL, { maxUses: 1, ttlSeconds: 600 })
  info(`invite token ${token.slice(0, 16)}… (${token.length} characters; the relay only ever sees the invite id)`)

  step('Bob joins with the token')
  await bob.joinWithToken(CHANNEL, token, { timeoutMs: 60_000 })
  info(`members: ${(await bob.members(CHANNEL)).join(', ')}`)

  const talk = async (from, to, text) => {
    plaintexts.push(text)
    const seq = await from.send(CHANNEL, text)
    info(`${from.identity} sent (seq ${seq}): "${text}"`)
    const m = await nextMessage(to, CHANNEL)
    info(`${to.identity} received from ${m.sender} (seq ${m.seq}): "${m.text}"`)
    if (m.text !== text) throw new Error(`expected "${text}", got "${m.text}"`)
  }
  step('They talk')
  await talk(alice, bob, 'Hello from Alice! The launch code is 7-ALPHA-TANGO.')
  await talk(bob, alice, 'Hi Alice, Bob here. Got it, keeping it secret.')
  await talk(alice, bob, 'Great, see you in the channel.')

  step('Stopping the agents and the stack')
  const relayDir = stack.relayDataDir
  await cleanup()
  info('stopped')

  // --- what the relay stored ---------------------------------------------------------------------
  step('What the relay stored (its SQLite store, read after it stopped)')
  await showRelayStore(relayDir)

  step('Searching every file the relay wrote for the plaintexts')
  const leaks = []
  for (const file of filesUnder(relayDir)) {
    const bytes = readFileSync(file)
    for (const text of plaintexts) {
      if (bytes.includes(Buffer.from(text))) leaks.push(file)
    }
  }
  info(`${filesUnder(relayDir).length} files searched for ${plaintexts.length} messages: ${leaks.length ? `FOUND in ${leaks.join(', ')}` : 'no plaintext anywhere'}`)
  if (leaks.length) throw Object.assign(new Error('plaintext found in the relay store'), { code: 'SKYTALE_DEMO_LEAK' })

  console.log('\nDone: the relay ordered and stored ciphertext only; only Alice and Bob could read it.')
} catch (e) {
  console.error(`error [${e?.code ?? 'SKYTALE_INTERNAL'}]: ${e?.message ?? e}`)
  process.exitCode = 1
} finally {
  await cleanup()
  rmSync(root, { recursive: true, force: true })
}

function filesUnder(dir) {
  const out = []
  for (const name of readdirSync(dir)) {
    const p = join(dir, name)
    if (statSync(p).isDirectory()) out.push(...filesUnder(p))
    else out.push(p)
  }
  return out
}

async function showRelayStore(relayDir) {
  const dbFile = join(relayDir, 'relay.sqlite3')
  let initSqlJs
  try {
    initSqlJs = require('sql.js')
  } catch {
    info('(sql.js is not installed — run npm ci — so the table is skipped; the file search below still runs)')
    return
  }
  if (existsSync(`${dbFile}-wal`) && statSync(`${dbFile}-wal`).size > 0) {
    info('(the relay left a write-ahead log behind; rows in it are not shown, the file search below covers it)')
  }
  const SQL = await initSqlJs()
  const db = new SQL.Database(readFileSync(dbFile))
  try {
    const kinds = { 1: 'application', 2: 'proposal', 3: 'commit', 4: 'join-request' }
    const res = db.exec(
      'SELECT seq, epoch, kind, sender, length(payload), hex(substr(payload, 1, 8)), hex(substr(payload, -20)) FROM messages WHERE channel = ? ORDER BY seq',
      [CHANNEL],
    )
    const rows = res[0]?.values ?? []
    info(`table messages, channel ${CHANNEL}: ${rows.length} items`)
    const header = ['seq', 'epoch', 'kind', 'sender', 'bytes', 'payload (hex: first 8 … last 20 bytes)']
    const table = [header, ...rows.map(([seq, epoch, kind, sender, size, head, tail]) => [seq, epoch, kinds[kind] ?? kind, sender, size, `${head.toLowerCase()}…${tail.toLowerCase()}`])]
    const widths = header.map((_, i) => Math.max(...table.map((r) => String(r[i]).length)))
    for (const r of table) info(r.map((c, i) => String(c).padEnd(widths[i])).join('  ').trimEnd())
    info('(an MLS message starts with its framing in clear — version, wire format, group id = channel name, epoch;')
    info(' the content, sender included, is AES-128-GCM ciphertext that only the channel members can open)')
    const count = (sql) => db.exec(sql)[0]?.values?.[0]?.[0] ?? 0
    info(`also: ${count('SELECT count(*) FROM welcomes')} queued welcome(s), ${count('SELECT count(*) FROM key_packages')} unclaimed key package(s) — opaque MLS bytes as well`)
  } finally {
    db.close()
  }
}
