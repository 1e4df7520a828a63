#!/usr/bin/env node
// The `skytale` command line: the local dev stack, accounts and API keys, tokens, channels
// (send, listen, invite, join) and `doctor`. Run `skytale --help`.
'use strict'

const { parseArgs } = require('node:util')
const { existsSync, mkdtempSync, rmSync } = require('node:fs')
const { tmpdir } = require('node:os')
const path = require('node:path')
const { randomBytes } = require('node:crypto')

const GLOBAL_OPTIONS = {
  'api-url': { type: 'string' },
  'api-key': { type: 'string' },
  relay: { type: 'string' },
  identity: { type: 'string' },
  'data-dir': { type: 'string' },
  help: { type: 'boolean', short: 'h' },
}

const GLOBAL_HELP = `Global options (each defaults to an environment variable):
  --api-url URL     API server             (SKYTALE_API_URL, default http://127.0.0.1:7780)
  --api-key KEY     API key sk_live_…      (SKYTALE_API_KEY; prefer the variable: flags show in ps)
  --relay ADDR      relay iroh://id@host:port (SKYTALE_RELAY; default: the one the API server publishes)
  --identity NAME   agent identity         (SKYTALE_IDENTITY, default cli-agent)
  --data-dir DIR    agent keystore dir     (SKYTALE_DATA_DIR, default ./.skytale/agents/<identity>)
  -h, --help        help
The keystore key comes from SKYTALE_KEYSTORE_KEY (64 hex characters) or SKYTALE_PASSPHRASE.`

