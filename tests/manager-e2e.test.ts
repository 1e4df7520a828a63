// End-to-end tests of SkytaleChannelManager and invites (issue: channel manager), with the
// real API server, the real relay and each agent in its own process.
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { randomBytes } from 'node:crypto'
// @ts-expect-error plain JS helper
import { MANAGER_WORKER, startAgentProcess } from './helpers/agent-process.mjs'
// @ts-expect-error plain JS helper
import { signup, startApiServer, startRelay } from './helpers/stack.mjs'

type Proc = ReturnType<typeof startAgentProcess>
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

describe('SkytaleChannelManager end to end', () => {
  let root: string
  let api: Awaited<ReturnType<typeof startApiServer>>
  let relay: Awaited<ReturnType<typeof startRelay>>
  let apiKey: string
  const procs: Proc[] = []
  const keys = new Map<string, string>()

  beforeAll(async () => {
    root = mkdtempSync(join(tmpdir(), 'skytale-mgr-e2e-'))
    api = await startApiServer({ dataDir: join(root, 'api') })
    relay = await startRelay({ dataDir: join(root, 'relay'), jwksUrl: `${api.url}/.well-known/jwks.json` })
    apiKey = await signup(api.url, 'acme')
  })
  afterAll(async () => {
    await Promise.all(procs.map((p) => p.kill()))
    await relay?.kill()
    await api?.stop()
    rmSync(root, { recursive: true, force: true })
  })

  async function manager(identity: string) {
    const p = startAgentProcess(MANAGER_WORKER)
    procs.push(p)
    if (!keys.has(identity)) keys.set(identity, randomBytes(32).toString('hex'))
    await p.call('start', {
      identity, apiKey, apiUrl: api.url, relay: relay.address,
      dataDir: join(root, 'agents', identity), keystoreKey: keys.get(identity),
    })
    return p
  }
  const uniq = (s: string) => `${s}-${randomBytes(3).toString('hex')}`

  it('create, invite, join with the token while alice is online, talk both ways, events', async () => {
    const ch = 'acme/support/routing'
    const alice = await manager('alice-agent')
    const bob = await manager('bob-agent')
    await alice.call('create', { channel: ch })
    const token: string = await alice.call('invite', { channel: ch, maxUses: 1, ttlSeconds: 3600 })
    expect(token).toMatch(/^skt_inv_/)
    await bob.call('join', { channel: ch, token, timeoutMs: 60_000 })
    expect((await bob.call('members', { channel: ch })).sort()).toEqual(['alice-agent', 'bob-agent'])
    await alice.call('send', { channel: ch, text: 'Hello from Alice!' })
    expect(await bob.call('receiveN', { channel: ch, count: 1 })).toEqual(['Hello from Alice!'])
    await bob.call('send', { channel: ch, text: 'Hi Alice' })
    await bob.call('send', { channel: ch, text: 'second' })
    await sleep(500)
    expect(await alice.call('receive', { channel: ch })).toEqual(['Hi Alice', 'second'])
    expect(await alice.call('receive', { channel: ch })).toEqual([])
    const evs = await alice.call('events')
    expect(evs).toContainEqual(expect.objectContaining({ ev: 'member-joined', channel: ch, identity: 'bob-agent' }))
    expect(await bob.call('channels')).toEqual([ch])
  })

  it('any online member that holds the invite admits the joiner, not only its creator', async () => {
    const ch = 'acme/relay/admit'
    const aliceId = uniq('alice'), bobId = uniq('bob'), carolId = uniq('carol')
    const alice = await manager(aliceId)
    const bob = await manager(bobId)
    await alice.call('create', { channel: ch })
    await bob.call('join', { channel: ch, token: await alice.call('invite', { channel: ch }), timeoutMs: 30_000 })
    const forCarol = await alice.call('invite', { channel: ch, maxUses: 1, ttlSeconds: 600 })
    await sleep(500) // bob receives the invite through the channel
    await alice.call('close')
    await alice.stop()
    const carol = await manager(carolId)
    await carol.call('join', { channel: ch, token: forCarol, timeoutMs: 30_000 })
    expect((await carol.call('members', { channel: ch })).sort()).toEqual([aliceId, bobId, carolId].sort())
    const bobEvents = await bob.call('events')
    expect(bobEvents).toContainEqual(expect.objectContaining({ ev: 'member-joined', identity: carolId }))
    await carol.call('send', { channel: ch, text: 'thanks bob' })
    expect(await bob.call('receiveN', { channel: ch, count: 1 })).toEqual(['thanks bob'])
  })

  it('joins while no member is online (external commit with an invite proof)', async () => {
    const ch = 'acme/offline/join'
    const aliceId = uniq('alice')
    const alice = await manager(aliceId)
    await alice.call('create', { channel: ch })
    const token = await alice.call('invite', { channel: ch, maxUses: 2, ttlSeconds: 600 })
    await alice.call('close')
    await alice.stop()
    const bobId = uniq('bob')
    const bob = await manager(bobId)
    await bob.call('join', { channel: ch, token, timeoutMs: 30_000 })
    expect((await bob.call('members', { channel: ch })).sort()).toEqual([aliceId, bobId].sort())
    await bob.call('send', { channel: ch, text: 'joined while you were away' })
    // Alice comes back: she applies the external commit, checks the proof, keeps bob, reads.
    const alice2 = await manager(aliceId)
    expect(await alice2.call('receiveN', { channel: ch, count: 1 })).toEqual(['joined while you were away'])
    await sleep(500)
    expect((await alice2.call('members', { channel: ch })).sort()).toEqual([aliceId, bobId].sort())
    await alice2.call('send', { channel: ch, text: 'welcome bob' })
    expect(await bob.call('receiveN', { channel: ch, count: 1 })).toEqual(['welcome bob'])
  })

  it('invite misuse fails fast with clear codes', async () => {
    const ch = 'acme/misuse/room'
    const owner = await manager(uniq('owner'))
    await owner.call('create', { channel: ch })
    await owner.call('create', { channel: 'acme/misuse/other' })
    const token: string = await owner.call('invite', { channel: ch, maxUses: 1, ttlSeconds: 600 })
    const joiner = await manager(uniq('joiner'))
    // A token for another channel.
    await expect(joiner.call('join', { channel: 'acme/misuse/other', token, timeoutMs: 5000 }))
      .rejects.toMatchObject({ code: 'SKYTALE_INVITE_WRONG_CHANNEL' })
    // A wrong secret (same id, flipped secret byte).
    const raw = Buffer.from(token.slice('skt_inv_'.length), 'base64url')
    raw[20] ^= 0xff
    const forged = `skt_inv_${raw.toString('base64url')}`
    await expect(joiner.call('join', { channel: ch, token: forged, timeoutMs: 5000 }))
      .rejects.toMatchObject({ code: 'SKYTALE_INVITE_INVALID' })
    await expect(joiner.call('join', { channel: ch, token: 'skt_inv_garbage', timeoutMs: 5000 }))
      .rejects.toMatchObject({ code: 'SKYTALE_INVITE_INVALID' })
    // Used up: the first joiner takes the only use, a second identity is refused.
    await joiner.call('join', { channel: ch, token, timeoutMs: 30_000 })
    const late = await manager(uniq('late'))
    await expect(late.call('join', { channel: ch, token, timeoutMs: 5000 }))
      .rejects.toMatchObject({ code: 'SKYTALE_INVITE_USED_UP' })
    // Expired.
    const shortLived = await owner.call('invite', { channel: ch, maxUses: 5, ttlSeconds: 1 })
    await sleep(2100)
    await expect(late.call('join', { channel: ch, token: shortLived, timeoutMs: 5000 }))
      .rejects.toMatchObject({ code: 'SKYTALE_INVITE_EXPIRED' })
  })

  it('an agent killed and restarted with the same data dir keeps its channels and gets what was sent meanwhile', async () => {
    const ch = 'acme/restart/room'
    const aliceId = uniq('alice')
    const bobId = uniq('bob')
    const alice = await manager(aliceId)
    const bob = await manager(bobId)
    await alice.call('create', { channel: ch })
    await bob.call('join', { channel: ch, token: await alice.call('invite', { channel: ch }), timeoutMs: 30_000 })
    await bob.kill()
    for (let i = 0; i < 20; i++) await alice.call('send', { channel: ch, text: `while down ${i}` })
    await alice.call('rotateKey', { channel: ch })
    await alice.call('send', { channel: ch, text: 'after rotation' })
    const bob2 = await manager(bobId)
    expect(await bob2.call('channels')).toEqual([ch])
    const got = await bob2.call('receiveN', { channel: ch, count: 21 })
    expect(got).toEqual([...Array.from({ length: 20 }, (_, i) => `while down ${i}`), 'after rotation'])
    // Nothing is delivered twice after another restart.
    await bob2.call('close'); await bob2.stop()
    const bob3 = await manager(bobId)
    await sleep(500)
    expect(await bob3.call('receive', { channel: ch })).toEqual([])
  })
})
