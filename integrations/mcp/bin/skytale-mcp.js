#!/usr/bin/env node
// skytale-mcp: an MCP server for one Skytale agent, over stdio (default) or Streamable HTTP.
// Configuration comes from the environment that SkytaleChannelManager reads (SKYTALE_IDENTITY,
// SKYTALE_API_KEY, SKYTALE_API_URL, SKYTALE_RELAY, SKYTALE_DATA_DIR, SKYTALE_KEYSTORE_KEY or
// SKYTALE_PASSPHRASE) plus SKYTALE_MCP_TOKEN for HTTP. stdout carries the protocol only.
import { parseArgs } from 'node:util'
import { createSkytaleContext, managerClass, serveHttp, serveStdio, VERSION } from '../src/server.js'

// Anything that logs through console.log would corrupt the stdio protocol: send it to stderr.
console.log = console.error
console.info = console.error
console.debug = console.error

const USAGE = `usage: skytale-mcp [--http HOST:PORT] [--token TOKEN] [--identity ID] [--channels a/b/c,d/e/f] [--read-only]

  (default)          MCP over stdio
  --http HOST:PORT   MCP over Streamable HTTP at http://HOST:PORT/mcp (bearer token required)
  --token TOKEN      the bearer token for HTTP (default: $SKYTALE_MCP_TOKEN)
  --identity ID      the agent identity (default: $SKYTALE_IDENTITY)
  --channels LIST    comma-separated allow-list of channel names
  --read-only        only the tools that do not change anything (receive, channels, members)

environment: SKYTALE_API_KEY, SKYTALE_API_URL, SKYTALE_RELAY, SKYTALE_DATA_DIR,
             SKYTALE_KEYSTORE_KEY (64 hex) or SKYTALE_PASSPHRASE, SKYTALE_IDENTITY, SKYTALE_MCP_TOKEN`

function fail(message, code = 2) {
  process.stderr.write(`skytale-mcp: ${message}\n`)
  process.exit(code)
}

let args
try {
  args = parseArgs({
    options: {
      http: { type: 'string' },
      token: { type: 'string' },
      identity: { type: 'string' },
      channels: { type: 'string' },
      'read-only': { type: 'boolean', default: false },
      help: { type: 'boolean', short: 'h', default: false },
      version: { type: 'boolean', short: 'v', default: false },
    },
    strict: true,
  }).values
} catch (e) {
  fail(`${e.message}\n${USAGE}`)
}
if (args.help) { process.stderr.write(`${USAGE}\n`); process.exit(0) }
if (args.version) { process.stderr.write(`${VERSION}\n`); process.exit(0) }

let http = null
if (args.http) {
  const m = /^(.*):(\d+)$/.exec(args.http)
  if (!m) fail('--http takes HOST:PORT (e.g. 127.0.0.1:8765)')
  http = { host: m[1].replace(/^\[(.*)\]$/, '$1') || '127.0.0.1', port: Number(m[2]) }
}
const token = args.token ?? process.env.SKYTALE_MCP_TOKEN
if (http && !token) fail('--http needs a bearer token: set SKYTALE_MCP_TOKEN or pass --token')

const SkytaleChannelManager = managerClass()
let manager
try {
  manager = new SkytaleChannelManager({ identity: args.identity ?? process.env.SKYTALE_IDENTITY })
} catch (e) {
  fail(`${e.code ?? 'error'}: ${e.message} (set SKYTALE_IDENTITY or pass --identity)`)
}
manager.on('error', (e) => process.stderr.write(`skytale-mcp: ${e.code}: ${e.message}\n`))

const ctx = createSkytaleContext(manager, {
  channels: args.channels ? args.channels.split(',').map((s) => s.trim()).filter(Boolean) : undefined,
  readOnly: args['read-only'],
})

let stopping = false
async function shutdown(code = 0) {
  if (stopping) return
  stopping = true
  const force = setTimeout(() => process.exit(code), 5000)
  force.unref()
  await ctx.close().catch(() => {})
  await httpHandle?.close().catch(() => {})
  await manager.close().catch(() => {})
  process.exit(code)
}
process.on('SIGINT', () => shutdown(0))
process.on('SIGTERM', () => shutdown(0))

// Connect in the background: tools wait for it; a bad configuration is reported on stderr.
manager.ready().catch((e) => process.stderr.write(`skytale-mcp: could not connect: ${e.code ?? ''} ${e.message}\n`))

let httpHandle = null
if (http) {
  try {
    httpHandle = await serveHttp(ctx, { ...http, token })
  } catch (e) {
    process.stderr.write(`skytale-mcp: ${e.message}\n`)
    await shutdown(1)
  }
  process.stderr.write(`skytale-mcp listening on ${httpHandle.url}\n`)
} else {
  await serveStdio(ctx)
  await shutdown(0)
}
