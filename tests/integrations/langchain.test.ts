// @skytale/langchain end to end: a LangChain agent (createAgent, scripted fakeModel, no LLM)
// drives the Skytale tools against the real API server and relay; another agent runs in its
// own Node process and talks with it.
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { createAgent } from 'langchain'
import { AIMessage, ToolMessage, type BaseMessage } from '@langchain/core/messages'
import { fakeModel } from '@langchain/core/testing'
import { SkytaleChannelManager } from '@skytale/sdk'
import { skytaleTools, TOOL_NAMES } from '@skytale/langchain'
// @ts-expect-error plain JS helper
import { startWorld } from './helpers/world.mjs'
// @ts-expect-error plain JS helper
import { waitFor } from './helpers/wait.mjs'

const toolResults = (messages: BaseMessage[]) =>
  messages.filter((m): m is ToolMessage => ToolMessage.isInstance(m)).map((m) => ({
    name: m.name, status: m.status, json: JSON.parse(String(m.content)),
  }))

describe('@skytale/langchain tools in a LangChain agent', () => {
  let world: any
  let node: any
  let mgr: SkytaleChannelManager

  beforeAll(async () => {
    world = await startWorld('langchain')
    node = world.node
    mgr = new SkytaleChannelManager(world.agentOptions('lc-agent'))
    await mgr.ready()
  })
  afterAll(async () => {
    await mgr?.close()
    await world?.stop()
  })

  it('the tool set: all nine, read-only leaves out the mutating ones', () => {
    expect(skytaleTools(mgr).map((t) => t.name)).toEqual([...TOOL_NAMES])
    expect(skytaleTools(mgr, { readOnly: true }).map((t) => t.name).sort())
      .toEqual(['skytale_channels', 'skytale_members', 'skytale_receive'])
  })

  it('joins, sends to a Node agent and receives its answer', async () => {
    const ch = 'acme/langchain/room'
    await node.call('create', { channel: ch })
    const token: string = await node.call('invite', { channel: ch, maxUses: 1, ttlSeconds: 600 })
    const model = fakeModel()
      .respondWithTools([{ name: 'skytale_join', args: { channel: ch, token, timeoutMs: 60_000 }, id: 'c1' }])
      .respondWithTools([{ name: 'skytale_members', args: { channel: ch }, id: 'c2' }])
      .respondWithTools([{ name: 'skytale_send', args: { channel: ch, text: 'hello from langchain' }, id: 'c3' }])
      .respondWithTools([{ name: 'skytale_receive', args: { channel: ch, timeoutMs: 60_000 }, id: 'c4' }])
      .respond(new AIMessage('done'))
    const agent = createAgent({ model, tools: skytaleTools(mgr) })
    const run = agent.invoke({ messages: [{ role: 'user', content: `talk on ${ch}` }] })
    // The Node agent gets what the tool sent, and answers.
    expect(await node.call('receiveN', { channel: ch, count: 1, timeoutMs: 60_000 })).toEqual(['hello from langchain'])
    await node.call('send', { channel: ch, text: 'hi from node' })
    const result = await run
    const results = toolResults(result.messages)
    expect(results.map((r) => [r.name, r.status])).toEqual([
      ['skytale_join', 'success'], ['skytale_members', 'success'], ['skytale_send', 'success'], ['skytale_receive', 'success'],
    ])
    expect(results[0].json).toEqual({ joined: ch })
    expect(results[1].json.members.sort()).toEqual(['lc-agent', 'node-agent'])
    expect(results[2].json.seq).toBeGreaterThan(0)
    expect(results[3].json.messages).toEqual([expect.objectContaining({ sender: 'node-agent', text: 'hi from node' })])
    expect(result.messages.at(-1)?.content).toBe('done')
  })

  it('creates a channel, invites (the model reads the token), removes a member, lists and leaves', async () => {
    const own = 'acme/langchain/own'
    const room = 'acme/langchain/room'
    let token = ''
    const model = fakeModel()
      .respondWithTools([{ name: 'skytale_create_channel', args: { channel: own }, id: 'd1' }])
      .respondWithTools([{ name: 'skytale_invite', args: { channel: own, maxUses: 1, ttlSeconds: 600 }, id: 'd2' }])
      .respond((messages: BaseMessage[]) => {
        token = JSON.parse(String(messages.at(-1)?.content)).token
        return new AIMessage(`invite: ${token}`)
      })
    const agent = createAgent({ model, tools: skytaleTools(mgr) })
    const first = await agent.invoke({ messages: [{ role: 'user', content: 'open a channel' }] })
    expect(toolResults(first.messages).map((r) => r.status)).toEqual(['success', 'success'])
    expect(token).toMatch(/^skt_inv_/)
    await node.call('join', { channel: own, token, timeoutMs: 60_000 })

    const model2 = fakeModel()
      .respondWithTools([{ name: 'skytale_members', args: { channel: own }, id: 'e1' }])
      .respondWithTools([{ name: 'skytale_remove_member', args: { channel: own, identity: 'node-agent' }, id: 'e2' }])
      .respondWithTools([{ name: 'skytale_leave', args: { channel: room }, id: 'e3' }])
      .respondWithTools([{ name: 'skytale_channels', args: {}, id: 'e4' }])
      .respond(new AIMessage('done'))
    const second = await createAgent({ model: model2, tools: skytaleTools(mgr) })
      .invoke({ messages: [{ role: 'user', content: 'tidy up' }] })
    const r = toolResults(second.messages)
    expect(r.map((x) => x.status)).toEqual(['success', 'success', 'success', 'success'])
    expect(r[0].json.members.sort()).toEqual(['lc-agent', 'node-agent'])
    expect(r[1].json).toEqual({ removed: 'node-agent' })
    expect(r[2].json).toEqual({ left: room })
    expect(r[3].json).toEqual({ channels: [own] })
    // The other side sees both: it was removed from `own`, and lc-agent left `room`.
    await waitFor(async () => !(await node.call('channels')).includes(own), { what: 'node-agent removed from own' })
    await waitFor(async () => (await node.call('members', { channel: room })).join() === 'node-agent', { what: 'lc-agent gone from room' })
    expect(await mgr.members(own)).toEqual(['lc-agent'])
  })

  it('errors come back as tool errors with the SKYTALE_* code; the agent carries on', async () => {
    const model = fakeModel()
      .respondWithTools([{ name: 'skytale_send', args: { channel: 'acme/langchain/nowhere', text: 'x' }, id: 'f1' }])
      .respondWithTools([{ name: 'skytale_join', args: { channel: 'acme/langchain/joinme', token: 'skt_inv_garbage', timeoutMs: 5000 }, id: 'f2' }])
      .respondWithTools([{ name: 'skytale_send', args: { channel: 'acme/langchain/own', text: 'not allowed' }, id: 'f3' }])
      .respondWithTools([{ name: 'skytale_send', args: { channel: 42 }, id: 'f4' }])
      .respond(new AIMessage('recovered'))
    // The allow-list is checked before anything reaches the SDK: `own` exists but is not allowed.
    const tools = skytaleTools(mgr, { channels: ['acme/langchain/nowhere', 'acme/langchain/joinme'] })
    const result = await createAgent({ model, tools }).invoke({ messages: [{ role: 'user', content: 'try things' }] })
    const msgs = result.messages.filter((m): m is ToolMessage => ToolMessage.isInstance(m))
    expect(msgs.map((m) => m.status)).toEqual(['error', 'error', 'error', 'error'])
    const codes = msgs.slice(0, 3).map((m) => JSON.parse(String(m.content)).error.code)
    expect(codes[0]).toMatch(/^SKYTALE_(CHANNEL_NOT_FOUND|NOT_A_MEMBER)$/)
    expect(codes[1]).toBe('SKYTALE_INVITE_INVALID')
    expect(codes[2]).toBe('SKYTALE_FORBIDDEN_CHANNEL')
    expect(String(msgs[3].content)).toMatch(/channel|text/i) // schema validation error, fed back to the model
    expect(result.messages.at(-1)?.content).toBe('recovered')
    // Called directly (no tool call), a tool returns the error JSON instead of throwing.
    const direct = await skytaleTools(mgr).find((t) => t.name === 'skytale_members')!.invoke({ channel: 'acme/langchain/nowhere' })
    expect(JSON.parse(String(direct)).error.code).toMatch(/^SKYTALE_/)
  })
})
