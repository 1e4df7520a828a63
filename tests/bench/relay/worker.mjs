// Relay benchmark worker: one process holding one or more agents (each with its own data dir,
// keystore and Client, i.e. its own relay connection), driven over stdin/stdout with JSON lines
// like tests/helpers/agent-worker.mjs. Request: {id, op, args}; response: {id, ok, value} or
// {id, ok:false, code, message}.
//
// Timestamps are process.hrtime (CLOCK_MONOTONIC on Linux, the same clock in every process of
// the machine), in microseconds as plain numbers. The sender writes its timestamp into the
// payload; the receiver subtracts it when the decrypted message comes out of the SDK.
//
// Payload layout (little endian): u32 magic, u32 sender index, u32 message index, u32 unused,
// f64 send time (µs), then zero padding up to the requested size.
import fs from 'node:fs'
import { createRequire } from 'node:module'
import path from 'node:path'
import readline from 'node:readline'

const require = createRequire(import.meta.url)
const { Agent, Client } = require('../../../lib/index.js')

const MAGIC = 0x534b5954 // "SKYT"
const nowUs = () => Number(process.hrtime.bigint() / 1000n)
const sleep = (ms) => new Promise((r) => setTimeout(r, ms))

// Latency probes (SKYTALE_PROBE_DIR, see crates/skytale-proto/src/probe.rs): this process's own
// marks, wall clock µs like the native ones, written when a send or receive run ends.
const PROBE_DIR = process.env.SKYTALE_PROBE_DIR
const probeMarks = []
const probe = PROBE_DIR
  ? (stage) => { probeMarks.push(`${stage}\t${Math.round((performance.timeOrigin + performance.now()) * 1000)}\n`) }
  : () => {}
function flushProbe() {
  if (!PROBE_DIR || probeMarks.length === 0) return
  fs.appendFileSync(path.join(PROBE_DIR, `probe-js-${process.pid}.tsv`), probeMarks.join(''))
  probeMarks.length = 0
}

/** @type {{identity: string, agent: any, client: any}[]} */
const agents = []

function payload(size, sender, index) {
  const buf = new Uint8Array(Math.max(size, 24))
  const dv = new DataView(buf.buffer)
  dv.setUint32(0, MAGIC, true)
  dv.setUint32(4, sender, true)
  dv.setUint32(8, index, true)
  dv.setFloat64(16, nowUs(), true)
  probe('js.send')
  return buf
}

function parse(data) {
  if (!data || data.length < 24) return null
  const dv = new DataView(data.buffer, data.byteOffset, data.byteLength)
  if (dv.getUint32(0, true) !== MAGIC) return null
  return { sender: dv.getUint32(4, true), index: dv.getUint32(8, true), sentUs: dv.getFloat64(16, true) }
}

