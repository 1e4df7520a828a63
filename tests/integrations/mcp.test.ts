// @skytale/mcp end to end: an MCP client talks to the skytale-mcp server (its own process, over
// stdio and over Streamable HTTP) backed by the real API server and relay; another agent runs in
// its own Node process.
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { spawn, type ChildProcess } from 'node:child_process'
import { join } from 'node:path'
import { randomBytes } from 'node:crypto'
import readline from 'node:readline'
import { Client } from '@modelcontextprotocol/sdk/client/index.js'
import { StdioClientTransport } from '@modelcontextprotocol/sdk/client/stdio.js'
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js'
import { ResourceUpdatedNotificationSchema, ResourceListChangedNotificationSchema } from '@modelcontextprotocol/sdk/types.js'
// @ts-expect-error plain JS helper
import { REPO } from '../helpers/stack.mjs'
// @ts-expect-error plain JS helper
import { startWorld } from './helpers/world.mjs'
// @ts-expect-error plain JS helper
import { waitFor } from './helpers/wait.mjs'

const BIN = join(REPO, 'integrations/mcp/bin/skytale-mcp.js')
const channelUri = (c: string) => `skytale://channels/${encodeURIComponent(c)}/messages`

type ToolResult = { isError?: boolean; content: Array<{ type: string; text?: string }>; structuredContent?: Record<string, any> }
const text = (r: ToolResult) => r.content.map((c) => c.text ?? '').join('')
const errorCode = (r: ToolResult) => JSON.parse(text(r)).error.code as string