const COMMANDS = {
  dev: {
    usage: 'skytale dev [--root DIR] [--cluster N] [--api-port N] [--relay-port N] [--relay-http-port N] [--verbose]',
    about: 'Start the local stack (API server + relay) and print the SKYTALE_* lines to export',
    details: `Starts the API server (PGlite in <root>/api) and the relay (SQLite in <root>/relay) on
127.0.0.1, creates the dev account (org "dev") once and prints the export lines. Logs go to
<root>/logs. Ctrl-C (or SIGTERM) stops both. Default ports 7780 (API), 7781/udp (relay),
7782 (relay /health); a taken port is replaced by a free one.
--cluster N (2..9) tries a relay cluster: N nats-server nodes with JetStream clustered on
127.0.0.1 (needs nats-server on PATH or NATS_SERVER_BIN; data in <root>/nats) and N relays on
them (<root>/relay-<n>, ports 7781+2i/udp and 7782+2i); the API server publishes all N and
SKYTALE_RELAY lists them, so agents move to another node when theirs dies.
DEV ONLY: <root>/dev.json (mode 0600) keeps the dev API key and a dev keystore key in clear.`,
    options: {
      root: { type: 'string' },
      cluster: { type: 'string' },
      'api-port': { type: 'string' },
      'relay-port': { type: 'string' },
      'relay-http-port': { type: 'string' },
      verbose: { type: 'boolean', short: 'v' },
    },
    positionals: 0,
    run: cmdDev,
  },
  signup: {
    usage: 'skytale signup --email EMAIL --name NAME --org ORG',
    about: 'Create an account; prints its API key once',
    details: 'ORG is the first part of every channel name of the account (org/namespace/service).',
    options: { email: { type: 'string' }, name: { type: 'string' }, org: { type: 'string' } },
    positionals: 0,
    run: cmdSignup,
  },
  keys: {
    usage: 'skytale keys create [--name NAME] [--agent IDENTITY] | keys list | keys revoke <id>',
    about: 'Manage the account\'s API keys (needs an admin key)',
    details: `create  a new API key (printed once); with --agent, an agent key that can only act as that identity
list    the active keys (id, name, prefix, created, last used; never the keys)
revoke  revoke a key by id: it stops working at once`,
    options: { name: { type: 'string' }, agent: { type: 'string' } },
    positionals: [1, 2],
    run: cmdKeys,
  },
  token: {
    usage: 'skytale token',
    about: 'Get a relay token (1 h EdDSA JWT) for --identity (a registered agent) with the API key; prints it',
    options: {},
    positionals: 0,
    run: cmdToken,
  },
  create: {
    usage: 'skytale create <channel>',
    about: 'Create a channel (org/namespace/service) with this agent as its first member',
    options: {},
    positionals: 1,
    run: cmdCreate,
  },
  send: {
    usage: 'skytale send <channel> <text>',
    about: 'Encrypt and send a message; prints its relay sequence number',
    options: {},
    positionals: 2,
    run: cmdSend,
  },
  listen: {
    usage: 'skytale listen <channel> [--json]',
    about: 'Print the channel\'s messages as they arrive, until Ctrl-C',
    details: 'Each line: [seq] sender: text (or one JSON object per line with --json).',
    options: { json: { type: 'boolean' } },
    positionals: 1,
    run: cmdListen,
  },
  invite: {
    usage: 'skytale invite <channel> [--max-uses N] [--ttl SECONDS]',
    about: 'Create an invite token (skt_inv_…) for a channel; prints it',
    details: 'Defaults: one use, valid 3600 s. Give the token to the invitee for `skytale join`.',
    options: { 'max-uses': { type: 'string' }, ttl: { type: 'string' } },
    positionals: 1,
    run: cmdInvite,
  },
  invites: {
    usage: 'skytale invites <channel>',
    about: 'List the invites of a channel (id, creator, uses, expiry, revoked)',
    positionals: 1,
    run: cmdInvites,
  },
  'revoke-invite': {
    usage: 'skytale revoke-invite <channel> <invite-id|token>',
    about: 'Revoke an invite: every member and the relay refuse it from then on',
    positionals: 2,
    run: cmdRevokeInvite,
  },
  roles: {
    usage: 'skytale roles <channel>',
    about: 'List the members of a channel with their roles',
    positionals: 1,
    run: cmdRoles,
  },
  'set-role': {
    usage: 'skytale set-role <channel> <identity> <admin|member>',
    about: 'Give a member a role (needs the policy role, admin by default)',
    positionals: 3,
    run: cmdSetRole,
  },
  join: {
    usage: 'skytale join <channel> <token> [--timeout MS]',
    about: 'Join a channel with an invite token',
    details: 'Waits up to --timeout ms (default 60000) for the join to complete.',
    options: { timeout: { type: 'string' } },
    positionals: 2,
    run: cmdJoin,
  },
  members: {
    usage: 'skytale members <channel> [--fingerprints]',
    about: 'List the members of a channel (with --fingerprints: each signature-key fingerprint, to compare out of band)',
    options: { fingerprints: { type: 'boolean' } },
    positionals: 1,
    run: cmdMembers,
  },
  channels: {
    usage: 'skytale channels',
    about: 'List the channels this agent is a member of',
    options: {},
    positionals: 0,
    run: cmdChannels,
  },
  relay: {
    usage: 'skytale relay [--which] [-- relay arguments…]',
    about: 'Run the relay (skytale-relay) installed with the SDK; arguments go to it',
    details: `Runs the relay binary of the installed @skytale/relay-<platform> package (an optional
dependency of @skytale/sdk), else SKYTALE_RELAY_BIN, else a build of this checkout. Its
configuration comes from --config relay.toml and SKYTALE_RELAY_* (see the relay README).
--which prints the binary's path and where it was found instead of running it.`,
    options: {},
    positionals: 0,
    passthrough: true,
    run: cmdRelay,
  },
  api: {
    usage: 'skytale api [--which] [-- server arguments…]',
    about: 'Run the API server (@skytale/api-server); arguments go to it',
    details: `Runs dist/main.js of the installed @skytale/api-server (npm i @skytale/api-server), else
SKYTALE_API_SERVER_ENTRY, else api-server/dist of this checkout. Its configuration comes from the
environment (PORT, HOST, SKYTALE_API_DATA_DIR, DATABASE_URL, …; see the api-server README).
--which prints the entry point and where it was found instead of running it.`,
    options: {},
    positionals: 0,
    passthrough: true,
    run: cmdApi,
  },
  doctor: {
    usage: 'skytale doctor [--relay-http URL]',
    about: 'Check the API server, the API key, the relay and the keystore; say what is wrong',
    details: `Checks: the API server's /health; that a token can be obtained with the API key; the
relay's /health (with --relay-http or SKYTALE_RELAY_HTTP); a connection to the relay through the
SDK; that the agent's keystore opens with the configured key. Exits 1 if anything is wrong.`,
    options: { 'relay-http': { type: 'string' } },
    positionals: 0,
    run: cmdDoctor,
  },
}

