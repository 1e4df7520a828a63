// End-to-end tests of a relay cluster (issue #15): three real relay nodes on a real three-node
// NATS JetStream cluster (R3 streams and KV buckets), the real API server publishing the three
// relay addresses, and each agent in its own process with the three addresses (its own node
// first). Needs `nats-server` (PATH, /usr/sbin, or NATS_SERVER_BIN).
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs'
import { createRequire } from 'node:module'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { randomBytes } from 'node:crypto'
// @ts-expect-error plain JS helper
import { startAgentProcess } from './helpers/agent-process.mjs'
// @ts-expect-error plain JS helper
import { signup, startApiServer, startRelay } from './helpers/stack.mjs'

const { startNatsCluster, freePort } = createRequire(import.meta.url)('../lib/dev-cluster.js')

type Proc = ReturnType<typeof startAgentProcess>
type Relay = Awaited<ReturnType<typeof startRelay>>
const N = 3

/** Polls `f` until it returns a truthy value (bounded). */
async function until<T>(what: string, f: () => Promise<T>, timeoutMs = 60_000): Promise<T> {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    const v = await f().catch(() => undefined)
    if (v) return v
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`)
    await new Promise((r) => setTimeout(r, 50))
  }
}

async function archived(relay: Relay): Promise<number> {
  const text = await (await fetch(`${relay.httpUrl}/metrics`)).text()
  return Number(/^skytale_relay_messages_archived_total (\d+)/m.exec(text)?.[1] ?? 0)
}

const texts = (xs: any[]) => xs.filter((x) => x.text !== undefined)

/** `p`, or after `ms` an error that says where each agent stands (events, fork counters). */
async function explained<T>(p: Promise<T>, ms: number, agents: Record<string, { p: Proc }>, channel: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(async () => {
      const report: Record<string, unknown> = {}
      for (const [name, a] of Object.entries(agents)) {
        report[name] = {
          connected: await a.p.call('connected').catch((e: Error) => e.message),
          fork: await a.p.call('netForkState', { channel }).catch((e: Error) => e.message),
          events: await a.p.call('events').catch((e: Error) => e.message),
        }
      }
      reject(new Error(`still waiting after ${ms} ms: ${JSON.stringify(report).slice(0, 6000)}`))
    }, ms)
  })
  try {
    return await Promise.race([p, late])
  } finally {
    clearTimeout(timer)
  }
}

describe('relay cluster end to end', () => {
  let root: string
  let nats: any
  let api: Awaited<ReturnType<typeof startApiServer>>
  const relays: Relay[] = []
  let apiKey: string
  const procs: Proc[] = []

  beforeAll(async () => {
    root = mkdtempSync(join(tmpdir(), 'skytale-cluster-e2e-'))
    mkdirSync(join(root, 'logs'))
    nats = await startNatsCluster({ root, nodes: N })
    // The relays first (they fetch the JWKS on the first token), so the API server can publish them.
    const apiPort = await freePort()
    for (let i = 0; i < N; i++) {
      const urls = nats.urls.slice(i).concat(nats.urls.slice(0, i))
      relays.push(await startRelay({
        dataDir: join(root, `relay-${i}`),
        jwksUrl: `http://127.0.0.1:${apiPort}/.well-known/jwks.json`,
        env: { SKYTALE_RELAY_STORE: 'nats', SKYTALE_RELAY_NATS_URL: urls.join(','), SKYTALE_RELAY_NATS_REPLICAS: '3' },
      }))
    }
    api = await startApiServer({
      dataDir: join(root, 'api'),
      env: { PORT: String(apiPort), SKYTALE_RELAY_URL: relays[0].address, SKYTALE_RELAY_URLS: relays.map((r) => r.address).join(',') },
    })
    apiKey = await signup(api.url, 'acme')
  })
  afterAll(async () => {
    await Promise.all(procs.map((p) => p.kill()))
    await Promise.all(relays.map((r) => r.kill()))
    await api?.stop()
    await nats?.stop()
    rmSync(root, { recursive: true, force: true })
  })

  /** An agent in its own process whose first relay is node `node` (then the others, in turn). */
  async function agent(name: string, node: number) {
    const identity = `${name}-${randomBytes(3).toString('hex')}`
    const p = startAgentProcess()
    procs.push(p)
    await p.call('open', { dataDir: join(root, identity), identity, keystoreKey: new Uint8Array(randomBytes(32)) })
    const list = relays.slice(node).concat(relays.slice(0, node)).map((r) => r.address)
    await p.call('connect', { apiUrl: api.url, apiKey, relay: list.join(',') })
    return { p, identity }
  }

  /** `creator` makes the channel and adds the others. */
  async function group(ch: string, creator: { p: Proc }, others: { p: Proc; identity: string }[]) {
    await creator.p.call('netCreateChannel', { name: ch })
    for (const o of others) {
      await creator.p.call('netAddMember', { channel: ch, identity: o.identity })
      await o.p.call('waitForChannel', { channel: ch, timeoutMs: 30_000 })
    }
  }

  it('agents on three nodes share a channel: 1,000 messages in one order for everyone', async () => {
    const ch = 'acme/cluster/thousand'
    const [alice, bob, carol] = [await agent('alice', 0), await agent('bob', 1), await agent('carol', 2)]
    await group(ch, alice, [bob, carol])
    const [aSeqs, bSeqs, atAlice, atBob, atCarol] = await Promise.all([
      alice.p.call('netSendMany', { channel: ch, prefix: 'a', count: 500 }),
      bob.p.call('netSendMany', { channel: ch, prefix: 'b', count: 500 }),
      alice.p.call('netReceive', { channel: ch, count: 500, timeoutMs: 120_000 }),
      bob.p.call('netReceive', { channel: ch, count: 500, timeoutMs: 120_000 }),
      carol.p.call('netReceive', { channel: ch, count: 1000, timeoutMs: 120_000 }),
    ])
    expect(new Set([...aSeqs, ...bSeqs]).size).toBe(1000)
    // carol (third node) sees all 1,000, in seq order, each once, each sender's in its order
    const all = texts(atCarol)
    expect(all.length).toBe(1000)
    const seqs = all.map((x: any) => x.seq)
    expect([...seqs].sort((x, y) => x - y)).toEqual(seqs)
    expect(new Set(seqs).size).toBe(1000)
    const order = new Map(all.map((x: any) => [x.seq, x.text]))
    expect(all.filter((x: any) => x.text.startsWith('a')).map((x: any) => x.text)).toEqual(Array.from({ length: 500 }, (_, i) => `a${i}`))
    expect(all.filter((x: any) => x.text.startsWith('b')).map((x: any) => x.text)).toEqual(Array.from({ length: 500 }, (_, i) => `b${i}`))
    // alice and bob (other nodes) see the other's 500 under the same seqs, in the same order
    for (const [got, from] of [[atAlice, 'b'], [atBob, 'a']] as const) {
      const t = texts(got)
      expect(t.map((x: any) => x.text)).toEqual(Array.from({ length: 500 }, (_, i) => `${from}${i}`))
      for (const x of t) expect(order.get(x.seq)).toBe(x.text)
    }
    expect(await carol.p.call('netReceive', { channel: ch, count: 1, timeoutMs: 1500 })).toEqual([])
  })

  it('members on three nodes commit at the same epoch at once: one order of commits, no fork', async () => {
    const ch = 'acme/cluster/race'
    const members = [await agent('dora', 0), await agent('ed', 1), await agent('flo', 2)]
    await group(ch, members[0], members.slice(1))
    const start = await members[0].p.call('netEpoch', { channel: ch })
    const results = await Promise.all(members.map((m) => m.p.call('netRotateKey', { channel: ch })))
    // each commit landed in its own epoch (the losers retried on top of the winner)
    expect(new Set(results.map((r: any) => r.epoch))).toEqual(new Set([start + 1, start + 2, start + 3]))
    for (const m of members) await until('every member at the last epoch', async () => (await m.p.call('netEpoch', { channel: ch })) === start + 3)
    const secrets = await Promise.all(members.map((m) => m.p.call('netSecret', { channel: ch })))
    expect(secrets[1]).toEqual(secrets[0])
    expect(secrets[2]).toEqual(secrets[0])
    await members[2].p.call('netSend', { channel: ch, text: 'after the race' })
    for (const m of members.slice(0, 2)) {
      expect(texts(await m.p.call('netReceive', { channel: ch, count: 1 })).map((x: any) => x.text)).toEqual(['after the race'])
    }
  })

  it('kill -9 a relay node mid-stream: its agents move to another node, 0 lost, 0 duplicated; a dead NATS node does not stop the cluster', async () => {
    const ch = 'acme/cluster/failover'
    const [gus, hal, ida] = [await agent('gus', 1), await agent('hal', 1), await agent('ida', 2)]
    await group(ch, gus, [hal, ida])
    const before = await archived(relays[1])
    // Paced (≈ 300 × 10 ms), so the kill lands mid-stream however fast the machine is.
    const sending = gus.p.call('netSendMany', { channel: ch, prefix: 'm', count: 300, intervalMs: 10 })
    const atHal = hal.p.call('netReceive', { channel: ch, count: 300, timeoutMs: 100_000 })
    const atIda = ida.p.call('netReceive', { channel: ch, count: 300, timeoutMs: 100_000 })
    // node 1 dies with SIGKILL once a third went through it
    await until('100 messages through node 1', async () => (await archived(relays[1])) >= before + 100)
    await relays[1].kill()
    // gus and hal move on (to node 2, next in their list); then a NATS node dies too
    const atNode2 = await archived(relays[2])
    await until('gus sending through node 2', async () => (await archived(relays[2])) >= atNode2 + 50)
    nats.nodes[0].child.kill('SIGKILL')
    const [seqs, hals, idas] = await explained(Promise.all([sending, atHal, atIda]), 110_000, { gus, hal, ida }, ch)
    expect(new Set(seqs).size).toBe(300)
    const want = Array.from({ length: 300 }, (_, i) => `m${i}`)
    for (const got of [hals, idas]) {
      const t = texts(got)
      expect(t.map((x: any) => x.text)).toEqual(want)
      expect(new Set(t.map((x: any) => x.seq)).size).toBe(300)
    }
    expect(await hal.p.call('netReceive', { channel: ch, count: 1, timeoutMs: 1500 })).toEqual([])
    expect(await ida.p.call('netReceive', { channel: ch, count: 1, timeoutMs: 1500 })).toEqual([])
    // and the cluster keeps serving with two NATS nodes: a new message reaches both
    await gus.p.call('netSend', { channel: ch, text: 'still here' })
    for (const m of [hal, ida]) {
      expect(texts(await m.p.call('netReceive', { channel: ch, count: 1, timeoutMs: 60_000 })).map((x: any) => x.text)).toEqual(['still here'])
    }
  }, 240_000)
})
