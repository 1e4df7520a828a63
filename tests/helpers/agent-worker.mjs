// A Skytale agent in its own process, driven over stdin/stdout with JSON lines.
// Request: {id, op, args}; response: {id, ok, value} or {id, ok:false, code, message}.
// Bytes travel as base64 strings ({$b64: '...'}).
import { createRequire } from 'node:module'
import readline from 'node:readline'

const require = createRequire(import.meta.url)
const sdk = require('../../lib/index.js')
const { Agent, Client } = sdk

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
  async connect({ apiUrl, apiKey, relay, acceptWelcomes, selfUpdateIntervalSecs, rateLimitWaitSecs }) {
    client = await Client.connect(agent, {
      apiUrl,
      apiKey,
      relay,
      ...(acceptWelcomes ? { acceptWelcomes } : {}),
      ...(selfUpdateIntervalSecs !== undefined ? { selfUpdateIntervalSecs } : {}),
      ...(rateLimitWaitSecs !== undefined ? { rateLimitWaitSecs } : {}),
    })
    void collectEvents(client)
    return { connected: client.connected }
  },
  async netCreateChannel({ name, policy }) { await client.createChannel(name, policy ? { policy } : undefined); return true },
  netCreateInvite: ({ channel, maxUses = 1, ttlSeconds = 3600 }) => client.createInvite(channel, maxUses, ttlSeconds),
  async netJoinWithToken({ channel, token, timeoutMs = 30000 }) { await client.joinWithToken(channel, token, timeoutMs); return true },
  async netSetRole({ channel, identity, role }) { await client.setRole(channel, identity, role); return true },
  netRoles: ({ channel }) => client.roles(channel),
  netInvites: ({ channel }) => client.invites(channel),
  async netRevokeInvite({ channel, id }) { await client.revokeInvite(channel, id); return true },
  async netLeave({ channel }) { await client.leave(channel); return true },
  netChannels: () => client.channels(),
  netAddMember: ({ channel, identity }) => client.addMember(channel, identity),
  netRemoveMembers: ({ channel, identities }) => client.removeMembers(channel, identities),
  netRotateKey: ({ channel }) => client.rotateKey(channel),
  async waitForChannel({ channel, timeoutMs }) { await client.waitForChannel(channel, timeoutMs ?? 30000); return true },
  netSend: ({ channel, text }) => client.channel(channel).send(new TextEncoder().encode(text)),
  /** Sends `count` messages `${prefix}${i}` one after the other; returns their seqs. */
  /** Sends `count` messages one after another (each acked first), `intervalMs` apart if given. */
  async netSendMany({ channel, prefix, count, intervalMs = 0 }) {
    const ch = client.channel(channel)
    const seqs = []
    for (let i = 0; i < count; i++) {
      seqs.push(await ch.send(new TextEncoder().encode(`${prefix}${i}`)))
      if (intervalMs > 0) await new Promise((r) => setTimeout(r, intervalMs))
    }
    return seqs
  },
  /** Sends `count` messages without waiting for each ack (they queue while disconnected). */
  /**
   * `send(a)`, `sendMany([b…])`, `send(c)` without waiting in between: returns every seq in call
   * order (the list's in list order), or `{ error: { code, index } }` if the sendMany failed.
   */
  async netSendInterleaved({ channel, first, list, last }) {
    const ch = client.channel(channel)
    const enc = (t) => new TextEncoder().encode(t)
    const a = ch.send(enc(first))
    const many = ch.sendMany(list.map(enc)).then((seqs) => seqs, (e) => ({ error: { code: e.code, index: e.index, isSkytale: e instanceof sdk.SkytaleError } }))
    const c = ch.send(enc(last))
    const [sa, sm, sc] = await Promise.all([a, many, c])
    return sm.error ? sm : [sa, ...sm, sc]
  },
  /** `sendMany(texts)` on `channel`; the error's code and index if it rejects. */
  async netSendManyError({ channel, texts }) {
    try {
      await client.channel(channel).sendMany(texts.map((t) => new TextEncoder().encode(t)))
      return null
    } catch (e) {
      return { code: e.code, index: e.index, isSkytale: e instanceof sdk.SkytaleError }
    }
  },
  async netSendManyConcurrent({ channel, prefix, count }) {
    const ch = client.channel(channel)
    return Promise.all(Array.from({ length: count }, (_, i) => ch.send(new TextEncoder().encode(`${prefix}${i}`))))
  },
  /** Sends `count` messages at once, message i (`${prefix}${i}`) into `channels[i % channels.length]`; returns each one's seq. */
  async netSendRotating({ channels, prefix, count }) {
    const chs = channels.map((c) => client.channel(c))
    return Promise.all(Array.from({ length: count }, (_, i) => chs[i % chs.length].send(new TextEncoder().encode(`${prefix}${i}`))))
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
  /**
   * Like `netReceive`, with every native `ack` held back (its promise pending) until the loop
   * ended or `holdMs` passed: how many items the iterator handed over while its acks were held.
   */
  async netReceiveHoldingAcks({ channel, count, holdMs = 10000 }) {
    const ch = client.channel(channel)
    const proto = Object.getPrototypeOf(ch)
    const ack = proto.ack
    const held = []
    const release = () => { for (const r of held.splice(0)) r() }
    let whileHeld = 0
    let holding = true
    proto.ack = function heldAck(seq) {
      return new Promise((resolve, reject) => {
        const go = () => ack.call(this, seq).then(resolve, reject)
        if (holding) held.push(go)
        else go()
      })
    }
    const timer = setTimeout(() => { holding = false; release() }, holdMs)
    try {
      const texts = []
      for await (const m of ch.messages()) {
        if (m.kind !== 'message') continue
        texts.push(new TextDecoder().decode(m.data))
        if (holding) whileHeld = texts.length
        if (texts.length >= count) break
        if (holding && texts.length === count - 1) { holding = false; release() }
      }
      return { texts, whileHeld }
    } finally {
      clearTimeout(timer)
      holding = false
      release()
      proto.ack = ack
    }
  },
  /** Like `netReceive`, counting the native `ack` calls the iterator makes meanwhile. */
  async netReceiveCountingAcks({ channel, count, timeoutMs = 60000 }) {
    return countingAcks(client.channel(channel), async () => {
      const out = await ops.netReceive({ channel, count, timeoutMs })
      return { texts: out.filter((x) => x.text !== undefined).map((x) => x.text) }
    })
  },
  /**
   * Reads `count` messages through `messages()` and asks for the next one without ending the
   * iterator (so the last one read counts as handled too), counting the native `ack` calls made
   * meanwhile. The iterator stays open. Returns the texts, their seqs and the count.
   */
  async netReadAndStay({ channel, count }) {
    const ch = client.channel(channel)
    return countingAcks(ch, async () => {
      const it = ch.messages()
      const texts = []
      const seqs = []
      while (texts.length < count) {
        const { value: m } = await it.next()
        if (m.kind !== 'message') continue
        texts.push(new TextDecoder().decode(m.data))
        seqs.push(m.seq)
      }
      it.next().catch(() => {}) // the last item is handled; the iterator waits for more
      return { texts, seqs }
    })
  },
  /** The seq of the oldest item in the channel's inbox (not acknowledged yet), or 0 if none. */
  async netOldestUnacked({ channel }) {
    const m = await client.channel(channel).nextMessage(0, 0)
    return m ? m.seq : 0
  },
  netEpoch: ({ channel }) => client.channel(channel).epoch(),
  /** Reads messages until every text of `expect` arrived or `timeoutMs` passed (whichever first). */
  async netReceiveUntil({ channel, expect, timeoutMs = 60000 }) {
    const want = new Set(expect)
    const out = []
    const signal = AbortSignal.timeout(timeoutMs)
    try {
      for await (const m of client.channel(channel).messages({ signal })) {
        if (m.kind !== 'message') continue
        const text = new TextDecoder().decode(m.data)
        out.push({ seq: m.seq, sender: m.sender, text, epoch: m.epoch })
        want.delete(text)
        if (want.size === 0) break
      }
    } catch (e) { if (e?.name !== 'TimeoutError' && e?.name !== 'AbortError') throw e }
    return out
  },
  /** Epoch, epoch authenticator (hex) and fork counters of a channel. */
  async netForkState({ channel }) {
    const ch = client.channel(channel)
    const [epoch, auth, stats] = await Promise.all([ch.epoch(), ch.epochAuthenticator(), ch.stats()])
    return { epoch, auth: Buffer.from(auth).toString('hex'), ...stats }
  },
  /** Starts a send without waiting for it (its result is kept for `netSettled`). */
  netSendLater({ channel, text }) {
    const id = pendingSends.length
    pendingSends.push(client.channel(channel).send(new TextEncoder().encode(text)).then((seq) => ({ ok: true, seq }), (e) => ({ ok: false, code: e?.code })))
    return id
  },
  /** Starts a key rotation without waiting for it. */
  netRotateLater({ channel }) {
    const id = pendingSends.length
    pendingSends.push(client.rotateKey(channel).then(() => ({ ok: true }), (e) => ({ ok: false, code: e?.code })))
    return id
  },
  /** Waits for everything started with `netSendLater`/`netRotateLater`. */
  netSettled: () => Promise.all(pendingSends),
  /** Reads every message the channel delivers until none arrives for `idleMs`; returns them. */
  async netDrain({ channel, idleMs = 3000, timeoutMs = 120000 }) {
    const ch = client.channel(channel)
    const out = []
    const ac = new AbortController()
    let idle = setTimeout(() => ac.abort(), idleMs)
    const hard = setTimeout(() => ac.abort(), timeoutMs)
    try {
      for await (const m of ch.messages({ signal: ac.signal })) {
        clearTimeout(idle)
        idle = setTimeout(() => ac.abort(), idleMs)
        if (m.kind === 'message') out.push({ seq: m.seq, sender: m.sender, text: new TextDecoder().decode(m.data) })
      }
    } catch (e) {
      if (!ac.signal.aborted) throw e
    } finally {
      clearTimeout(idle)
      clearTimeout(hard)
    }
    return out
  },
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
const pendingSends = []
/** Runs `fn` while counting the native `ack` calls on `ch`'s class; adds `acks` to its result. */
async function countingAcks(ch, fn) {
  const proto = Object.getPrototypeOf(ch)
  const ack = proto.ack
  let acks = 0
  proto.ack = function countedAck(seq) { acks++; return ack.call(this, seq) }
  try {
    return { ...(await fn()), acks }
  } finally {
    proto.ack = ack
  }
}
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