function topHelp() {
  const width = Math.max(...Object.keys(COMMANDS).map((c) => c.length))
  return `skytale — end-to-end encrypted MLS channels for AI agents

Usage: skytale <command> [options]

Commands:
${Object.entries(COMMANDS).map(([name, c]) => `  ${name.padEnd(width)}  ${c.about}`).join('\n')}

Run \`skytale <command> --help\` for a command's options.

${GLOBAL_HELP}

Example (local):
  npx skytale dev                       # in one terminal; export the printed lines in another
  skytale --identity alice create dev/team/general
  skytale --identity alice invite dev/team/general        # → skt_inv_…
  skytale --identity bob join dev/team/general skt_inv_…
  skytale --identity bob listen dev/team/general &
  skytale --identity alice send dev/team/general "hello bob"
`
}

function commandHelp(name) {
  const c = COMMANDS[name]
  return `Usage: ${c.usage}

${c.about}.${c.details ? `\n\n${c.details}` : ''}

${GLOBAL_HELP}
`
}

// ---------------------------------------------------------------------------------------------
// errors and output

function sdkErrors() {
  return require('../lib/errors.js')
}

function cliError(message, code = 'SKYTALE_INVALID_ARGUMENT') {
  return sdkErrors().createError(code, message)
}

function fail(err) {
  const code = typeof err?.code === 'string' ? err.code : err?.name === 'AbortError' ? 'SKYTALE_ABORTED' : 'SKYTALE_INTERNAL'
  let message = err?.message ?? String(err)
  if (code === 'SKYTALE_INTERNAL' && process.env.SKYTALE_DEBUG) message = err?.stack ?? message
  process.stderr.write(`error [${code}]: ${message}\n`)
  process.exitCode = 1
}

const say = (line = '') => process.stdout.write(`${line}\n`)
const note = (line = '') => process.stderr.write(`${line}\n`)

// ---------------------------------------------------------------------------------------------
// configuration

function config(values) {
  const env = process.env
  const identity = values.identity ?? env.SKYTALE_IDENTITY ?? 'cli-agent'
  return {
    apiUrl: (values['api-url'] ?? env.SKYTALE_API_URL ?? 'http://127.0.0.1:7780').replace(/\/+$/, ''),
    apiKey: values['api-key'] ?? env.SKYTALE_API_KEY,
    relay: values.relay ?? env.SKYTALE_RELAY,
    identity,
    dataDir: values['data-dir'] ?? env.SKYTALE_DATA_DIR ?? path.join('.skytale', 'agents', identity),
    keystoreKey: env.SKYTALE_KEYSTORE_KEY || undefined,
    passphrase: env.SKYTALE_PASSPHRASE || undefined,
  }
}

function intOption(values, name, { min = 0 } = {}) {
  const v = values[name]
  if (v === undefined) return undefined
  if (!/^\d+$/.test(v) || Number(v) < min) throw cliError(`--${name} must be an integer ≥ ${min}`)
  return Number(v)
}

// ---------------------------------------------------------------------------------------------
// API server calls

// The API server answers SKYTALE_* codes (passed through as they are); older servers answered
// lowercase codes, mapped here.
const API_CODES = {
  auth_key_invalid: 'SKYTALE_AUTH_KEY_INVALID',
  auth_key_revoked: 'SKYTALE_AUTH_KEY_REVOKED',
  rate_limited: 'SKYTALE_RATE_LIMITED',
}

/**
 * @param {any} cfg @param {string} method @param {string} route
 * @param {{ body?: unknown, auth?: boolean }} [options]
 * @returns {Promise<any>}
 */
async function api(cfg, method, route, { body, auth = true } = {}) {
  const { toSkytaleError } = sdkErrors()
  /** @type {Record<string, string>} */
  const headers = {}
  if (auth) {
    if (!cfg.apiKey) throw toSkytaleError({ code: 'SKYTALE_AUTH_KEY_INVALID', message: 'no API key: set SKYTALE_API_KEY (or --api-key)' })
    headers.authorization = `Bearer ${cfg.apiKey}`
  }
  if (body !== undefined) headers['content-type'] = 'application/json'
  let res
  try {
    res = await fetch(`${cfg.apiUrl}${route}`, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      signal: AbortSignal.timeout(15_000),
    })
  } catch (e) {
    const why = e?.cause?.code ?? e?.cause?.message ?? e?.message
    throw toSkytaleError({ code: 'SKYTALE_API_UNREACHABLE', message: `cannot reach the API server at ${cfg.apiUrl} (${why})` })
  }
  const text = await res.text()
  let json = null
  try { json = text ? JSON.parse(text) : null } catch {}
  if (res.ok) return json
  const apiCode = json?.error?.code ?? `http_${res.status}`
  const code = apiCode.startsWith('SKYTALE_') ? apiCode : API_CODES[apiCode] ?? `SKYTALE_API_${apiCode.toUpperCase()}`
  const message = json?.error?.message ?? `HTTP ${res.status}`
  throw toSkytaleError({ code, message: `API server: ${message}` })
}

