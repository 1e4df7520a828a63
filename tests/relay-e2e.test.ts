// End-to-end tests of the relay path (issue: relay and SDK connection): the real API server
// (PGlite), the real relay binary, and each agent in its own process.
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { randomBytes } from 'node:crypto'
// @ts-expect-error plain JS helper
import { startAgentProcess } from './helpers/agent-process.mjs'
// @ts-expect-error plain JS helper
import { signup, startApiServer, startRelay } from './helpers/stack.mjs'

type Proc = ReturnType<typeof startAgentProcess>

describe('relay end to end', () => {
  let root: string
  let api: Awaited<ReturnType<typeof startApiServer>>
  let relay: Awaited<ReturnType<typeof startRelay>>
  let apiKey: string
  const procs: Proc[] = []
  const relayListen = `127.0.0.1:${20000 + Math.floor(Math.random() * 20000)}`

  beforeAll(async () => {
    root = mkdtempSync(join(tmpdir(), 'skytale-relay-e2e-'))
    api = await startApiServer({ dataDir: join(root, 'api') })
    relay = await startRelay({ dataDir: join(root, 'relay'), jwksUrl: `${api.url}/.well-known/jwks.json`, listen: relayListen })
    apiKey = await signup(api.url, 'acme')
  })
  afterAll(async () => {
    await Promise.all(procs.map((p) => p.kill()))
    await relay?.kill()
    await api?.stop()
    rmSync(root, { recursive: true, force: true })
  })

  const keys = new Map<string, Uint8Array>()
  async function agent(identity: string, { connect = true } = {}) {
    const p = startAgentProcess()
    procs.push(p)
    if (!keys.has(identity)) keys.set(identity, new Uint8Array(randomBytes(32)))
    await p.call('open', { dataDir: join(root, identity), identity, keystoreKey: keys.get(identity) })
    if (connect) await p.call('connect', { apiUrl: api.url, apiKey, relay: relay.address })
    return p
  }

  /** A fresh agent process `<name>-<random>` connected with `options` (default: this file's API server and relay). */
  async function fresh(name: string, options: Record<string, unknown> = {}) {
    const p = startAgentProcess()
    procs.push(p)
    const identity = `${name}-${randomBytes(3).toString('hex')}`
    await p.call('open', { dataDir: join(root, identity), identity, keystoreKey: new Uint8Array(randomBytes(32)) })
    await p.call('connect', { apiUrl: api.url, apiKey, relay: relay.address, ...options })
    return { p, identity }
  }

  async function pair(channel: string, a = 'alice', b = 'bob') {
    const alice = await agent(`${a}-${randomBytes(3).toString('hex')}`)
    const bobId = `${b}-${randomBytes(3).toString('hex')}`
    const bob = await agent(bobId)
    await alice.call('netCreateChannel', { name: channel })
    await alice.call('netAddMember', { channel, identity: bobId })
    await bob.call('waitForChannel', { channel, timeoutMs: 30_000 })
    return { alice, bob, bobId }
  }

  it('alice and bob: 1,000 messages each way, in order, exactly once; the relay stores no plaintext', async () => {
    const ch = 'acme/e2e/thousand'
    const { alice, bob } = await pair(ch)
    const marker = `PLAINTEXT-${randomBytes(6).toString('hex')}-`
    const [aSeqs, bSeqs, atBob, atAlice] = await Promise.all([
      alice.call('netSendMany', { channel: ch, prefix: `${marker}a`, count: 1000 }),
      bob.call('netSendMany', { channel: ch, prefix: `${marker}b`, count: 1000 }),
      bob.call('netReceive', { channel: ch, count: 1000, timeoutMs: 120_000 }),
      alice.call('netReceive', { channel: ch, count: 1000, timeoutMs: 120_000 }),
    ])
    expect(new Set(aSeqs).size).toBe(1000)
    expect(new Set(bSeqs).size).toBe(1000)
    const texts = (xs: any[]) => xs.filter((x) => x.text !== undefined).map((x) => x.text)
    expect(texts(atBob)).toEqual(Array.from({ length: 1000 }, (_, i) => `${marker}a${i}`))
    expect(texts(atAlice)).toEqual(Array.from({ length: 1000 }, (_, i) => `${marker}b${i}`))
    const seqs = atBob.map((x: any) => x.seq)
    expect([...seqs].sort((x, y) => x - y)).toEqual(seqs)
    // Nothing more arrives (exactly once).
    expect(await bob.call('netReceive', { channel: ch, count: 1, timeoutMs: 1500 })).toEqual([])
    for (const f of readdirSync(join(root, 'relay'))) {
      expect(readFileSync(join(root, 'relay', f)).includes(Buffer.from(marker)), f).toBe(false)
    }
  })

  it('kill -9 the relay mid-stream and restart it: both agents reconnect, every message arrives exactly once', async () => {
    const ch = 'acme/e2e/crash'
    const { alice, bob } = await pair(ch)
    const sending = alice.call('netSendMany', { channel: ch, prefix: 'a-', count: 300 })
    const sendingBack = bob.call('netSendMany', { channel: ch, prefix: 'b-', count: 100 })
    const receiving = bob.call('netReceive', { channel: ch, count: 300, timeoutMs: 120_000 })
    const receivingBack = alice.call('netReceive', { channel: ch, count: 100, timeoutMs: 120_000 })
    await new Promise((r) => setTimeout(r, 150))
    await relay.kill()
    await new Promise((r) => setTimeout(r, 500))
    const before = relay.address
    relay = await startRelay({ dataDir: join(root, 'relay'), jwksUrl: `${api.url}/.well-known/jwks.json`, listen: relayListen })
    expect(relay.address).toBe(before)
    const [seqs, got, , gotBack] = await Promise.all([sending, receiving, sendingBack, receivingBack])
    expect(new Set(seqs).size).toBe(300)
    expect(got.filter((x: any) => x.text !== undefined).map((x: any) => x.text)).toEqual(Array.from({ length: 300 }, (_, i) => `a-${i}`))
    expect(gotBack.filter((x: any) => x.text !== undefined).map((x: any) => x.text)).toEqual(Array.from({ length: 100 }, (_, i) => `b-${i}`))
    expect(await bob.call('netReceive', { channel: ch, count: 1, timeoutMs: 1500 })).toEqual([])
  })

  it('enrolled agents reconnect with their stored credential while the API server rate-limits them', async () => {
    // Its own API server allowing 2 agent registrations per IP per minute, and its own relay.
    const api2 = await startApiServer({ dataDir: join(root, 'api-limited'), env: { SKYTALE_RATE_AGENTS_PER_IP: '2' } })
    const listen = `127.0.0.1:${20000 + Math.floor(Math.random() * 20000)}`
    const jwksUrl = `${api2.url}/.well-known/jwks.json`
    let relay2 = await startRelay({ dataDir: join(root, 'relay-limited'), jwksUrl, listen })
    try {
      const key2 = await signup(api2.url, 'acme')
      const open = (name: string) => fresh(name, { apiUrl: api2.url, apiKey: key2, relay: relay2.address })
      const [ann, ben] = [await open('ann'), await open('ben')] // the minute's 2 registrations
      const ch = 'acme/e2e/limited'
      await ann.p.call('netCreateChannel', { name: ch })
      await ann.p.call('netAddMember', { channel: ch, identity: ben.identity })
      await ben.p.call('waitForChannel', { channel: ch, timeoutMs: 30_000 })
      // The relay dies; both reconnect, and re-registering now gets 429.
      await relay2.kill()
      relay2 = await startRelay({ dataDir: join(root, 'relay-limited'), jwksUrl, listen })
      // Well within the limiter's 60 s window: only a reconnect that skips the refused
      // registration gets it through in time.
      await ann.p.call('netSendLater', { channel: ch, text: 'through the rate limit' })
      const got = await ben.p.call('netReceive', { channel: ch, count: 1, timeoutMs: 20_000 })
      expect(got.map((x: any) => x.text)).toEqual(['through the rate limit'])
      expect(await ann.p.call('netSettled')).toEqual([{ ok: true, seq: expect.any(Number) }])
    } finally {
      await relay2.kill()
      await api2.stop()
    }
  })

  it('new agents starting from one address past the API server rate limit wait as it asks and connect; with no wait allowed, connect fails fast', async () => {
    // Its own API server allowing 1 agent registration per IP per minute (a swarm started on
    // one host meets the default of 120 the same way), and its own relay.
    const api3 = await startApiServer({ dataDir: join(root, 'api-swarm'), env: { SKYTALE_RATE_AGENTS_PER_IP: '1' } })
    const relay4 = await startRelay({ dataDir: join(root, 'relay-swarm'), jwksUrl: `${api3.url}/.well-known/jwks.json` })
    try {
      const key3 = await signup(api3.url, 'acme')
      const open = (name: string, options: Record<string, unknown> = {}) =>
        fresh(name, { apiUrl: api3.url, apiKey: key3, relay: relay4.address, ...options })
      const eve = await open('eve') // the minute's registration
      let t0 = Date.now()
      await expect(open('fay', { rateLimitWaitSecs: 0 })).rejects.toMatchObject({ code: 'SKYTALE_RATE_LIMITED' })
      expect(Date.now() - t0).toBeLessThan(10_000)
      // Without the wait this rejects like fay's; with it, the connect goes through once the
      // server's window allows the registration.
      t0 = Date.now()
      const gus = await open('gus')
      expect(Date.now() - t0).toBeGreaterThan(1_000)
      const ch = 'acme/e2e/swarm'
      await eve.p.call('netCreateChannel', { name: ch })
      await eve.p.call('netAddMember', { channel: ch, identity: gus.identity })
      await gus.p.call('waitForChannel', { channel: ch, timeoutMs: 30_000 })
      await eve.p.call('netSend', { channel: ch, text: 'after the wait' })
      const got = await gus.p.call('netReceive', { channel: ch, count: 1, timeoutMs: 20_000 })
      expect(got.map((x: any) => x.text)).toEqual(['after the wait'])
    } finally {
      await relay4.kill()
      await api3.stop()
    }
  })

  it('a sender flooding past the relay rate limit: every message arrives once, in call order', async () => {
    // Its own relay with a small per-identity budget: 600 concurrent sends run into it again and
    // again; sends refused with SKYTALE_RATE_LIMITED are retried, and none may overtake another.
    const listen = `127.0.0.1:${20000 + Math.floor(Math.random() * 20000)}`
    const relay3 = await startRelay({
      dataDir: join(root, 'relay-rate'),
      jwksUrl: `${api.url}/.well-known/jwks.json`,
      listen,
      env: { SKYTALE_RELAY_FRAMES_PER_SECOND: '1000', SKYTALE_RELAY_BURST: '20' },
    })
    try {
      const open = (name: string) => fresh(name, { relay: relay3.address })
      const [ann, ben] = [await open('ann'), await open('ben')]
      const ch = 'acme/e2e/rate'
      await ann.p.call('netCreateChannel', { name: ch })
      await ann.p.call('netAddMember', { channel: ch, identity: ben.identity })
      await ben.p.call('waitForChannel', { channel: ch, timeoutMs: 30_000 })
      const count = 600
      const [seqs, got] = await Promise.all([
        ann.p.call('netSendManyConcurrent', { channel: ch, prefix: 'r', count }),
        ben.p.call('netReceive', { channel: ch, count, timeoutMs: 90_000 }),
      ])
      // Relay order is call order: the acked seqs grow with the call index.
      expect([...seqs].sort((a: number, b: number) => a - b)).toEqual(seqs)
      expect(got.map((x: any) => x.text)).toEqual(Array.from({ length: count }, (_, i) => `r${i}`))
    } finally {
      await relay3.kill()
    }
  })

  it('a sender flooding three channels in turn, read at once by a member of all three: each channel gets every message once, in call order', async () => {
    // The sender encrypts a batch by channel and the receiver applies a burst by channel (one
    // keystore transaction each): neither may reorder a channel's messages or lose one.
    const [cat, dan] = [await fresh('cat'), await fresh('dan')]
    const channels = ['acme/e2e/turns-0', 'acme/e2e/turns-1', 'acme/e2e/turns-2']
    for (const ch of channels) {
      await cat.p.call('netCreateChannel', { name: ch })
      await cat.p.call('netAddMember', { channel: ch, identity: dan.identity })
      await dan.p.call('waitForChannel', { channel: ch, timeoutMs: 30_000 })
    }
    const count = 600
    const [seqs, ...got] = await Promise.all([
      cat.p.call('netSendRotating', { channels, prefix: 't', count }),
      ...channels.map((channel) => dan.p.call('netReceive', { channel, count: count / channels.length, timeoutMs: 90_000 })),
    ])
    channels.forEach((_, j) => {
      const mine = Array.from({ length: count }, (_, i) => i).filter((i) => i % channels.length === j)
      // Relay order is call order within the channel: its acked seqs grow with the call index.
      const own = mine.map((i) => seqs[i])
      expect([...own].sort((a: number, b: number) => a - b)).toEqual(own)
      expect(got[j].filter((x: any) => x.text !== undefined).map((x: any) => x.text)).toEqual(mine.map((i) => `t${i}`))
    })
  })

  it('an agent added to more channels than the key packages it published at connect keeps being added: it publishes more after each Welcome', async () => {
    // A connect publishes 10 key packages; each add uses one. Without the top-up after a
    // Welcome, the 11th add fails with SKYTALE_KEY_PACKAGE_NOT_FOUND until the agent reconnects.
    const [ivy, jon] = [await fresh('ivy'), await fresh('jon')]
    for (let i = 0; i < 16; i++) {
      const ch = `acme/e2e/many-adds-${i}`
      await ivy.p.call('netCreateChannel', { name: ch })
      await ivy.p.call('netAddMember', { channel: ch, identity: jon.identity })
      await jon.p.call('waitForChannel', { channel: ch, timeoutMs: 30_000 })
    }
    expect((await jon.p.call('netChannels')).filter((c: string) => c.startsWith('acme/e2e/many-adds-'))).toHaveLength(16)
  })

  it('a token of org B cannot touch an org-A channel; a bad API key fails fast', async () => {
    const keyB = await signup(api.url, 'other-org')
    const mallory = startAgentProcess()
    procs.push(mallory)
    await mallory.call('open', { dataDir: join(root, 'mallory'), identity: 'mallory', keystoreKey: new Uint8Array(randomBytes(32)) })
    await expect(mallory.call('connect', { apiUrl: api.url, apiKey: 'sk_live_not-a-real-key', relay: relay.address }))
      .rejects.toMatchObject({ code: 'SKYTALE_AUTH_KEY_INVALID' })
    await mallory.call('connect', { apiUrl: api.url, apiKey: keyB, relay: relay.address })
    await expect(mallory.call('netCreateChannel', { name: 'acme/e2e/stolen' })).rejects.toMatchObject({ code: 'SKYTALE_FORBIDDEN_CHANNEL' })
    await mallory.call('netCreateChannel', { name: 'other-org/e2e/own' })
    await expect(mallory.call('netAddMember', { channel: 'other-org/e2e/own', identity: 'someone-in-acme' }))
      .rejects.toMatchObject({ code: 'SKYTALE_KEY_PACKAGE_NOT_FOUND' })
  })

  // External joins without a valid invite proof: tests/authority-e2e.test.ts (never merged).

  it('500 concurrent sends are pipelined and still arrive in call order, exactly once', async () => {
    const ch = 'acme/e2e/pipelined'
    const { alice, bob } = await pair(ch)
    const [seqs, got] = await Promise.all([
      alice.call('netSendManyConcurrent', { channel: ch, prefix: 'p-', count: 500 }),
      bob.call('netReceive', { channel: ch, count: 500, timeoutMs: 60_000 }),
    ])
    expect(new Set(seqs).size).toBe(500)
    expect([...seqs].sort((a: number, b: number) => a - b)).toEqual(seqs)
    expect(got.filter((x: any) => x.text !== undefined).map((x: any) => x.text)).toEqual(Array.from({ length: 500 }, (_, i) => `p-${i}`))
  })

  it('messages(): the acks of a burst are coalesced, and everything read is acknowledged once the loop ends', async () => {
    const ch = 'acme/e2e/acks'
    const { alice, bob, bobId } = await pair(ch)
    await bob.call('close')
    await bob.stop()
    await alice.call('netSendManyConcurrent', { channel: ch, prefix: 'k-', count: 500 })
    const bob2 = await agent(bobId)
    // 500 queued items: one keystore write per item before; far fewer now
    const { texts, acks } = await bob2.call('netReceiveCountingAcks', { channel: ch, count: 500, timeoutMs: 60_000 })
    expect(texts).toEqual(Array.from({ length: 500 }, (_, i) => `k-${i}`))
    // one write, when the loop ends (each item read is only noted on the way: `ackLater`)
    expect(acks).toBe(1)
    // the loop ended: every item read is acknowledged, in this process and after a restart
    expect(await bob2.call('netReceive', { channel: ch, count: 1, timeoutMs: 1500 })).toEqual([])
    await bob2.call('close')
    await bob2.stop()
    const bob3 = await agent(bobId)
    expect(await bob3.call('netReceive', { channel: ch, count: 1, timeoutMs: 1500 })).toEqual([])
  })

  it('messages(): handled items are acknowledged without a keystore write each, and the acknowledgement is written soon without one', async () => {
    const ch = 'acme/e2e/acks-later'
    const { alice, bob, bobId } = await pair(ch)
    const count = 30
    // alice sends one at a time, so bob reads one item per delivery (an ack per item before)
    const [got] = await Promise.all([
      bob.call('netReadAndStay', { channel: ch, count }),
      (async () => { for (let i = 0; i < count; i++) await alice.call('netSend', { channel: ch, text: `l-${i}` }) })(),
    ])
    expect(got.texts).toEqual(Array.from({ length: count }, (_, i) => `l-${i}`))
    expect(got.acks).toBe(0)
    // Nothing else arrives to take the last acknowledgement along: it is written on its own.
    const last = got.seqs[count - 1]
    for (let oldest = await bob.call('netOldestUnacked', { channel: ch }); oldest !== 0;) {
      expect(oldest).toBeLessThanOrEqual(last)
      await new Promise((r) => setTimeout(r, 20))
      oldest = await bob.call('netOldestUnacked', { channel: ch })
    }
    // Written: a crash now brings nothing back.
    await bob.kill()
    const bob2 = await agent(bobId)
    expect(await bob2.call('netReceive', { channel: ch, count: 1, timeoutMs: 1500 })).toEqual([])
  })

  it('sendMany(): one call for many messages, in list order between the send() calls around it; a failure names its index', async () => {
    const ch = 'acme/e2e/send-many'
    const { alice, bob } = await pair(ch)
    const list = Array.from({ length: 150 }, (_, i) => `m-${i}`)
    const seqs = await alice.call('netSendInterleaved', { channel: ch, first: 'before', list, last: 'after' })
    expect(seqs).toHaveLength(152)
    expect([...seqs].sort((a: number, b: number) => a - b)).toEqual(seqs)
    expect(new Set(seqs).size).toBe(152)
    const got = await bob.call('netReceive', { channel: ch, count: 152, timeoutMs: 30_000 })
    expect(got.map((x: any) => x.text)).toEqual(['before', ...list, 'after'])
    expect(got.map((x: any) => x.seq)).toEqual(seqs)
    // A channel this agent does not have: refused, with the index of the first failed item.
    expect(await alice.call('netSendManyError', { channel: 'acme/e2e/not-mine', texts: ['x', 'y'] }))
      .toEqual({ code: 'SKYTALE_CHANNEL_NOT_FOUND', index: 0, isSkytale: true })
  })

  it('messages(): the next item does not wait for the acknowledgement of the last one', async () => {
    const ch = 'acme/e2e/acks-held'
    const { alice, bob } = await pair(ch)
    const count = 20
    // bob's acks never complete while he reads (held in the worker); alice sends one at a time,
    // so bob's queue runs empty between items (where the iterator used to wait for the write).
    const [got] = await Promise.all([
      bob.call('netReceiveHoldingAcks', { channel: ch, count, holdMs: 15_000 }),
      (async () => { for (let i = 0; i < count; i++) await alice.call('netSend', { channel: ch, text: `h-${i}` }) })(),
    ])
    expect(got.texts).toEqual(Array.from({ length: count }, (_, i) => `h-${i}`))
    expect(got.whileHeld).toBe(count - 1)
    // Once written, nothing read comes back.
    expect(await bob.call('netReceive', { channel: ch, count: 1, timeoutMs: 1500 })).toEqual([])
  })

  it('two members commit at the same epoch: one wins, the other retries; no fork', async () => {
    const ch = 'acme/e2e/race'
    const { alice, bob } = await pair(ch)
    const [ra, rb] = await Promise.all([
      alice.call('netRotateKey', { channel: ch }),
      bob.call('netRotateKey', { channel: ch }),
    ])
    expect(new Set([ra.epoch, rb.epoch])).toEqual(new Set([2, 3]))
    // Let each side process the other's commit.
    await alice.call('netSend', { channel: ch, text: 'sync-a' })
    await bob.call('netSend', { channel: ch, text: 'sync-b' })
    await bob.call('netReceive', { channel: ch, count: 1 })
    await alice.call('netReceive', { channel: ch, count: 1 })
    expect(await alice.call('netEpoch', { channel: ch })).toBe(3)
    expect(await bob.call('netEpoch', { channel: ch })).toBe(3)
    expect(await alice.call('netSecret', { channel: ch })).toEqual(await bob.call('netSecret', { channel: ch }))
  })

  it('alice rotates again and again while bob sends: alice reads every message (her commits merge only after what the relay ordered before them; no past epochs kept)', async () => {
    const ch = 'acme/e2e/commit-race'
    const { alice, bob } = await pair(ch)
    const count = 600
    const expected = Array.from({ length: count }, (_, i) => `race-${i}`)
    const reading = alice.call('netReceiveUntil', { channel: ch, expect: expected, timeoutMs: 60_000 })
    let sent = false
    const sending = bob.call('netSendMany', { channel: ch, prefix: 'race-', count, intervalMs: 1 }).finally(() => { sent = true })
    let rotations = 0
    while (!sent && rotations < 40) {
      await alice.call('netRotateKey', { channel: ch })
      rotations++
    }
    await sending
    const got = await reading
    expect(rotations).toBeGreaterThanOrEqual(5)
    // Without the ordering rule, messages bob sent just before a commit of alice's would be
    // undecryptable for her once she merged it (and missing here).
    expect(got.map((x: any) => x.text)).toEqual(expected)
    expect(await alice.call('netEpoch', { channel: ch })).toBe(1 + rotations)
  })

  it('bob offline while alice sends 500 messages and rotates twice: bob reads all on reconnect', async () => {
    const ch = 'acme/e2e/offline'
    const { alice, bob, bobId } = await pair(ch)
    await bob.call('close')
    await bob.stop()
    await alice.call('netSendMany', { channel: ch, prefix: 'first-', count: 250 })
    await alice.call('netRotateKey', { channel: ch })
    await alice.call('netSendMany', { channel: ch, prefix: 'second-', count: 200 })
    await alice.call('netRotateKey', { channel: ch })
    await alice.call('netSendMany', { channel: ch, prefix: 'third-', count: 50 })
    const bob2 = await agent(bobId)
    const got = await bob2.call('netReceive', { channel: ch, count: 500, timeoutMs: 120_000 })
    const texts = got.filter((x: any) => x.text !== undefined).map((x: any) => x.text)
    expect(texts).toEqual([
      ...Array.from({ length: 250 }, (_, i) => `first-${i}`),
      ...Array.from({ length: 200 }, (_, i) => `second-${i}`),
      ...Array.from({ length: 50 }, (_, i) => `third-${i}`),
    ])
    expect(got.filter((x: any) => x.kind === 'commit').map((x: any) => x.epoch)).toEqual([2, 3])
    expect(await bob2.call('netEpoch', { channel: ch })).toBe(3)
    await bob2.call('netSend', { channel: ch, text: 'bob is back' })
    const back = await alice.call('netReceive', { channel: ch, count: 1 })
    expect(back.map((x: any) => x.text)).toEqual(['bob is back'])
  })
})