const ops = {
  /** Opens and connects agents: list of {dataDir, identity, keystoreKey (base64)}. */
  async open({ list, apiUrl, apiKey, relay }) {
    const t0 = nowUs()
    // A few at a time: each connect is a QUIC handshake + a token request + key packages.
    for (let i = 0; i < list.length; i += 5) {
      await Promise.all(list.slice(i, i + 5).map(async ({ dataDir, identity, keystoreKey }, j) => {
        const agent = await Agent.open({ dataDir, identity, keystoreKey: new Uint8Array(Buffer.from(keystoreKey, 'base64')) })
        const client = await Client.connect(agent, { apiUrl, apiKey, relay })
        agents[i + j] = { identity, agent, client } // keep the order of `list`
      }))
    }
    return { count: agents.length, ms: (nowUs() - t0) / 1000 }
  },

  /** Agent `agent` (index in this process, default 0) creates channel `name`. */
  async createChannel({ name, agent = 0 }) { await agents[agent].client.createChannel(name); return true },

  /** Agent `agent` (default 0) adds `identities` one by one; returns the time of each add (ms). */
  async addMembers({ channel, identities, agent = 0 }) {
    const times = []
    for (const id of identities) {
      const t = nowUs()
      await agents[agent].client.addMember(channel, id)
      times.push((nowUs() - t) / 1000)
    }
    return times
  },

  /** Every agent of this process waits until it is a member of `channel`. */
  async waitForChannel({ channel, timeoutMs }) {
    const t0 = nowUs()
    await Promise.all(agents.map((a) => a.client.waitForChannel(channel, timeoutMs)))
    return { ms: (nowUs() - t0) / 1000 }
  },

  /**
   * Every agent of this process reads `channel` through `ClientChannel.messages()` until it has
   * `count` benchmark messages, or `timeoutMs` passes. With `latencies`, returns every
   * receive-minus-send time (ms); always returns per-agent counts and first/last receive times.
   * The iterator is used without an AbortSignal (see the report in BENCHMARKS.md); on timeout the
   * loops are simply left behind (the coordinator ends the process).
   */
  async receive({ channel, count, timeoutMs, latencies = false }) {
    const lat = []
    const per = agents.map(() => ({ got: 0, firstUs: 0, lastUs: 0, firstSentUs: 0, outOfOrder: 0, duplicates: 0, other: 0 }))
    const loops = agents.map(async (a, i) => {
      const st = per[i]
      let lastIndex = -1
      const seen = new Set() // "sender:index"
      for await (const m of a.client.channel(channel).messages({ pollMs: 1000 })) {
        const now = nowUs()
        probe('js.recv')
        if (m.kind !== 'message') { st.other++; continue }
        const p = parse(m.data)
        if (!p) { st.other++; continue }
        if (st.got === 0) { st.firstUs = now; st.firstSentUs = p.sentUs }
        st.lastUs = now
        st.got++
        const key = `${p.sender}:${p.index}`
        if (seen.has(key)) st.duplicates++
        seen.add(key)
        // Relay order vs the order in which sender 0 called send().
        if (p.index <= lastIndex && p.sender === 0) st.outOfOrder++
        if (p.sender === 0) lastIndex = p.index
        if (latencies) lat.push((now - p.sentUs) / 1000)
        if (st.got >= count) break
      }
    })
    let timedOut = false
    await Promise.race([Promise.all(loops), sleep(timeoutMs).then(() => { timedOut = true })])
    flushProbe()
    return { per, latencies: latencies ? lat : undefined, timedOut }
  },

  /**
   * Agent 0 of this process reads every channel of `channels` through its own
   * `ClientChannel.messages()`, all at once, until it has `count` benchmark messages in all, or
   * `timeoutMs` passes. Returns the count, first/last receive times, and the messages out of
   * each sender's order and seen twice (a channel per sender: its order is the relay's).
   */
  async receiveAll({ channels, count, timeoutMs }) {
    const st = { got: 0, firstUs: 0, lastUs: 0, outOfOrder: 0, duplicates: 0, other: 0 }
    const stop = new AbortController()
    const loops = channels.map(async (channel) => {
      let lastIndex = -1
      const seen = new Set()
      for await (const m of agents[0].client.channel(channel).messages({ signal: stop.signal })) {
        const now = nowUs()
        if (m.kind !== 'message') { st.other++; continue }
        const p = parse(m.data)
        if (!p) { st.other++; continue }
        if (st.got === 0) st.firstUs = now
        st.lastUs = now
        st.got++
        if (seen.has(p.index)) st.duplicates++
        seen.add(p.index)
        if (p.index <= lastIndex) st.outOfOrder++
        lastIndex = p.index
        if (st.got >= count) stop.abort()
      }
    })
    let timedOut = false
    await Promise.race([Promise.all(loops), sleep(timeoutMs).then(() => { timedOut = true; stop.abort() })])
    return { ...st, timedOut }
  },

  /**
   * Agent `sender` (index in this process) offers `count` messages of `size` bytes at `rate`
   * msg/s: each send() is called on schedule without waiting for the previous one (the SDK
   * queues them in its outbox). Returns issue/ack timing and the worst scheduling lag.
   */
  async sendPaced({ channel, rate, count, size, sender = 0 }) {
    const ch = agents[sender].client.channel(channel)
    const acks = []
    let maxLagMs = 0
    let errors = 0
    let lastAckUs = 0
    const t0 = nowUs()
    let i = 0
    while (i < count) {
      const due = Math.min(count, Math.floor(((nowUs() - t0) / 1e6) * rate) + 1)
      while (i < due) {
        const intended = t0 + (i / rate) * 1e6
        maxLagMs = Math.max(maxLagMs, (nowUs() - intended) / 1000)
        acks.push(ch.send(payload(size, sender, i)).then(() => { lastAckUs = nowUs() }, () => { errors++ }))
        i++
      }
      if (i < count) await sleep(Math.max(0, Math.min(1, (t0 + (i / rate) * 1e6 - nowUs()) / 1000)))
    }
    const issuedUs = nowUs()
    await Promise.all(acks)
    flushProbe()
    return { startUs: t0, issuedUs, lastAckUs, errors, maxLagMs }
  },

  /**
   * Agents `senders` (indices in this process) each send `count` messages of `size` bytes as
   * fast as the SDK accepts them, with up to `window` send() calls outstanding per agent: all
   * into `channel`; with `channels`, agent `senders[i]` into `channels[i]`; with `rotate` too,
   * each agent into all of `channels` in turn (message i into `channels[i % channels.length]`).
   */
  async sendFlood({ channel, channels, rotate = false, count, size, senders = [0], window = 256, batch = 0 }) {
    const t0 = nowUs()
    let errors = 0
    const results = await Promise.all(senders.map(async (s, k) => {
      const ch = agents[s].client.channel(channels ? channels[k] : channel)
      const turns = rotate ? channels.map((c) => agents[s].client.channel(c)) : null
      let next = 0
      let lastAckUs = 0
      const lane = batch > 0
        // `batch` messages per sendMany() call, `window / batch` calls outstanding
        ? async () => {
          while (next < count) {
            const i0 = next
            next = Math.min(count, next + batch)
            const list = Array.from({ length: next - i0 }, (_, k) => payload(size, s, i0 + k))
            try { await ch.sendMany(list); lastAckUs = nowUs() } catch { errors++ }
          }
        }
        : async () => {
          while (next < count) {
            const i = next++
            try { await (turns ? turns[i % turns.length] : ch).send(payload(size, s, i)); lastAckUs = nowUs() } catch { errors++ }
          }
        }
      const lanes = batch > 0 ? Math.max(1, Math.floor(window / batch)) : window
      await Promise.all(Array.from({ length: Math.min(lanes, count) }, lane))
      return lastAckUs
    }))
    return { startUs: t0, lastAckUs: Math.max(...results), errors }
  },

  /** Closes every client and agent of this process. */
  async close() {
    await Promise.all(agents.map(async (a) => { await a.client.close(); a.agent.close() }))
    agents.length = 0
    return true
  },
}

const rl = readline.createInterface({ input: process.stdin })
rl.on('line', async (line) => {
  const { id, op, args } = JSON.parse(line)
  try {
    const value = await ops[op](args ?? {})
    process.stdout.write(JSON.stringify({ id, ok: true, value }) + '\n')
  } catch (e) {
    process.stdout.write(JSON.stringify({ id, ok: false, code: e?.code ?? 'UNKNOWN', message: String(e?.message ?? e) }) + '\n')
  }
})
rl.on('close', () => process.exit(0))