// ---------------------------------------------------------------------------------------------
// commands

async function cmdDev({ values }) {
  const { startDevStack } = require('../lib/dev.js')
  const port = (name) => intOption(values, name)
  const root = values.root ?? './.skytale'
  note('starting the local stack…')
  const stack = await startDevStack({
    root,
    cluster: port('cluster'),
    apiPort: port('api-port'),
    relayPort: port('relay-port'),
    relayHttpPort: port('relay-http-port'),
    quiet: !values.verbose,
  })
  let stopping = false
  const stop = async (why, code) => {
    if (stopping) return
    stopping = true
    note(`\n${why}: stopping the API server and the relay${stack.relays.length > 1 ? ' cluster' : ''}…`)
    await stack.stop()
    note('stopped')
    process.exit(code)
  }
  process.on('SIGINT', () => stop('SIGINT', 0))
  process.on('SIGTERM', () => stop('SIGTERM', 0))
  stack.exited.then(async ({ which, node, code, signal }) => {
    // Ctrl-C reaches the children too (same process group): let our own SIGINT handler win.
    await new Promise((r) => setTimeout(r, 200))
    if (!stopping) {
      const what = which === 'api' ? 'API server' : which === 'nats' ? `nats-server ${node}` : node ? `relay ${node}` : 'relay'
      note(`error [SKYTALE_DEV_STACK]: the ${what} exited (${code ?? signal}); see ${stack.logDir}`)
      stop('failure', 1)
    }
  })
  note(`Skytale dev stack is running (data in ${stack.root}, logs in ${stack.logDir})`)
  note(`  API server  ${stack.apiUrl}`)
  if (stack.relays.length > 1) {
    stack.relays.forEach((r, i) => note(`  relay ${i + 1}     ${r}  (${stack.relayHttps[i]}/health)`))
    note(`  NATS        ${stack.natsUrls.join(',')}  (JetStream, ${stack.natsUrls.length} nodes)`)
  } else {
    note(`  relay       ${stack.relay}`)
    note(`  relay HTTP  ${stack.relayHttp}/health`)
  }
  note(`  account     org "dev" — DEV ONLY: its API key and a dev keystore key are kept in clear in ${stack.devFile}`)
  note('')
  note('Export these in another shell (channels of this account are dev/<namespace>/<service>):')
  for (const [k, v] of Object.entries(stack.env)) say(`export ${k}=${v}`)
  note('')
  note('Press Ctrl-C to stop.')
  // Stay alive until a signal arrives.
  await new Promise(() => {})
}

async function cmdSignup({ values, cfg }) {
  for (const f of ['email', 'name', 'org']) if (!values[f]) throw cliError(`--${f} is required (see skytale signup --help)`)
  const res = await api(cfg, 'POST', '/v1/accounts', { body: { email: values.email, name: values.name, org: values.org }, auth: false })
  note(`account ${res.account.id} created (org ${res.account.org}, ${res.account.email})`)
  note('API key — shown once, store it now (e.g. export SKYTALE_API_KEY=…):')
  say(res.apiKey)
}

async function cmdKeys({ positionals, values, cfg }) {
  const [sub, arg] = positionals
  if (sub === 'create') {
    if (arg !== undefined) throw cliError('usage: skytale keys create [--name NAME] [--agent IDENTITY]')
    const body = { name: values.name ?? 'cli', ...(values.agent ? { identity: values.agent } : {}) }
    const res = await api(cfg, 'POST', '/v1/keys', { body })
    const role = res.identity ? `agent key of ${res.identity}` : 'admin key'
    note(`key ${res.id} (${res.name}, ${role}, prefix ${res.prefix}) created — shown once, store it now:`)
    say(res.key)
  } else if (sub === 'list') {
    if (arg !== undefined) throw cliError('usage: skytale keys list')
    const { keys } = await api(cfg, 'GET', '/v1/keys')
    const rows = [['ID', 'NAME', 'ROLE', 'AGENT', 'PREFIX', 'CREATED', 'LAST USED'], ...keys.map((k) => [k.id, k.name, k.role ?? 'admin', k.identity ?? '-', k.prefix, k.createdAt, k.lastUsedAt ?? '-'])]
    const widths = rows[0].map((_, i) => Math.max(...rows.map((r) => String(r[i]).length)))
    for (const r of rows) say(r.map((c, i) => String(c).padEnd(widths[i])).join('  ').trimEnd())
  } else if (sub === 'revoke') {
    if (!arg) throw cliError('usage: skytale keys revoke <id>')
    await api(cfg, 'DELETE', `/v1/keys/${encodeURIComponent(arg)}`)
    say(`revoked ${arg}`)
  } else {
    throw cliError(`unknown keys subcommand ${JSON.stringify(sub ?? '')}: use create, list or revoke`)
  }
}

