// @skytale/mcp: an MCP server exposing one Skytale agent (a SkytaleChannelManager from
// @skytale/sdk) as tools and resources, over stdio or Streamable HTTP (bearer token).
//
// Messages: skytale_receive returns new messages (see Inbox for the durable and live modes); the
// resource skytale://channels/{name}/messages ({name} = the URI-encoded channel name) holds the
// most recent ones seen, and reading it consumes nothing. A subscribed resource gets
// `notifications/resources/updated` whenever a message arrives on its channel. Nothing here
// writes to stdout: logs go to `log` (stderr).
import { randomUUID, createHash, timingSafeEqual } from 'node:crypto'
import { createServer } from 'node:http'
import { McpServer, ResourceTemplate } from '@modelcontextprotocol/sdk/server/mcp.js'
import { StdioServerTransport } from '@modelcontextprotocol/sdk/server/stdio.js'
import { StreamableHTTPServerTransport } from '@modelcontextprotocol/sdk/server/streamableHttp.js'
import {
  isInitializeRequest,
  SubscribeRequestSchema,
  UnsubscribeRequestSchema,
  McpError,
  ErrorCode,
} from '@modelcontextprotocol/sdk/types.js'
import * as sdk from '@skytale/sdk'
import { z } from 'zod'

export const VERSION = '0.1.0'
const URI_PREFIX = 'skytale://channels/'

/** The resource URI of a channel's messages. */
export function channelUri(channel) {
  return `${URI_PREFIX}${encodeURIComponent(channel)}/messages`
}

/** `{ code, message }` of any error; codes are the SDK's `SKYTALE_*` codes. */
export function errorInfo(err) {
  const code = typeof err?.code === 'string' && err.code.startsWith('SKYTALE_') ? err.code : 'SKYTALE_INTERNAL'
  return { code, message: String(err?.message ?? err) }
}

function skytaleError(message, code) {
  const Cls = sdk.SkytaleError ?? sdk.default?.SkytaleError ?? Error
  const err = new Cls(message, code)
  err.code = code
  return err
}

/**
 * A channel's messages as the tools and resources see them. Two modes:
 * - durable (the default): `take` reads through `manager.messages()`, which acknowledges only the
 *   messages it returns, so nothing is lost when the process ends. This suits clients that start
 *   one server per call (CrewAI does).
 * - live (from the first resource subscription on, for the rest of the process): the manager's
 *   `message` events fill an in-memory unread queue, so that arrivals can be announced; `take`
 *   drains that queue. Messages still unread there when the process ends are gone.
 * Either way the last `historySize` messages seen per channel are kept for resource reads.
 */
export class Inbox {
  #manager
  #live = false
  #unread = new Map()
  #history = new Map()
  #waiters = new Map()
  #observers = new Set()
  #historySize

  constructor(manager, { historySize = 100 } = {}) {
    this.#manager = manager
    this.#historySize = historySize
    this.listener = (m) => this.#arrived(m.channel, { sender: m.sender, text: m.text, seq: m.seq })
  }

