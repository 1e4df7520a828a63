// A Skytale agent in its own process, driven over stdin/stdout with JSON lines.
// Request: {id, op, args}; response: {id, ok, value} or {id, ok:false, code, message}.
// Bytes travel as base64 strings ({$b64: '...'}).
import { createRequire } from 'node:module'
import readline from 'node:readline'

const require = createRequire(import.meta.url)
const { Agent, Client } = require('../../lib/index.js')

const enc = (v) => {
  if (v instanceof Uint8Array) return { $b64: Buffer.from(v).toString('base64') }
  if (Array.isArray(v)) return v.map(enc)
  if (v && typeof v === 'object') return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, enc(x)]))
  return v
}
const dec = (v) => {
  if (v && typeof v === 'object' && '$b64' in v) return new Uint8Array(Buffer.from(v.$b64, 'base64'))
  if (Array.isArray(v)) return v.map(dec)
  if (v && typeof v === 'object') return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, dec(x)]))
  return v
}

let agent = null
let client = null
const ops = {
  async open({ dataDir, identity, keystoreKey, passphrase }) {
    agent = await Agent.open({ dataDir, identity, keystoreKey, passphrase })
    return { identity: agent.identity, cipherVersion: agent.cipherVersion }
  },
  generateKeyPackages: ({ count }) => agent.generateKeyPackages(count),
  async createChannel({ name }) { const ch = await agent.createChannel(name); return { name: ch.name, epoch: ch.epoch } },
  async joinChannel({ welcome }) { const ch = await agent.joinChannel(welcome); return { name: ch.name, epoch: ch.epoch } },
  addMembers: ({ channel, keyPackages }) => agent.channel(channel).addMembers(keyPackages),
  removeMembers: ({ channel, identities }) => agent.channel(channel).removeMembers(identities),
  rotateKey: ({ channel }) => agent.channel(channel).rotateKey(),
  encrypt: ({ channel, text }) => agent.channel(channel).encrypt(new TextEncoder().encode(text)),
  async processIncoming({ channel, wire }) {
    const ev = await agent.channel(channel).processIncoming(wire)
    return { ...ev, text: ev.data ? new TextDecoder().decode(ev.data) : undefined }
  },
  epoch: ({ channel }) => agent.channel(channel).epoch,
  members: ({ channel }) => agent.channel(channel).members(),
  exportSecret: ({ channel }) => agent.channel(channel).exportSecret('test', 32),
  channels: () => agent.channels(),
  async close() { await client?.close(); client = null; agent?.close(); agent = null; return true },

  // Networked client (relay + API server).
  async connect({ apiUrl, apiKey, relay }) {
    client = await Client.connect(agent, { apiUrl, apiKey, relay })
    void collectEvents(client)
    return { connected: client.connected }
  },
  async netCreateChannel({ name }) { await client.createChannel(name); return true },
  netAddMember: ({ channel, identity }) => client.addMember(channel, identity),
  netRemoveMembers: ({ channel, identities }) => client.removeMembers(channel, identities),
  netRotateKey: ({ channel }) => client.rotateKey(channel),
  async waitForChannel({ channel, timeoutMs }) { await client.waitForChannel(channel, timeoutMs ?? 30000); return true },
  netSend: ({ channel, text }) => client.channel(channel).send(new TextEncoder().encode(text)),
  /** Sends `count` messages `${prefix}${i}` one after the other; returns their seqs. */
  async netSendMany({ channel, prefix, count }) {
    const ch = client.channel(channel)
    const seqs = []
    for (let i = 0; i < count; i++) seqs.push(await ch.send(new TextEncoder().encode(`${prefix}${i}`)))
    return seqs
  },
  /** Sends `count` messages without waiting for each ack (they queue while disconnected). */
  async netSendManyConcurrent({ channel, prefix, count }) {
    const ch = client.channel(channel)
    return Promise.all(Array.from({ length: count }, (_, i) => ch.send(new TextEncoder().encode(`${prefix}${i}`))))
  },
  /** Reads messages through the async iterator until `count` application messages arrived. */
  async netReceive({ channel, count, timeoutMs = 60000 }) {
    const ch = client.channel(channel)
    const out = []
    const signal = AbortSignal.timeout(timeoutMs)
    for await (const m of ch.messages({ signal })) {
      if (m.kind === 'message') out.push({ seq: m.seq, sender: m.sender, text: new TextDecoder().decode(m.data), epoch: m.epoch })
      else out.push({ seq: m.seq, sender: m.sender, kind: m.kind, epoch: m.epoch, added: m.added, removed: m.removed })
      if (out.filter((x) => x.text !== undefined).length >= count) break
    }
    return out
  },
  netEpoch: ({ channel }) => client.channel(channel).epoch(),
  /** Receives `count` messages through the iterator while measuring this process's event-loop lag. */
  async netReceiveMeasured({ channel, count, timeoutMs = 120000 }) {
    const { monitorEventLoopDelay } = await import('node:perf_hooks')
    const h = monitorEventLoopDelay({ resolution: 1 })
    h.enable()
    const signal = AbortSignal.timeout(timeoutMs)
    let n = 0
    let lastSeq = 0
    let inOrder = true
    const t0 = performance.now()
    for await (const m of client.channel(channel).messages({ signal })) {
      if (m.kind !== 'message') continue
      if (m.seq <= lastSeq) inOrder = false
      lastSeq = m.seq
      if (++n >= count) break
    }
    h.disable()
    return { count: n, inOrder, ms: performance.now() - t0, maxLagMs: h.max / 1e6, p99LagMs: h.percentile(99) / 1e6 }
  },
  netSecret: ({ channel }) => client.channel(channel).exportSecret('test', 32),
  connected: () => client?.connected ?? false,
  exportGroupInfo: ({ channel }) => agent.channel(channel).exportGroupInfo(),
  joinUnchecked: ({ groupInfo }) => client.joinByGroupInfoUnchecked(groupInfo),
  netMembers: ({ channel }) => client.channel(channel).members(),
  fingerprint: () => agent.fingerprint,
  credential: () => agent.credential(),
  netFingerprints: ({ channel }) => client.channel(channel).memberFingerprints(),
  /** Client-wide events seen so far (collected from connect on). */
  events: () => events.splice(0),
}
const events = []
function collectEvents(c) {
  c.onEvent((ev) => { if (c === client) events.push(ev) })
}

const rl = readline.createInterface({ input: process.stdin })
rl.on('line', async (line) => {
  const { id, op, args } = JSON.parse(line)
  try {
    const value = await ops[op](dec(args ?? {}))
    process.stdout.write(JSON.stringify({ id, ok: true, value: enc(value) }) + '\n')
  } catch (e) {
    process.stdout.write(JSON.stringify({ id, ok: false, code: e?.code ?? 'UNKNOWN', message: String(e?.message ?? e) }) + '\n')
  }
})
rl.on('close', () => process.exit(0))