async function cmdToken({ cfg }) {
  const res = await api(cfg, 'POST', '/v1/tokens', { body: { identity: cfg.identity } })
  note(`relay token valid until ${res.expiresAt}${res.relay ? ` (relay ${res.relay})` : ''}`)
  say(res.token)
}

/** Runs `fn(manager)` with a connected SkytaleChannelManager, then closes it. */
async function withManager(cfg, fn) {
  const { SkytaleChannelManager } = require('../lib/index.js')
  const mgr = new SkytaleChannelManager({
    identity: cfg.identity,
    apiKey: cfg.apiKey,
    apiUrl: cfg.apiUrl,
    relay: cfg.relay,
    dataDir: cfg.dataDir,
    keystoreKey: cfg.keystoreKey,
    passphrase: cfg.passphrase,
  })
  mgr.on('error', () => {}) // background errors: the command's own call reports what matters
  try {
    await mgr.ready()
    return await fn(mgr)
  } finally {
    await mgr.close()
  }
}

function onSignals(ac) {
  const abort = () => ac.abort()
  process.once('SIGINT', abort)
  process.once('SIGTERM', abort)
}

async function cmdCreate({ positionals: [channel], cfg }) {
  await withManager(cfg, async (mgr) => {
    await mgr.create(channel)
    say(`created ${channel} (member: ${cfg.identity})`)
  })
}

async function cmdSend({ positionals: [channel, text], cfg }) {
  await withManager(cfg, async (mgr) => {
    const seq = await mgr.send(channel, text)
    say(`sent seq ${seq}`)
  })
}

async function cmdListen({ positionals: [channel], values, cfg }) {
  const ac = new AbortController()
  onSignals(ac)
  await withManager(cfg, async (mgr) => {
    if (!values.json) {
      mgr.on('member-joined', (e) => { if (e.channel === channel) say(`* ${e.identity} joined (added by ${e.by})`) })
      mgr.on('member-left', (e) => { if (e.channel === channel) say(`* ${e.identity} left (removed by ${e.by})`) })
    }
    note(`listening on ${channel} as ${cfg.identity} (Ctrl-C to stop)`)
    for await (const m of mgr.messages(channel, { signal: ac.signal })) {
      if (values.json) say(JSON.stringify({ channel, seq: m.seq, sender: m.sender, epoch: m.epoch, text: m.text }))
      else say(`[${m.seq}] ${m.sender}: ${m.text}`)
    }
  })
}

async function cmdInvite({ positionals: [channel], values, cfg }) {
  const maxUses = intOption(values, 'max-uses', { min: 1 }) ?? 1
  const ttlSeconds = intOption(values, 'ttl', { min: 1 }) ?? 3600
  await withManager(cfg, async (mgr) => {
    const token = await mgr.invite(channel, { maxUses, ttlSeconds })
    note(`invite for ${channel}: ${maxUses} use(s), valid ${ttlSeconds} s — join with: skytale join ${channel} <token>`)
    say(token)
  })
}

async function cmdInvites({ positionals: [channel], cfg }) {
  await withManager(cfg, async (mgr) => {
    for (const i of await mgr.invites(channel)) {
      const state = i.revoked ? 'revoked' : i.used.length >= i.maxUses ? 'used up' : 'live'
      say(`${i.id}  by ${i.createdBy}  ${i.used.length}/${i.maxUses} used  expires ${new Date(i.expiresAt * 1000).toISOString()}  ${state}`)
    }
  })
}

async function cmdRevokeInvite({ positionals: [channel, id], cfg }) {
  await withManager(cfg, async (mgr) => {
    await mgr.revokeInvite(channel, id)
    note(`revoked the invite in ${channel}`)
  })
}

async function cmdRoles({ positionals: [channel], cfg }) {
  await withManager(cfg, async (mgr) => {
    for (const r of await mgr.roles(channel)) say(`${r.identity}  ${r.role}`)
  })
}