  get isLive() { return this.#live }

  /** Switches to live delivery (irreversible: a `message` listener, once removed, drops messages). */
  goLive() {
    if (this.#live) return
    this.#live = true
    this.#manager.on('message', this.listener)
  }

  #remember(channel, msg) {
    const hist = this.#history.get(channel) ?? []
    hist.push(msg)
    if (hist.length > this.#historySize) hist.splice(0, hist.length - this.#historySize)
    this.#history.set(channel, hist)
  }

  #arrived(channel, msg) {
    const unread = this.#unread.get(channel) ?? []
    unread.push(msg)
    this.#unread.set(channel, unread)
    this.#remember(channel, msg)
    for (const wake of this.#waiters.get(channel) ?? []) wake()
    for (const fn of this.#observers) {
      try { fn(channel, msg) } catch {}
    }
  }

  history(channel) { return [...(this.#history.get(channel) ?? [])] }

  /** Up to `max` new messages, oldest first; waits up to `timeoutMs` when there are none. */
  async take(channel, { timeoutMs = 0, max = 100, signal } = {}) {
    const msgs = this.#live
      ? await this.#takeQueued(channel, { timeoutMs, max, signal })
      : await this.#takeDurable(channel, { timeoutMs, max, signal })
    if (!this.#live) for (const m of msgs) this.#remember(channel, m)
    return msgs
  }

  async #takeQueued(channel, { timeoutMs, max, signal }) {
    if (!(this.#unread.get(channel)?.length) && timeoutMs > 0 && !signal?.aborted) {
      await new Promise((resolve) => {
        const set = this.#waiters.get(channel) ?? new Set()
        this.#waiters.set(channel, set)
        const done = () => { clearTimeout(timer); set.delete(done); signal?.removeEventListener('abort', done); resolve() }
        const timer = setTimeout(done, timeoutMs)
        signal?.addEventListener('abort', done, { once: true })
        set.add(done)
      })
    }
    return (this.#unread.get(channel) ?? []).splice(0, max)
  }

  // What is buffered now, or the first message within timeoutMs; then more while they follow
  // within `idleMs`. Aborting the iteration acknowledges only what was returned.
  async #takeDurable(channel, { timeoutMs, max, signal, idleMs = 150 }) {
    await this.#manager.ready()
    const ctl = new AbortController()
    const stop = () => ctl.abort()
    signal?.addEventListener('abort', stop, { once: true })
    if (signal?.aborted) stop()
    const out = []
    let timer = setTimeout(stop, Math.max(timeoutMs, idleMs))
    try {
      for await (const m of this.#manager.messages(channel, { signal: ctl.signal })) {
        out.push({ sender: m.sender, text: m.text, seq: m.seq })
        if (out.length >= max) break
        clearTimeout(timer)
        timer = setTimeout(stop, idleMs)
      }
    } finally {
      clearTimeout(timer)
      signal?.removeEventListener('abort', stop)
    }
    return out
  }

  forget(channel) {
    this.#unread.delete(channel)
    this.#history.delete(channel)
  }

  onMessage(fn) {
    this.#observers.add(fn)
    return () => this.#observers.delete(fn)
  }
}

const channelArg = z.string().min(1).describe('Channel name, "org/namespace/service"')
const MUTATING = new Set(['skytale_create_channel', 'skytale_invite', 'skytale_join', 'skytale_send', 'skytale_remove_member', 'skytale_leave'])
const messageShape = z.object({ sender: z.string(), text: z.string(), seq: z.number() })

/**
 * Shared state for one agent: the manager, its inbox, the allow-list. `buildServer()` makes an
 * McpServer bound to it (one per stdio connection or HTTP session).
 */
export function createSkytaleContext(manager, { channels, readOnly = false, historySize = 100, log = (...a) => console.error(...a) } = {}) {
  const allow = channels?.length ? new Set(channels) : null
  const inbox = new Inbox(manager, { historySize })
  const servers = new Set()
  const closing = new AbortController()
  const allowed = (channel) => !allow || allow.has(channel)
  const check = (channel) => {
    if (!allowed(channel)) throw skytaleError(`channel ${channel} is not in this server's allow-list`, 'SKYTALE_FORBIDDEN_CHANNEL')
    return channel
  }
  const listChannels = () => manager.channels().filter(allowed)
  const listChanged = () => { for (const s of servers) s.sendResourceListChanged() }

  inbox.onMessage((channel) => {
    const uri = channelUri(channel)
    for (const s of servers) {
      if (s.subscriptions?.has(uri)) s.server.sendResourceUpdated({ uri }).catch((e) => log(`skytale-mcp: resources/updated failed: ${e.message}`))
    }
  })

  function buildServer() {
    const mcp = new McpServer(
      { name: 'skytale-mcp', version: VERSION },
      { capabilities: { tools: {}, resources: { subscribe: true, listChanged: true } } },
    )
    mcp.subscriptions = new Set()
    const reg = (name, description, inputSchema, outputSchema, fn) => {
      if (readOnly && MUTATING.has(name)) return
      mcp.registerTool(name, { title: name, description, inputSchema, outputSchema }, async (args, extra) => {
        try {
          const signal = extra?.signal ? AbortSignal.any([extra.signal, closing.signal]) : closing.signal
          const result = await fn(args, signal)
          return { content: [{ type: 'text', text: JSON.stringify(result) }], structuredContent: result }
        } catch (err) {
          return { content: [{ type: 'text', text: JSON.stringify({ error: errorInfo(err) }) }], isError: true }
        }
      })
    }

    reg('skytale_create_channel', 'Create a new end-to-end encrypted Skytale channel with this agent as its first member.',
      { channel: channelArg }, { created: z.string() },
      async ({ channel }) => { await manager.create(check(channel)); listChanged(); return { created: channel } })
    reg('skytale_invite', 'Create an invite token (skt_inv_…) that lets another agent join a channel.',
      {
        channel: channelArg,
        maxUses: z.number().int().min(1).max(1000).optional().describe('How many agents may join with it (default 1)'),
        ttlSeconds: z.number().int().min(1).max(30 * 86400).optional().describe('Validity in seconds (default 3600)'),
      },
      { token: z.string() },
      async ({ channel, maxUses, ttlSeconds }) => ({ token: await manager.invite(check(channel), { maxUses, ttlSeconds }) }))
    reg('skytale_join', 'Join a channel with an invite token received from a member.',
      {
        channel: channelArg,
        token: z.string().min(1).describe('Invite token skt_inv_…'),
        timeoutMs: z.number().int().min(1).max(600_000).optional().describe('How long to wait for admission (default 60000)'),
      },
      { joined: z.string() },
      async ({ channel, token, timeoutMs }) => { await manager.joinWithToken(check(channel), token, { timeoutMs }); listChanged(); return { joined: channel } })
    reg('skytale_send', 'Send an end-to-end encrypted text message to a channel.',
      { channel: channelArg, text: z.string().describe('Message text') }, { seq: z.number() },
      async ({ channel, text }) => ({ seq: await manager.send(check(channel), text) }))
    reg('skytale_receive', 'Read new messages from a channel (oldest first). With timeoutMs, wait up to that long for one to arrive.',
      {
        channel: channelArg,
        timeoutMs: z.number().int().min(0).max(600_000).optional().describe('Wait up to this long for a message (default 0: do not wait)'),
        max: z.number().int().min(1).max(1000).optional().describe('At most this many messages (default 100)'),
      },
      { messages: z.array(messageShape) },
      async ({ channel, timeoutMs, max }, signal) => {
        check(channel)
        await manager.members(channel) // fails with SKYTALE_CHANNEL_* for a channel this agent is not in
        return { messages: await inbox.take(channel, { timeoutMs, max, signal }) }
      })
    reg('skytale_channels', 'List the channels this agent is a member of.', {}, { channels: z.array(z.string()) },
      async () => { await manager.ready(); return { channels: listChannels() } })
    reg('skytale_members', 'List the identities of the members of a channel.',
      { channel: channelArg }, { members: z.array(z.string()) },
      async ({ channel }) => ({ members: await manager.members(check(channel)) }))
    reg('skytale_remove_member', 'Remove a member from a channel.',
      { channel: channelArg, identity: z.string().min(1).describe('Identity of the member to remove') }, { removed: z.string() },
      async ({ channel, identity }) => { await manager.remove(check(channel), identity); return { removed: identity } })
    reg('skytale_leave', 'Leave a channel.',
      { channel: channelArg }, { left: z.string() },
      async ({ channel }) => { await manager.leave(check(channel)); inbox.forget(channel); listChanged(); return { left: channel } })

    mcp.registerResource(
      'channel-messages',
      new ResourceTemplate(`${URI_PREFIX}{name}/messages`, {
        list: async () => {
          await manager.ready()
          return {
            resources: listChannels().map((c) => ({ uri: channelUri(c), name: c, title: `Messages of ${c}`, mimeType: 'application/json' })),
          }
        },
        complete: { name: async (value) => { await manager.ready(); return listChannels().map(encodeURIComponent).filter((c) => c.startsWith(value)) } },
      }),
      { title: 'Channel messages', description: 'The most recent messages of a Skytale channel (JSON); subscribe to be notified of new ones.', mimeType: 'application/json' },
      async (uri, { name }) => {
        const channel = decodeURIComponent(String(name))
        if (!allowed(channel)) throw new McpError(ErrorCode.InvalidParams, `channel ${channel} is not in this server's allow-list`)
        await manager.ready()
        if (!manager.channels().includes(channel)) throw new McpError(ErrorCode.InvalidParams, `not a member of channel ${channel}`)
        return { contents: [{ uri: uri.href, mimeType: 'application/json', text: JSON.stringify({ channel, messages: inbox.history(channel) }) }] }
      },
    )

    const parseChannelUri = (uri) => {
      const m = /^skytale:\/\/channels\/([^/]+)\/messages$/.exec(uri)
      if (!m) throw new McpError(ErrorCode.InvalidParams, `not a Skytale channel resource: ${uri}`)
      const channel = decodeURIComponent(m[1])
      if (!allowed(channel)) throw new McpError(ErrorCode.InvalidParams, `channel ${channel} is not in this server's allow-list`)
      return channelUri(channel)
    }
    mcp.server.setRequestHandler(SubscribeRequestSchema, async (req) => {
      mcp.subscriptions.add(parseChannelUri(req.params.uri))
      inbox.goLive()
      return {}
    })
    mcp.server.setRequestHandler(UnsubscribeRequestSchema, async (req) => { mcp.subscriptions.delete(parseChannelUri(req.params.uri)); return {} })

    servers.add(mcp)
    mcp.server.onclose = () => servers.delete(mcp)
    return mcp
  }

  return {
    manager,
    inbox,
    buildServer,
    signal: closing.signal,
    async close() {
      closing.abort()
      await Promise.all([...servers].map((s) => s.close().catch(() => {})))
    },
  }
}

/** Serves one MCP connection over stdin/stdout. Resolves when the client goes away. */
export async function serveStdio(ctx) {
  const server = ctx.buildServer()
  const transport = new StdioServerTransport()
  const closed = new Promise((resolve) => {
    transport.onclose = resolve
    process.stdin.once('end', resolve)
    process.stdin.once('close', resolve)
  })
  await server.connect(transport)
  await closed
}

function sameToken(given, expected) {
  const a = createHash('sha256').update(given).digest()
  const b = createHash('sha256').update(expected).digest()
  return timingSafeEqual(a, b)
}

function readJson(req, limit = 4 * 1024 * 1024) {
  return new Promise((resolve, reject) => {
    let size = 0
    const chunks = []
    req.on('data', (c) => {
      size += c.length
      if (size > limit) { reject(Object.assign(new Error('request body too large'), { status: 413 })); req.destroy(); return }
      chunks.push(c)
    })
    req.on('end', () => {
      try { resolve(chunks.length ? JSON.parse(Buffer.concat(chunks).toString('utf8')) : undefined) } catch { reject(Object.assign(new Error('invalid JSON'), { status: 400 })) }
    })
    req.on('error', reject)
  })
}

function sendJson(res, status, body, headers = {}) {
  res.writeHead(status, { 'content-type': 'application/json', ...headers })
  res.end(JSON.stringify(body))
}

/**
 * Serves MCP over Streamable HTTP at `http://host:port/mcp`, one session per client, every
 * request checked against the bearer `token` (missing or wrong → 401). Resolves with
 * `{ url, close() }` once listening.
 */
export async function serveHttp(ctx, { host = '127.0.0.1', port = 0, token, path = '/mcp', log = (...a) => console.error(...a) } = {}) {
  if (!token) throw skytaleError('a bearer token is required for HTTP (SKYTALE_MCP_TOKEN or --token)', 'SKYTALE_INVALID_ARGUMENT')
  const sessions = new Map()
  const httpServer = createServer(async (req, res) => {
    try {
      const url = new URL(req.url ?? '/', 'http://localhost')
      if (url.pathname !== path) return sendJson(res, 404, { error: 'not found' })
      const auth = req.headers.authorization ?? ''
      const m = /^Bearer\s+(\S+)$/i.exec(auth)
      if (!m || !sameToken(m[1], token)) {
        return sendJson(res, 401, { jsonrpc: '2.0', error: { code: -32001, message: 'unauthorized' }, id: null }, { 'www-authenticate': 'Bearer realm="skytale-mcp"' })
      }
      const sid = req.headers['mcp-session-id']
      const body = req.method === 'POST' ? await readJson(req) : undefined
      let transport = typeof sid === 'string' ? sessions.get(sid) : undefined
      if (!transport) {
        if (sid || req.method !== 'POST' || !isInitializeRequest(body)) {
          return sendJson(res, sid ? 404 : 400, { jsonrpc: '2.0', error: { code: -32000, message: sid ? 'unknown session' : 'no session: send initialize first' }, id: null })
        }
        transport = new StreamableHTTPServerTransport({
          sessionIdGenerator: () => randomUUID(),
          onsessioninitialized: (id) => { sessions.set(id, transport) },
        })
        transport.onclose = () => { if (transport.sessionId) sessions.delete(transport.sessionId) }
        await ctx.buildServer().connect(transport)
      }
      await transport.handleRequest(req, res, body)
    } catch (err) {
      log(`skytale-mcp: HTTP request failed: ${err.message}`)
      if (!res.headersSent) sendJson(res, err.status ?? 500, { jsonrpc: '2.0', error: { code: -32603, message: err.message }, id: null })
    }
  })
  await new Promise((resolve, reject) => {
    httpServer.once('error', reject)
    httpServer.listen(port, host, resolve)
  })
  const addr = httpServer.address()
  const shownHost = addr.family === 'IPv6' ? `[${addr.address}]` : addr.address
  return {
    url: `http://${shownHost}:${addr.port}${path}`,
    async close() {
      await Promise.all([...sessions.values()].map((t) => t.close().catch(() => {})))
      httpServer.closeAllConnections?.()
      await new Promise((resolve) => httpServer.close(() => resolve()))
    },
  }
}

/** The SDK's SkytaleChannelManager class (whether @skytale/sdk loads as CJS or ESM). */
export function managerClass() {
  return sdk.SkytaleChannelManager ?? sdk.default?.SkytaleChannelManager
}
