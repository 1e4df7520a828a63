// @skytale/langchain: LangChain.js tools over a SkytaleChannelManager (from @skytale/sdk).
// Every tool returns a short JSON string. A Skytale error never escapes a tool: inside an agent
// (a tool call) it comes back as a ToolMessage with status "error" whose content is
// {"error":{"code":"SKYTALE_…","message":"…"}}; called directly, that JSON string is returned.
import { tool } from '@langchain/core/tools'
import { ToolMessage } from '@langchain/core/messages'
import { z } from 'zod'

const channelArg = z.string().min(1).describe('Channel name, "org/namespace/service"')

/** Tool names, in the order skytaleTools() returns them. */
export const TOOL_NAMES = Object.freeze([
  'skytale_create_channel',
  'skytale_invite',
  'skytale_join',
  'skytale_send',
  'skytale_receive',
  'skytale_channels',
  'skytale_members',
  'skytale_remove_member',
  'skytale_leave',
])

/** Names of the tools that change state (left out with `readOnly`). */
export const MUTATING_TOOLS = Object.freeze([
  'skytale_create_channel',
  'skytale_invite',
  'skytale_join',
  'skytale_send',
  'skytale_remove_member',
  'skytale_leave',
])

/** `{ code, message }` of any error; codes are the SDK's `SKYTALE_*` codes. */
export function errorInfo(err) {
  const code = typeof err?.code === 'string' && err.code.startsWith('SKYTALE_') ? err.code
    : err?.name === 'AbortError' || err?.name === 'TimeoutError' ? 'SKYTALE_TIMEOUT'
    : 'SKYTALE_INTERNAL'
  return { code, message: String(err?.message ?? err) }
}

class ForbiddenChannel extends Error {
  constructor(channel) {
    super(`channel ${channel} is not in this agent's allow-list`)
    this.code = 'SKYTALE_FORBIDDEN_CHANNEL'
  }
}

/**
 * Reads a channel's messages ({sender, text, seq}) through `manager.messages()`: what is
 * buffered now, or, when nothing is and `timeoutMs` > 0, waits up to `timeoutMs` for the first
 * one. Stops after `max` messages or when no further message arrives within `idleMs`. Messages
 * are acknowledged only once returned (an aborted read loses nothing).
 */
export async function readMessages(manager, channel, { timeoutMs = 0, max = 100, idleMs = 150 } = {}) {
  await manager.ready()
  const ctl = new AbortController()
  const out = []
  let timer = setTimeout(() => ctl.abort(), Math.max(timeoutMs, idleMs))
  try {
    for await (const m of manager.messages(channel, { signal: ctl.signal })) {
      out.push({ sender: m.sender, text: m.text, seq: m.seq })
      if (out.length >= max) break
      clearTimeout(timer)
      timer = setTimeout(() => ctl.abort(), idleMs)
    }
  } finally {
    clearTimeout(timer)
  }
  return out
}

/**
 * LangChain tools for one Skytale agent. `channels` (an allow-list of channel names) restricts
 * every channel argument; `readOnly` leaves out the tools that change state (create, invite,
 * join, send, remove member, leave).
 *
 * @param {import('@skytale/sdk').SkytaleChannelManager} manager
 * @param {{ channels?: string[], readOnly?: boolean }} [options]
 */
export function skytaleTools(manager, { channels, readOnly = false } = {}) {
  if (!manager || typeof manager.send !== 'function') throw new TypeError('skytaleTools: a SkytaleChannelManager is required')
  const allow = channels ? new Set(channels) : null
  const check = (channel) => {
    if (allow && !allow.has(channel)) throw new ForbiddenChannel(channel)
    return channel
  }

  const make = (name, description, schema, fn) => tool(async (args, config) => {
    try {
      return JSON.stringify(await fn(args))
    } catch (err) {
      const content = JSON.stringify({ error: errorInfo(err) })
      const id = config?.toolCall?.id
      return id ? new ToolMessage({ content, tool_call_id: id, name, status: 'error' }) : content
    }
  }, { name, description, schema })

  const all = [
    make('skytale_create_channel',
      'Create a new end-to-end encrypted Skytale channel with this agent as its first member.',
      z.object({ channel: channelArg }),
      async ({ channel }) => { await manager.create(check(channel)); return { created: channel } }),
    make('skytale_invite',
      'Create an invite token (skt_inv_…) that lets another agent join a channel.',
      z.object({
        channel: channelArg,
        maxUses: z.number().int().min(1).max(1000).optional().describe('How many agents may join with it (default 1)'),
        ttlSeconds: z.number().int().min(1).max(30 * 86400).optional().describe('Validity in seconds (default 3600)'),
      }),
      async ({ channel, maxUses, ttlSeconds }) => ({ token: await manager.invite(check(channel), { maxUses, ttlSeconds }) })),
    make('skytale_join',
      'Join a channel with an invite token received from a member.',
      z.object({
        channel: channelArg,
        token: z.string().min(1).describe('Invite token skt_inv_…'),
        timeoutMs: z.number().int().min(1).max(600_000).optional().describe('How long to wait for admission (default 60000)'),
      }),
      async ({ channel, token, timeoutMs }) => { await manager.joinWithToken(check(channel), token, { timeoutMs }); return { joined: channel } }),
    make('skytale_send',
      'Send an end-to-end encrypted text message to a channel.',
      z.object({ channel: channelArg, text: z.string().describe('Message text') }),
      async ({ channel, text }) => ({ seq: await manager.send(check(channel), text) })),
    make('skytale_receive',
      'Read new messages from a channel (oldest first). With timeoutMs, wait up to that long for one to arrive.',
      z.object({
        channel: channelArg,
        timeoutMs: z.number().int().min(0).max(600_000).optional().describe('Wait up to this long for a message (default 0: do not wait)'),
        max: z.number().int().min(1).max(1000).optional().describe('At most this many messages (default 100)'),
      }),
      async ({ channel, timeoutMs, max }) => ({ messages: await readMessages(manager, check(channel), { timeoutMs, max }) })),
    make('skytale_channels',
      'List the channels this agent is a member of.',
      z.object({}),
      async () => {
        await manager.ready()
        const list = manager.channels()
        return { channels: allow ? list.filter((c) => allow.has(c)) : list }
      }),
    make('skytale_members',
      'List the identities of the members of a channel.',
      z.object({ channel: channelArg }),
      async ({ channel }) => ({ members: await manager.members(check(channel)) })),
    make('skytale_remove_member',
      'Remove a member from a channel.',
      z.object({ channel: channelArg, identity: z.string().min(1).describe('Identity of the member to remove') }),
      async ({ channel, identity }) => { await manager.remove(check(channel), identity); return { removed: identity } }),
    make('skytale_leave',
      'Leave a channel.',
      z.object({ channel: channelArg }),
      async ({ channel }) => { await manager.leave(check(channel)); return { left: channel } }),
  ]
  return readOnly ? all.filter((t) => !MUTATING_TOOLS.includes(t.name)) : all
}

export default skytaleTools