async function cmdSetRole({ positionals: [channel, identity, role], cfg }) {
  await withManager(cfg, async (mgr) => {
    await mgr.setRole(channel, identity, role)
    note(`${identity} is now ${role} in ${channel}`)
  })
}

async function cmdJoin({ positionals: [channel, token], values, cfg }) {
  const timeoutMs = intOption(values, 'timeout', { min: 1 }) ?? 60_000
  const ac = new AbortController()
  onSignals(ac)
  await withManager(cfg, async (mgr) => {
    await mgr.joinWithToken(channel, token, { timeoutMs, signal: ac.signal })
    say(`joined ${channel} as ${cfg.identity}`)
  })
}

async function cmdMembers({ positionals: [channel], values, cfg }) {
  await withManager(cfg, async (mgr) => {
    if (values.fingerprints) {
      const fps = await mgr.memberFingerprints(channel)
      for (const [m, fp] of Object.entries(fps).sort()) say(`${m}  ${fp}${m === cfg.identity ? '  (you)' : ''}`)
    } else {
      for (const m of await mgr.members(channel)) say(m)
    }
  })
}

async function cmdChannels({ cfg }) {
  await withManager(cfg, async (mgr) => {
    for (const c of mgr.channels()) say(c)
  })
}

function withTimeout(promise, ms, what) {
  let timer
  return Promise.race([
    promise.finally(() => clearTimeout(timer)),
    new Promise((_, reject) => {
      timer = setTimeout(() => reject(Object.assign(new Error(`${what} did not answer within ${ms} ms`), { code: 'SKYTALE_TIMEOUT' })), ms)
    }),
  ])
}

/**
 * Runs a server as a child with our stdio, forwarding SIGINT/SIGTERM; exits with its status.
 * @param {string} what
 * @param {{ path: string, source: string }[]} candidates
 * @param {(file: string) => [string, string[]]} command
 * @param {string[]} args
 * @param {string} hint
 */
async function runServer(what, candidates, command, args, hint) {
  const found = candidates.find((c) => existsSync(c.path))
  if (args[0] === '--which') {
    if (!found) throw cliError(`${what} not found (looked at ${candidates.map((c) => c.path).join(', ')}): ${hint}`, 'SKYTALE_NOT_FOUND')
    say(`${found.path}\t${found.source}`)
    return
  }
  if (!found) throw cliError(`${what} not found (looked at ${candidates.map((c) => c.path).join(', ')}): ${hint}`, 'SKYTALE_NOT_FOUND')
  const { spawn } = require('node:child_process')
  const [cmd, cmdArgs] = command(found.path)
  const child = spawn(cmd, [...cmdArgs, ...args.filter((a, i) => !(a === '--' && i === 0))], { stdio: 'inherit' })
  for (const sig of /** @type {const} */ (['SIGINT', 'SIGTERM'])) process.on(sig, () => { try { child.kill(sig) } catch {} })
  await new Promise((resolve, reject) => {
    child.once('error', (e) => reject(cliError(`${what} could not be started: ${e.message}`, 'SKYTALE_INTERNAL')))
    child.once('exit', (code, signal) => { process.exitCode = code ?? (signal ? 1 : 0); resolve(undefined) })
  })
}

async function cmdRelay({ positionals }) {
  const { relayCandidates, INSTALL_HINT } = require('../lib/binaries.js')
  await runServer('relay binary', relayCandidates(), (file) => [file, []], positionals, INSTALL_HINT.relay)
}

async function cmdApi({ positionals }) {
  const { apiServerCandidates, INSTALL_HINT } = require('../lib/binaries.js')
  await runServer('API server', apiServerCandidates(), (file) => [process.execPath, [file]], positionals, INSTALL_HINT.api)
}