describe('@skytale/mcp server', () => {
  let world: any
  let node: any
  const cleanups: Array<() => Promise<unknown>> = []
  const transportErrors: string[] = []
  const agentEnv = (identity: string): Record<string, string> => world.agentEnv(identity)

  async function stdioClient(identity: string | Record<string, string>, args: string[] = []) {
    const transport = new StdioClientTransport({
      command: process.execPath,
      args: [BIN, ...args],
      env: { PATH: process.env.PATH ?? '', ...(typeof identity === 'string' ? agentEnv(identity) : identity) },
      stderr: 'inherit',
    })
    const client = new Client({ name: 'skytale-test', version: '1.0.0' })
    // Anything but protocol on the server's stdout shows up here as a parse error.
    client.onerror = (e) => transportErrors.push(String(e))
    await client.connect(transport)
    cleanups.push(() => client.close())
    return client
  }

  beforeAll(async () => {
    world = await startWorld('mcp')
    node = world.node
  })
  afterAll(async () => {
    for (const c of cleanups.reverse()) await c().catch(() => {})
    await world?.stop()
    expect(transportErrors).toEqual([])
  })

  it('over stdio: every tool, a channel resource, resources/updated when the other agent sends', async () => {
    const client = await stdioClient('mcp-agent')
    const { tools } = await client.listTools()
    expect(tools.map((t) => t.name).sort()).toEqual([
      'skytale_channels', 'skytale_create_channel', 'skytale_invite', 'skytale_join', 'skytale_leave',
      'skytale_members', 'skytale_receive', 'skytale_remove_member', 'skytale_send',
    ])
    for (const t of tools) {
      expect(t.inputSchema.type).toBe('object')
      expect(t.outputSchema?.type).toBe('object')
    }
    const call = async (name: string, args: Record<string, unknown> = {}) => {
      const r = (await client.callTool({ name, arguments: args })) as ToolResult
      if (r.isError) throw new Error(`${name} failed: ${text(r)}`)
      expect(JSON.parse(text(r))).toEqual(r.structuredContent) // short JSON text = structured content
      return r.structuredContent!
    }
    const updated: string[] = []
    client.setNotificationHandler(ResourceUpdatedNotificationSchema, (n) => { updated.push(n.params.uri) })
    let listChanged = 0
    client.setNotificationHandler(ResourceListChangedNotificationSchema, () => { listChanged++ })

    const ch = 'acme/mcp/room'
    expect(await call('skytale_create_channel', { channel: ch })).toEqual({ created: ch })
    expect(await call('skytale_channels')).toEqual({ channels: [ch] })
    await waitFor(() => listChanged > 0, { what: 'resources/list_changed' })
    const { token } = await call('skytale_invite', { channel: ch, maxUses: 1, ttlSeconds: 600 })
    expect(token).toMatch(/^skt_inv_/)
    await node.call('join', { channel: ch, token, timeoutMs: 60_000 })
    await waitFor(async () => (await call('skytale_members', { channel: ch })).members.length === 2, { what: 'two members' })
    expect((await call('skytale_members', { channel: ch })).members.sort()).toEqual(['mcp-agent', 'node-agent'])

    // The channel as a resource: listed, readable, subscribable.
    const { resources } = await client.listResources()
    expect(resources.map((r) => r.uri)).toEqual([channelUri(ch)])
    const { resourceTemplates } = await client.listResourceTemplates()
    expect(resourceTemplates.map((t) => t.uriTemplate)).toEqual(['skytale://channels/{name}/messages'])
    await client.subscribeResource({ uri: channelUri(ch) })
    await node.call('send', { channel: ch, text: 'hello from node' })
    await waitFor(() => updated.includes(channelUri(ch)), { what: 'notifications/resources/updated' })
    const read = await client.readResource({ uri: channelUri(ch) })
    const content = JSON.parse(String((read.contents[0] as { text: string }).text))
    expect(content).toEqual({ channel: ch, messages: [expect.objectContaining({ sender: 'node-agent', text: 'hello from node' })] })

    // receive drains the unread messages; the resource keeps the recent ones.
    expect((await call('skytale_receive', { channel: ch })).messages.map((m: any) => [m.sender, m.text]))
      .toEqual([['node-agent', 'hello from node']])
    expect(await call('skytale_receive', { channel: ch })).toEqual({ messages: [] })

    // send reaches the Node agent; receive with a wait gets its answer.
    const { seq } = await call('skytale_send', { channel: ch, text: 'hi node' })
    expect(seq).toBeGreaterThan(0)
    expect(await node.call('receiveN', { channel: ch, count: 1, timeoutMs: 60_000 })).toEqual(['hi node'])
    const waiting = call('skytale_receive', { channel: ch, timeoutMs: 60_000 })
    await node.call('send', { channel: ch, text: 'answer' })
    expect((await waiting).messages.map((m: any) => m.text)).toEqual(['answer'])

    // Unsubscribed: no more notifications for this channel.
    await client.unsubscribeResource({ uri: channelUri(ch) })
    const before = updated.length
    await node.call('send', { channel: ch, text: 'quiet' })
    expect((await call('skytale_receive', { channel: ch, timeoutMs: 60_000 })).messages.map((m: any) => m.text)).toEqual(['quiet'])
    expect(updated.length).toBe(before)

    // join and leave: a channel created by the Node agent.
    const other = 'acme/mcp/other'
    await node.call('create', { channel: other })
    const t2 = await node.call('invite', { channel: other })
    expect(await call('skytale_join', { channel: other, token: t2, timeoutMs: 60_000 })).toEqual({ joined: other })
    expect((await call('skytale_channels')).channels.sort()).toEqual([ch, other].sort())
    expect(await call('skytale_leave', { channel: other })).toEqual({ left: other })
    await waitFor(async () => (await node.call('members', { channel: other })).join() === 'node-agent', { what: 'mcp-agent gone from other' })
    expect(await call('skytale_channels')).toEqual({ channels: [ch] })

    // remove_member: the Node agent is removed from the room.
    expect(await call('skytale_remove_member', { channel: ch, identity: 'node-agent' })).toEqual({ removed: 'node-agent' })
    expect(await call('skytale_members', { channel: ch })).toEqual({ members: ['mcp-agent'] })
    await waitFor(async () => (await node.call('events')).some((e: any) => e.ev === 'member-left' && e.identity === 'node-agent') ||
      !(await node.call('channels')).includes(ch), { what: 'node-agent sees its removal' })
  })

  it('one server process per call (as CrewAI does): receive loses nothing between processes, returns nothing twice', async () => {
    const env = agentEnv('mcp-oneshot')
    const ch = 'acme/mcp/oneshot'
    const once = async (name: string, args: Record<string, unknown>) => {
      const client = await stdioClient(env)
      try {
        const r = (await client.callTool({ name, arguments: args })) as ToolResult
        if (r.isError) throw new Error(`${name} failed: ${text(r)}`)
        return r.structuredContent!
      } finally {
        await client.close()
      }
    }
    await node.call('create', { channel: ch })
    const token = await node.call('invite', { channel: ch })
    expect(await once('skytale_join', { channel: ch, token, timeoutMs: 60_000 })).toEqual({ joined: ch })
    await node.call('send', { channel: ch, text: 'one' })
    await node.call('send', { channel: ch, text: 'two' })
    const got: string[] = []
    await waitFor(async () => {
      const { messages } = await once('skytale_receive', { channel: ch, timeoutMs: 5000 })
      got.push(...messages.map((m: any) => m.text))
      return got.length >= 2
    }, { what: 'both messages across server processes' })
    expect(got).toEqual(['one', 'two'])
    expect(await once('skytale_receive', { channel: ch })).toEqual({ messages: [] })
    expect(await once('skytale_send', { channel: ch, text: 'three' })).toHaveProperty('seq')
    expect(await node.call('receiveN', { channel: ch, count: 1, timeoutMs: 60_000 })).toEqual(['three'])
  })

  it('bad arguments and Skytale errors come back as MCP errors; the server keeps running', async () => {
    const client = await stdioClient('mcp-errors')
    const bad = (await client.callTool({ name: 'skytale_send', arguments: { channel: 'acme/x/y' } })) as ToolResult
    expect(bad.isError).toBe(true)
    expect(text(bad)).toMatch(/Invalid arguments for tool skytale_send/)
    const wrongType = (await client.callTool({ name: 'skytale_invite', arguments: { channel: 'acme/x/y', maxUses: 'many' } })) as ToolResult
    expect(wrongType.isError).toBe(true)
    const unknown = (await client.callTool({ name: 'skytale_nope', arguments: {} })) as ToolResult
    expect(unknown.isError).toBe(true)
    const notMember = (await client.callTool({ name: 'skytale_send', arguments: { channel: 'acme/x/y', text: 'hi' } })) as ToolResult
    expect(notMember.isError).toBe(true)
    expect(errorCode(notMember)).toMatch(/^SKYTALE_/)
    expect(errorCode(notMember)).not.toBe('SKYTALE_INTERNAL')
    const badName = (await client.callTool({ name: 'skytale_create_channel', arguments: { channel: 'no-slashes' } })) as ToolResult
    expect(badName.isError).toBe(true)
    expect(errorCode(badName)).toBe('SKYTALE_INVALID_CHANNEL_NAME')
    const badToken = (await client.callTool({ name: 'skytale_join', arguments: { channel: 'acme/x/y', token: 'skt_inv_garbage', timeoutMs: 5000 } })) as ToolResult
    expect(errorCode(badToken)).toBe('SKYTALE_INVITE_INVALID')
    await expect(client.readResource({ uri: channelUri('acme/x/y') })).rejects.toMatchObject({ code: -32602 })
    await expect(client.subscribeResource({ uri: 'skytale://elsewhere' })).rejects.toMatchObject({ code: -32602 })
    // Still alive and well.
    expect((await client.callTool({ name: 'skytale_channels', arguments: {} })).structuredContent).toEqual({ channels: [] })
  })

  it('--read-only and --channels restrict the tools and the channels', async () => {
    const client = await stdioClient('mcp-restricted', ['--read-only', '--channels', 'acme/mcp/allowed'])
    expect((await client.listTools()).tools.map((t) => t.name).sort()).toEqual(['skytale_channels', 'skytale_members', 'skytale_receive'])
    const r = (await client.callTool({ name: 'skytale_members', arguments: { channel: 'acme/mcp/room' } })) as ToolResult
    expect(r.isError).toBe(true)
    expect(errorCode(r)).toBe('SKYTALE_FORBIDDEN_CHANNEL')
    const send = (await client.callTool({ name: 'skytale_send', arguments: { channel: 'acme/mcp/allowed', text: 'x' } })) as ToolResult
    expect(send.isError).toBe(true)
  })

  describe('Streamable HTTP', () => {
    let child: ChildProcess
    let url: string
    const TOKEN = randomBytes(24).toString('base64url')

    beforeAll(async () => {
      child = spawn(process.execPath, [BIN, '--http', '127.0.0.1:0'], {
        env: { ...process.env, ...agentEnv('mcp-http'), SKYTALE_MCP_TOKEN: TOKEN },
        stdio: ['ignore', 'pipe', 'pipe'],
      })
      const exited = new Promise((resolve) => child.once('exit', resolve))
      cleanups.push(async () => { child.kill('SIGTERM'); await exited })
      let stdout = ''
      child.stdout!.on('data', (d) => { stdout += d })
      url = await new Promise<string>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error('skytale-mcp --http did not start')), 30_000)
        readline.createInterface({ input: child.stderr! }).on('line', (line) => {
          process.stderr.write(`[skytale-mcp] ${line}\n`)
          const m = /listening on (http:\/\/\S+)/.exec(line)
          if (m) { clearTimeout(timer); resolve(m[1]) }
        })
        child.once('exit', (code) => reject(new Error(`skytale-mcp exited (${code})`)))
      })
      cleanups.push(async () => expect(stdout).toBe('')) // nothing but the protocol on stdout (none over HTTP)
    })

    const initialize = { jsonrpc: '2.0', id: 1, method: 'initialize', params: { protocolVersion: '2025-06-18', capabilities: {}, clientInfo: { name: 'raw', version: '1' } } }
    const post = (headers: Record<string, string>) => fetch(url, {
      method: 'POST',
      headers: { 'content-type': 'application/json', accept: 'application/json, text/event-stream', ...headers },
      body: JSON.stringify(initialize),
    })

    it('refuses a missing or wrong bearer token with 401', async () => {
      const none = await post({})
      expect(none.status).toBe(401)
      expect(none.headers.get('www-authenticate')).toMatch(/^Bearer/)
      expect((await post({ authorization: `Bearer ${TOKEN}x` })).status).toBe(401)
      expect((await post({ authorization: 'Bearer ' })).status).toBe(401)
      expect((await post({ authorization: TOKEN })).status).toBe(401)
      const sse = await fetch(url, { headers: { accept: 'text/event-stream' } })
      expect(sse.status).toBe(401)
    })

    it('serves the tools with the right token', async () => {
      const client = new Client({ name: 'skytale-http-test', version: '1.0.0' })
      await client.connect(new StreamableHTTPClientTransport(new URL(url), { requestInit: { headers: { authorization: `Bearer ${TOKEN}` } } }))
      cleanups.push(() => client.close())
      expect((await client.listTools()).tools).toHaveLength(9)
      const r = await client.callTool({ name: 'skytale_create_channel', arguments: { channel: 'acme/mcp/http' } })
      expect(r.structuredContent).toEqual({ created: 'acme/mcp/http' })
      expect((await client.callTool({ name: 'skytale_channels', arguments: {} })).structuredContent).toEqual({ channels: ['acme/mcp/http'] })
    })

    it('will not start over HTTP without a token', async () => {
      const env = { ...process.env, ...agentEnv('mcp-notoken') }
      delete env.SKYTALE_MCP_TOKEN
      const p = spawn(process.execPath, [BIN, '--http', '127.0.0.1:0'], { env, stdio: ['ignore', 'pipe', 'pipe'] })
      let err = ''
      p.stderr!.on('data', (d) => { err += d })
      const code = await new Promise((resolve) => p.once('exit', resolve))
      expect(code).toBe(2)
      expect(err).toMatch(/SKYTALE_MCP_TOKEN/)
    })
  })
})
