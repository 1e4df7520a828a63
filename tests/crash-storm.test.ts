// Crash storms (issue: no fork, no loss): 4 agents (6 in `npm run soak`) exchange messages while
// agents and the relay are killed with SIGKILL at random points and restarted from their data
// dirs, with rotations and membership changes in between — including a kill right after a
// commit was sent and before its Ack was seen. Afterwards: every acknowledged message delivered
// to every member exactly once, nothing undecryptable, every member in the same epoch with the
// same exported secret (no fork). Sizes: STORM_MESSAGES (default 1,200), STORM_AGENTS (4).
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { randomBytes } from 'node:crypto'
// @ts-expect-error plain JS helper
import { startAgentProcess } from './helpers/agent-process.mjs'
// @ts-expect-error plain JS helper
import { signup, startApiServer, startRelay } from './helpers/stack.mjs'

const MESSAGES = Number(process.env.STORM_MESSAGES ?? 1200)
const AGENTS = Number(process.env.STORM_AGENTS ?? 4)
const CHAOS_EVERY_MS = Number(process.env.STORM_CHAOS_MS ?? 1500)
/** How long the senders spread their messages over (the chaos runs meanwhile). */
const STORM_SECONDS = Number(process.env.STORM_SECONDS ?? 30)

/** A deterministic PRNG (seeded, printed on failure) so a failing storm can be replayed. */
function prng(seed: number) {
  let s = seed >>> 0
  return () => {
    s = (s + 0x6d2b79f5) >>> 0
    let t = s
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

async function until<T>(check: () => Promise<T>, ms: number, what: string): Promise<T> {
  const deadline = Date.now() + ms
  for (;;) {
    const v = await check().catch(() => undefined)
    if (v) return v
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`)
    await new Promise((r) => setTimeout(r, 200))
  }
}

describe('crash storm', () => {
  let root: string
  let apiSrv: Awaited<ReturnType<typeof startApiServer>>
  let relay: Awaited<ReturnType<typeof startRelay>>
  let admin: string
  const relayListen = `127.0.0.1:${20000 + Math.floor(Math.random() * 20000)}`
  const seed = Number(process.env.STORM_SEED ?? Math.floor(Math.random() * 1e9))
  const rand = prng(seed)

  beforeAll(async () => {
    root = mkdtempSync(join(tmpdir(), 'skytale-storm-'))
    apiSrv = await startApiServer({ dataDir: join(root, 'api') })
    relay = await startRelay({ dataDir: join(root, 'relay'), jwksUrl: `${apiSrv.url}/.well-known/jwks.json`, listen: relayListen })
    admin = await signup(apiSrv.url, 'acme')
  })
  afterAll(async () => {
    await relay?.kill()
    await apiSrv?.stop()
    rmSync(root, { recursive: true, force: true })
  })

  it(`${AGENTS} agents, ${MESSAGES} messages, kill -9 of agents and the relay: 0 lost, 0 twice, 0 undecryptable, 0 forks`, async () => {
    const ch = `acme/storm/${randomBytes(3).toString('hex')}`
    const ids = Array.from({ length: AGENTS }, (_, i) => `agent${i}-${randomBytes(2).toString('hex')}`)
    const keys = new Map(ids.map((id) => [id, new Uint8Array(randomBytes(32))]))
    const procs = new Map<string, ReturnType<typeof startAgentProcess>>()
    const errors: any[] = []
    const stats = { agentKills: 0, relayKills: 0, commitKills: 0, rotations: 0, adds: 0, removes: 0 }

    async function start(id: string) {
      const p = startAgentProcess()
      await p.call('open', { dataDir: join(root, id), identity: id, keystoreKey: keys.get(id) })
      await until(async () => (await p.call('connect', { apiUrl: apiSrv.url, apiKey: admin, relay: relay.address })) || true, 60_000, `${id} connects`)
      procs.set(id, p)
      return p
    }
    async function collect(id: string) {
      const p = procs.get(id)
      if (!p) return
      const evs = await p.call('events').catch(() => [])
      errors.push(...evs.filter((e: any) => e.kind === 'error' || e.code).map((e: any) => ({ id, ...e })))
    }

    // Setup: agent0 (admin) creates the channel and adds everyone; all start at the same point.
    for (const id of ids) await start(id)
    const admin0 = procs.get(ids[0])!
    await admin0.call('netCreateChannel', { name: ch })
    for (const id of ids.slice(1)) {
      await admin0.call('netAddMember', { channel: ch, identity: id })
      await procs.get(id)!.call('waitForChannel', { channel: ch })
    }
    // A spare identity that the admin adds and removes during the storm.
    const spare = `spare-${randomBytes(2).toString('hex')}`
    keys.set(spare, new Uint8Array(randomBytes(32)))
    await start(spare)
    let spareIn = false

    const acked = new Map<string, number>() // text → seq, for sends whose Ack was seen
    let sent = 0
    let stop = false
    const restarting = new Set<string>()

    const share = Math.ceil(MESSAGES / ids.length)
    const pause = (STORM_SECONDS * 1000) / Math.ceil(share / 16)
    async function sender(id: string, share: number) {
      let i = 0
      while (i < share) {
        const p = procs.get(id)
        if (!p || restarting.has(id)) { await new Promise((r) => setTimeout(r, 50)); continue }
        const batch = Array.from({ length: Math.min(16, share - i) }, (_, k) => `${id}#${i + k}`)
        i += batch.length
        await Promise.all(batch.map((text) =>
          p.call('netSend', { channel: ch, text }).then((seq: number) => { acked.set(text, seq) }, () => {}),
        ))
        sent += batch.length
        await new Promise((r) => setTimeout(r, pause))
      }
    }

    // Every kind of fault in turn (targets and timing random): agent kill, rotation, relay kill,
    // kill between a commit's send and its Ack, membership change.
    const kinds = ['agent', 'rotate', 'relay', 'rotate-kill', 'member']
    let n = 0
    async function chaos() {
      while (!stop) {
        await new Promise((r) => setTimeout(r, CHAOS_EVERY_MS * (0.5 + rand())))
        if (stop) break
        const kind = kinds[n++ % kinds.length]
        if (kind === 'agent') {
          // kill -9 a random agent and restart it from its data dir
          const id = ids[Math.floor(rand() * ids.length)]
          if (restarting.has(id)) continue
          restarting.add(id)
          await collect(id)
          await procs.get(id)!.kill()
          procs.delete(id)
          stats.agentKills++
          await start(id)
          restarting.delete(id)
        } else if (kind === 'relay') {
          // kill -9 the relay and restart it on the same address
          await relay.kill()
          stats.relayKills++
          relay = await startRelay({ dataDir: join(root, 'relay'), jwksUrl: `${apiSrv.url}/.well-known/jwks.json`, listen: relayListen })
        } else if (kind === 'rotate' || kind === 'rotate-kill') {
          // a rotation by a random member; with rotate-kill, killed right after the commit left
          const id = ids[Math.floor(rand() * ids.length)]
          const p = procs.get(id)
          if (!p || restarting.has(id)) continue
          const rotating = p.call('netRotateKey', { channel: ch }).then(() => { stats.rotations++ }, () => {})
          if (kind === 'rotate-kill') {
            restarting.add(id)
            await new Promise((r) => setTimeout(r, Math.floor(rand() * 15)))
            await collect(id)
            await p.kill()
            procs.delete(id)
            stats.commitKills++
            await rotating
            await start(id)
            restarting.delete(id)
          } else {
            await rotating
          }
        } else {
          // membership change by the admin
          if (restarting.has(ids[0]) || !procs.get(ids[0])) continue
          const a = procs.get(ids[0])!
          if (!spareIn) {
            await a.call('netAddMember', { channel: ch, identity: spare }).then(() => { spareIn = true; stats.adds++ }, () => {})
          } else {
            await a.call('netRemoveMembers', { channel: ch, identities: [spare] }).then(() => { spareIn = false; stats.removes++ }, () => {})
          }
        }
      }
    }

    const chaosDone = chaos()
    await Promise.all(ids.map((id) => sender(id, share)))
    stop = true
    await chaosDone
    for (const id of ids) if (!procs.get(id)) await start(id)

    // Everyone converges: same epoch and exported secret (no fork).
    await until(async () => {
      const epochs = await Promise.all(ids.map((id) => procs.get(id)!.call('netEpoch', { channel: ch })))
      return epochs.every((e) => e === epochs[0])
    }, 90_000, 'every member in the same epoch')
    const secrets = await Promise.all(ids.map((id) => procs.get(id)!.call('netSecret', { channel: ch })))
    for (const s of secrets) expect(Buffer.from(s).toString('hex')).toBe(Buffer.from(secrets[0]).toString('hex'))

    // Every acknowledged message of the others, exactly once, at every member.
    let delivered = 0
    for (const id of ids) {
      const got = await procs.get(id)!.call('netDrain', { channel: ch, idleMs: 4000, timeoutMs: 180_000 })
      const texts = got.map((m: any) => m.text)
      expect(new Set(texts).size, `${id} got a message twice`).toBe(texts.length)
      const missing = [...acked.keys()].filter((t) => !t.startsWith(`${id}#`) && !texts.includes(t))
      expect(missing, `${id} lost acknowledged messages (seed ${seed})`).toEqual([])
      delivered += texts.length
      await collect(id)
    }
    const bad = errors.filter((e) => ['SKYTALE_DECRYPT_FAILED', 'SKYTALE_FORK_DETECTED', 'SKYTALE_INVALID_MESSAGE'].includes(e.code))
    expect(bad, `undecryptable or forked (seed ${seed})`).toEqual([])
    console.log(JSON.stringify({ storm: { seed, agents: AGENTS, attempted: sent, acked: acked.size, delivered, ...stats } }))
    await Promise.all([...procs.values()].map((p) => p.kill()))
  }, 900_000)
})