async function cmdDoctor({ values, cfg }) {
  const native = require('../lib/index.js')
  const problems = []
  const line = (ok, what, text) => {
    say(`  ${ok ? 'ok  ' : 'FAIL'}  ${what.padEnd(10)}  ${text}`)
    if (!ok) problems.push(what)
  }
  const warn = (what, text) => say(`  warn  ${what.padEnd(10)}  ${text}`)
  const errText = (e) => `${e?.message ?? e} [${e?.code ?? 'SKYTALE_INTERNAL'}]`
  say(`skytale doctor — identity ${cfg.identity}, API server ${cfg.apiUrl}`)

  // 1. API server
  let apiUp = false
  try {
    const health = await api(cfg, 'GET', '/health', { auth: false })
    apiUp = health?.status === 'ok'
    line(apiUp, 'API server', apiUp ? `${cfg.apiUrl} is up (database ${health.database})` : `${cfg.apiUrl}/health answered ${JSON.stringify(health)}`)
  } catch (e) {
    line(false, 'API server', `${errText(e)} — is it running? (skytale dev, or set SKYTALE_API_URL / --api-url)`)
  }

  // 2. API key → token
  let relayAddress = cfg.relay
  let keyOk = false
  if (!cfg.apiKey) {
    line(false, 'API key', 'not set: export SKYTALE_API_KEY (from skytale signup, skytale keys create or skytale dev)')
  } else if (!apiUp) {
    line(false, 'API key', 'not checked: the API server is not reachable')
  } else {
    try {
      const res = await api(cfg, 'POST', '/v1/tokens', { body: { identity: cfg.identity } })
      keyOk = true
      line(true, 'API key', `accepted: got a relay token for ${cfg.identity} valid until ${res.expiresAt}`)
      relayAddress ??= res.relay ?? undefined
    } catch (e) {
      if (e.code === 'SKYTALE_AGENT_NOT_REGISTERED') {
        keyOk = true
        line(true, 'API key', `accepted (agent ${cfg.identity} is not registered yet: it registers on its first connect)`)
      } else {
      const hint = e.code === 'SKYTALE_AUTH_KEY_REVOKED'
        ? 'the key was revoked: create a new one (skytale keys create) with another key of the account'
        : e.code === 'SKYTALE_AUTH_KEY_INVALID'
          ? 'the API server does not know this key: check SKYTALE_API_KEY (and that SKYTALE_API_URL is the server it came from)'
          : e.code === 'SKYTALE_AUTH_IDENTITY_FORBIDDEN'
            ? `this agent key is bound to another identity than ${cfg.identity}: set --identity / SKYTALE_IDENTITY to its identity`
            : 'could not get a token'
      line(false, 'API key', `${hint} [${e.code}]`)
      }
    }
  }

  // 3. relay /health (optional)
  const relayHttp = values['relay-http'] ?? process.env.SKYTALE_RELAY_HTTP
  if (relayHttp) {
    try {
      const res = await fetch(`${relayHttp.replace(/\/+$/, '')}/health`, { signal: AbortSignal.timeout(10_000) })
      const health = await res.json().catch(() => null)
      if (!res.ok || health?.status !== 'ok') line(false, 'relay HTTP', `${relayHttp}/health answered HTTP ${res.status}`)
      else if (relayAddress && health.address !== relayAddress) line(false, 'relay HTTP', `${relayHttp} is up but its address ${health.address} is not the configured relay ${relayAddress}`)
      else line(true, 'relay HTTP', `${relayHttp}/health ok (${health.connections} connections)`)
      relayAddress ??= health?.address
    } catch (e) {
      line(false, 'relay HTTP', `cannot reach ${relayHttp}/health (${e?.cause?.code ?? e.message})`)
    }
  }

  // 4. keystore
  const secret = cfg.keystoreKey ? { keystoreKey: cfg.keystoreKey } : cfg.passphrase ? { passphrase: cfg.passphrase } : null
  let agent = null
  const dataDir = path.resolve(cfg.dataDir)
  if (cfg.keystoreKey && !/^[0-9a-fA-F]{64}$/.test(cfg.keystoreKey)) {
    line(false, 'keystore', 'SKYTALE_KEYSTORE_KEY must be 64 hex characters (32 bytes)')
  } else if (!secret) {
    line(false, 'keystore', 'no keystore key: set SKYTALE_KEYSTORE_KEY (64 hex characters) or SKYTALE_PASSPHRASE')
  } else if (!existsSync(path.join(dataDir, 'keystore.json')) && !existsSync(path.join(dataDir, 'keystore.db'))) {
    line(true, 'keystore', `none yet at ${dataDir}: it is created on first use`)
  } else {
    try {
      const key = secret.keystoreKey ? { keystoreKey: new Uint8Array(Buffer.from(secret.keystoreKey, 'hex')) } : secret
      agent = await native.Agent.open({ dataDir, identity: cfg.identity, ...key })
      line(true, 'keystore', `${dataDir} opens with the configured key (SQLCipher ${agent.cipherVersion})`)
    } catch (e) {
      const hint = {
        SKYTALE_KEYSTORE_WRONG_KEY: 'the configured key/passphrase does not open it (it was created with another one)',
        SKYTALE_KEYSTORE_LOCKED: 'it is open in another process (e.g. a running skytale listen); that is fine if intended',
        SKYTALE_IDENTITY_MISMATCH: `it belongs to another identity than ${cfg.identity}: check --identity / --data-dir`,
        SKYTALE_KEYSTORE_CORRUPT: 'its files are damaged or missing',
      }[e.code]
      if (e.code === 'SKYTALE_KEYSTORE_LOCKED') warn('keystore', `${dataDir}: ${hint}`)
      else line(false, 'keystore', `${dataDir}: ${hint ?? errText(e)} [${e.code}]`)
    }
  }

  // 5. relay through the SDK (with the agent if its keystore opened, else a throwaway one)
  if (!keyOk) {
    line(false, 'relay', 'connection not checked: needs a working API key')
  } else if (!relayAddress) {
    line(false, 'relay', 'no relay address: set SKYTALE_RELAY (or --relay); the API server publishes none')
  } else {
    let tmp = null
    let probe = agent
    try {
      if (!probe) {
        tmp = mkdtempSync(path.join(tmpdir(), 'skytale-doctor-'))
        probe = await native.Agent.open({ dataDir: tmp, identity: `doctor-${randomBytes(4).toString('hex')}`, keystoreKey: new Uint8Array(randomBytes(32)) })
      }
      const client = await withTimeout(native.Client.connect(probe, { apiUrl: cfg.apiUrl, apiKey: cfg.apiKey, relay: relayAddress }), 20_000, 'the relay')
      line(true, 'relay', `connected to ${relayAddress}`)
      await client.close().catch(() => {})
    } catch (e) {
      line(false, 'relay', `cannot connect to ${relayAddress}: ${errText(e)} — is the relay running, and does it trust this API server's JWKS?`)
    } finally {
      probe?.close()
      if (tmp) rmSync(tmp, { recursive: true, force: true })
    }
  }
  if (agent && agent !== null) { try { agent.close() } catch {} }

  if (problems.length) {
    say(`${problems.length} problem(s) found`)
    process.exitCode = 1
  } else {
    say('everything looks fine')
  }
}

