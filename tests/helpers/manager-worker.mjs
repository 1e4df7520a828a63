// A SkytaleChannelManager in its own process, driven over stdin/stdout with JSON lines
// (same protocol as agent-worker.mjs). Emitted events are recorded for `events`.
import { createRequire } from 'node:module'
import readline from 'node:readline'

const require = createRequire(import.meta.url)
const { SkytaleChannelManager } = require('../../lib/index.js')

let mgr = null
const events = []
const ops = {
  async start(opts) {
    mgr = new SkytaleChannelManager(opts)
    for (const ev of ['member-joined', 'member-left', 'joined', 'error']) {
      mgr.on(ev, (e) => events.push({ ev, channel: e?.channel, identity: e?.identity, code: e?.code }))
    }
    await mgr.ready()
    return { identity: mgr.identity }
  },
  listen() { mgr.on('message', (m) => events.push({ ev: 'message', channel: m.channel, sender: m.sender, text: m.text, seq: m.seq })); return true },
  create: ({ channel }) => mgr.create(channel).then(() => true),
  invite: ({ channel, maxUses, ttlSeconds }) => mgr.invite(channel, { maxUses, ttlSeconds }),
  join: ({ channel, token, timeoutMs }) => mgr.joinWithToken(channel, token, { timeoutMs }).then(() => true),
  send: ({ channel, text }) => mgr.send(channel, text),
  receive: ({ channel }) => mgr.receive(channel),
  async receiveN({ channel, count, timeoutMs = 30000 }) {
    const out = []
    const signal = AbortSignal.timeout(timeoutMs)
    for await (const m of mgr.messages(channel, { signal })) {
      out.push(m.text)
      if (out.length >= count) break
    }
    return out
  },
  members: ({ channel }) => mgr.members(channel),
  remove: ({ channel, identity }) => mgr.remove(channel, identity).then(() => true),
  rotateKey: ({ channel }) => mgr.rotateKey(channel).then(() => true),
  leave: ({ channel }) => mgr.leave(channel).then(() => true),
  channels: () => mgr.channels(),
  events: () => events.splice(0),
  async close() { await mgr?.close(); return true },
}

const rl = readline.createInterface({ input: process.stdin })
rl.on('line', async (line) => {
  const { id, op, args } = JSON.parse(line)
  try {
    const value = await ops[op](args ?? {})
    process.stdout.write(JSON.stringify({ id, ok: true, value }) + '\n')
  } catch (e) {
    process.stdout.write(JSON.stringify({ id, ok: false, code: e?.code ?? 'UNKNOWN', message: String(e?.message ?? e), name: e?.name }) + '\n')
  }
})
rl.on('close', () => process.exit(0))