// ---------------------------------------------------------------------------------------------
// argument parsing

function splitCommand(argv) {
  // The command (and the keys subcommand) may come after global options.
  const rest = []
  let command
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]
    if (command === undefined && !a.startsWith('-')) { command = a; continue }
    rest.push(a)
    if (command === undefined && a.startsWith('--') && !a.includes('=') && GLOBAL_OPTIONS[a.slice(2)]?.type === 'string') {
      if (i + 1 < argv.length) rest.push(argv[++i])
    }
  }
  return { command, rest }
}

async function main(argv) {
  const { command, rest } = splitCommand(argv)
  if (command === undefined || command === 'help') {
    const target = command === 'help' ? rest.find((a) => !a.startsWith('-')) : undefined
    if (target && COMMANDS[target]) { say(commandHelp(target)); return }
    say(topHelp())
    if (command === undefined && !rest.some((a) => a === '--help' || a === '-h')) process.exitCode = rest.length ? 1 : 0
    return
  }
  const spec = COMMANDS[command]
  if (!spec) throw cliError(`unknown command ${JSON.stringify(command)} (see skytale --help)`)
  if (spec.passthrough) {
    // Everything after the command goes to the server as is (only --help / -h is ours).
    if (rest.length === 1 && (rest[0] === '--help' || rest[0] === '-h')) { say(commandHelp(command)); return }
    await spec.run({ positionals: rest, values: {}, cfg: undefined })
    return
  }
  let parsed
  try {
    parsed = parseArgs({ args: rest, options: { ...GLOBAL_OPTIONS, ...spec.options }, allowPositionals: true, strict: true })
  } catch (e) {
    throw cliError(`${e.message.replace(/\. To specify a positional.*$/s, '')} (see skytale ${command} --help)`)
  }
  if (/** @type {any} */ (parsed.values).help) { say(commandHelp(command)); return }
  const [min, max] = Array.isArray(spec.positionals) ? spec.positionals : [spec.positionals, spec.positionals]
  if (parsed.positionals.length < min || parsed.positionals.length > max) {
    throw cliError(`usage: ${spec.usage}`)
  }
  await spec.run({ positionals: parsed.positionals, values: parsed.values, cfg: config(parsed.values) })
}

main(process.argv.slice(2)).catch(fail)
