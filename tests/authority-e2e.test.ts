// Only admins change a channel, and a removed member stays out (issue: channel authority): the
// real API server, the real relay, agents in their own processes, and the hostile agent
// (tests/hostile) doing what a member can do with a modified client.
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { randomBytes } from 'node:crypto'
// @ts-expect-error plain JS helper
import { startAgentProcess } from './helpers/agent-process.mjs'
// @ts-expect-error plain JS helper
import { api, runHostile, signup, startApiServer, startRelay } from './helpers/stack.mjs'

type Proc = ReturnType<typeof startAgentProcess>

/** Polls `check` until it returns a truthy value (conditions, not sleeps); fails after `ms`. */
async function until<T>(check: () => Promise<T>, ms: number, what: string): Promise<T> {
  const deadline = Date.now() + ms
  for (;;) {
    const v = await check()
    if (v) return v
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`)
    await new Promise((r) => setTimeout(r, 200))
  }
}

describe('channel authority', () => {
  let root: string
  let apiSrv: Awaited<ReturnType<typeof startApiServer>>
  let relay: Awaited<ReturnType<typeof startRelay>>
  let admin: string
  const procs: Proc[] = []
  const keys = new Map<string, Uint8Array>()
  const seen = new Map<Proc, any[]>()

  beforeAll(async () => {
    root = mkdtempSync(join(tmpdir(), 'skytale-authority-e2e-'))
    apiSrv = await startApiServer({ dataDir: join(root, 'api') })
    relay = await startRelay({ dataDir: join(root, 'relay'), jwksUrl: `${apiSrv.url}/.well-known/jwks.json` })
    admin = await signup(apiSrv.url, 'acme')
  })
  afterAll(async () => {
    await Promise.all(procs.map((p) => p.kill()))
    await relay?.kill()
    await apiSrv?.stop()
    rmSync(root, { recursive: true, force: true })
  })

  const uid = (name: string) => `${name}-${randomBytes(3).toString('hex')}`

  async function agent(identity: string, options: { acceptWelcomes?: string; selfUpdateIntervalSecs?: number } = {}) {
    const p = startAgentProcess()
    procs.push(p)
    seen.set(p, [])
    if (!keys.has(identity)) keys.set(identity, new Uint8Array(randomBytes(32)))
    await p.call('open', { dataDir: join(root, identity), identity, keystoreKey: keys.get(identity) })
    await p.call('connect', { apiUrl: apiSrv.url, apiKey: admin, relay: relay.address, ...options })
    return p
  }

  /** Every client event the agent reported so far (kept across calls). */
  async function events(p: Proc): Promise<any[]> {
    const list = seen.get(p)!
    list.push(...(await p.call('events')))
    return list
  }

  /** Runs `skytale-hostile <command>` on `identity`'s keystore (its process stopped) with a fresh token. */
  async function hostileMember(command: string, identity: string, channel: string, extra: Record<string, string> = {}) {
    const t = await api(apiSrv.url, 'POST', '/v1/tokens', admin, { identity })
    return runHostile(command, {
      dir: join(root, identity),
      identity,
      'keystore-key': Buffer.from(keys.get(identity)!).toString('hex'),
      channel,
      relay: relay.address,
      token: t.body.token,
      ...extra,
    })
  }

  async function texts(p: Proc, ch: string, count: number) {
    const got = await p.call('netReceive', { channel: ch, count, timeoutMs: 30_000 })
    return got.filter((m: any) => m.text !== undefined).map((m: any) => m.text)
  }

  it('an org-mate that is not a member can neither read, write, commit nor touch invites; members keep talking', async () => {
    const [aliceId, bobId, eveId] = ['alice', 'bob', 'eve'].map(uid)
    const alice = await agent(aliceId)
    const bob = await agent(bobId)
    await agent(eveId) // registered, with a valid token of the same org
    const ch = `acme/authority/${uid('roster')}`
    await alice.call('netCreateChannel', { name: ch })
    await alice.call('netAddMember', { channel: ch, identity: bobId })
    await bob.call('waitForChannel', { channel: ch })
    await alice.call('netCreateInvite', { channel: ch, maxUses: 2 })
    const [invite] = await alice.call('netInvites', { channel: ch })
    const epoch = await alice.call('netEpoch', { channel: ch })
    const t = await api(apiSrv.url, 'POST', '/v1/tokens', admin, { identity: eveId })
    const r = await runHostile('probe', { relay: relay.address, token: t.body.token, channel: ch, epoch, 'invite-id': invite.id })
    for (const k of ['fetch', 'subscribe', 'state', 'send', 'proposal', 'commit', 'invite', 'update_invite', 'revoke_invite']) {
      expect([k, r[k]]).toEqual([k, 'SKYTALE_NOT_A_MEMBER'])
    }
    // Nothing moved: same epoch, the invite still works for its holder, and the members talk.
    await alice.call('netSend', { channel: ch, text: 'still ours' })
    expect(await texts(bob, ch, 1)).toEqual(['still ours'])
    expect(await bob.call('netEpoch', { channel: ch })).toBe(epoch)
    expect((await alice.call('netInvites', { channel: ch }))[0].revoked).toBe(false)
  })

  it('a member without the admin role cannot add: every member rejects it and the next valid commit goes through', async () => {
    const [aliceId, bobId, carolId, daveId, erinId] = ['alice', 'bob', 'carol', 'dave', 'erin'].map(uid)
    const alice = await agent(aliceId)
    const bob = await agent(bobId)
    const carol = await agent(carolId)
    await agent(daveId) // publishes key packages for the hostile add
    const ch = `acme/authority/${uid('roles')}`
    await alice.call('netCreateChannel', { name: ch })
    await alice.call('netAddMember', { channel: ch, identity: bobId })
    await alice.call('netAddMember', { channel: ch, identity: carolId })
    await bob.call('waitForChannel', { channel: ch })
    await carol.call('waitForChannel', { channel: ch })
    expect(await alice.call('netRoles', { channel: ch })).toEqual(
      expect.arrayContaining([{ identity: aliceId, role: 'admin' }, { identity: bobId, role: 'member' }]),
    )
    // Bob's own SDK refuses at once.
    await expect(bob.call('netAddMember', { channel: ch, identity: daveId })).rejects.toMatchObject({ code: 'SKYTALE_POLICY_DENIED' })
    await expect(bob.call('netSetRole', { channel: ch, identity: bobId, role: 'admin' })).rejects.toMatchObject({
      code: 'SKYTALE_POLICY_DENIED',
    })
    await expect(bob.call('netCreateInvite', { channel: ch })).rejects.toMatchObject({ code: 'SKYTALE_POLICY_DENIED' })
    await until(async () => (await carol.call('netEpoch', { channel: ch })) === (await alice.call('netEpoch', { channel: ch })), 30_000, 'carol caught up')
    const before = await carol.call('netEpoch', { channel: ch })

    // Bob's keystore in a modified client: it commits the add anyway. The relay orders it.
    await bob.kill()
    expect(await hostileMember('member-add', bobId, ch, { add: daveId })).toMatchObject({ ok: true })
    for (const p of [alice, carol]) {
      await until(async () => (await events(p)).some((e: any) => e.code === 'SKYTALE_POLICY_DENIED'), 30_000, 'rejection')
      expect(await p.call('netEpoch', { channel: ch })).toBe(before)
      expect(await p.call('netMembers', { channel: ch })).not.toContain(daveId)
    }
    // The next valid commit for that epoch: alice adds erin; everyone converges.
    const erin = await agent(erinId)
    await alice.call('netAddMember', { channel: ch, identity: erinId })
    await erin.call('waitForChannel', { channel: ch })
    await until(async () => (await carol.call('netMembers', { channel: ch })).includes(erinId), 30_000, 'carol sees erin')
    expect(await carol.call('netEpoch', { channel: ch })).toBe(before + 1)
    expect(await carol.call('netSecret', { channel: ch })).toEqual(await erin.call('netSecret', { channel: ch }))
    await carol.call('netSend', { channel: ch, text: 'still working' })
    expect(await texts(erin, ch, 1)).toEqual(['still working'])
    // Promoted by the admin, carol may add.
    await alice.call('netSetRole', { channel: ch, identity: carolId, role: 'admin' })
    await until(
      async () => (await carol.call('netRoles', { channel: ch })).some((r: any) => r.identity === carolId && r.role === 'admin'),
      30_000,
      'carol sees her role',
    )
    await carol.call('netAddMember', { channel: ch, identity: daveId })
    await until(async () => (await alice.call('netMembers', { channel: ch })).includes(daveId), 30_000, 'alice sees dave')
  })

  it('a proposal other than a leave request is refused by every member, and nobody is kept from sending', async () => {
    const [aliceId, bobId, carolId] = ['alice', 'bob', 'carol'].map(uid)
    const alice = await agent(aliceId)
    const bob = await agent(bobId)
    const carol = await agent(carolId)
    const ch = `acme/authority/${uid('proposal')}`
    await alice.call('netCreateChannel', { name: ch })
    await alice.call('netAddMember', { channel: ch, identity: bobId })
    await alice.call('netAddMember', { channel: ch, identity: carolId })
    await bob.call('waitForChannel', { channel: ch })
    await carol.call('waitForChannel', { channel: ch })
    await until(async () => (await carol.call('netEpoch', { channel: ch })) === (await alice.call('netEpoch', { channel: ch })), 30_000, 'carol caught up')
    // Bob's keystore in a modified client proposes an update of his leaf (the SDK never does):
    // a stored proposal would keep every member from sending until someone committed it.
    await bob.kill()
    expect(await hostileMember('propose-update', bobId, ch)).toMatchObject({ ok: true })
    for (const p of [alice, carol]) {
      await until(async () => (await events(p)).some((e: any) => e.code === 'SKYTALE_POLICY_DENIED'), 30_000, 'refusal')
    }
    await alice.call('netSend', { channel: ch, text: 'after the stray proposal' })
    expect(await texts(carol, ch, 1)).toEqual(['after the stray proposal'])
    await carol.call('netSend', { channel: ch, text: 'me too' })
    expect(await texts(alice, ch, 1)).toEqual(['me too'])
  })

  it('a removed member cannot come back with the same invite; a fresh one works only from an admin', async () => {
    const [aliceId, bobId, eveId] = ['alice', 'bob', 'eve'].map(uid)
    const alice = await agent(aliceId)
    const bob = await agent(bobId)
    const eve = await agent(eveId)
    const ch = `acme/authority/${uid('invites')}`
    await alice.call('netCreateChannel', { name: ch })
    await alice.call('netAddMember', { channel: ch, identity: bobId })
    await bob.call('waitForChannel', { channel: ch })
    const token = await alice.call('netCreateInvite', { channel: ch, maxUses: 5 })
    await eve.call('netJoinWithToken', { channel: ch, token })
    await until(async () => (await alice.call('netMembers', { channel: ch })).includes(eveId), 30_000, 'alice sees eve')
    const invites = await alice.call('netInvites', { channel: ch })
    expect(invites).toHaveLength(1)
    await until(
      async () => (await alice.call('netInvites', { channel: ch }))[0].used.includes(eveId),
      30_000,
      'the use is recorded in the policy',
    )
    // Eve is removed; the same token does not let her back, whoever is online.
    await alice.call('netRemoveMembers', { channel: ch, identities: [eveId] })
    await until(async () => !(await bob.call('netMembers', { channel: ch })).includes(eveId), 30_000, 'bob sees the removal')
    const err = await eve.call('netJoinWithToken', { channel: ch, token, timeoutMs: 15_000 }).catch((e: any) => e)
    expect(['SKYTALE_INVITE_USED_UP', 'SKYTALE_NOT_A_MEMBER', 'SKYTALE_INVITE_INVALID']).toContain(err.code)
    expect(await alice.call('netMembers', { channel: ch })).not.toContain(eveId)
    // Bob (no invite role) cannot make a fresh invite; alice can, and it works.
    await expect(bob.call('netCreateInvite', { channel: ch })).rejects.toMatchObject({ code: 'SKYTALE_POLICY_DENIED' })
    const fresh = await alice.call('netCreateInvite', { channel: ch, maxUses: 1 })
    await eve.call('netJoinWithToken', { channel: ch, token: fresh })
    await until(async () => (await bob.call('netMembers', { channel: ch })).includes(eveId), 30_000, 'bob sees eve again')
    await bob.call('netSend', { channel: ch, text: 'hello again' })
    expect(await texts(eve, ch, 1)).toEqual(['hello again'])
    // Revoked invites are refused by everyone; the list shows it.
    const spare = await alice.call('netCreateInvite', { channel: ch, maxUses: 3 })
    const spareId = (await alice.call('netInvites', { channel: ch })).find((i: any) => !i.revoked && i.used.length === 0).id
    await alice.call('netRevokeInvite', { channel: ch, id: spare })
    expect((await alice.call('netInvites', { channel: ch })).find((i: any) => i.id === spareId).revoked).toBe(true)
    const frank = await agent(uid('frank'))
    const refused = await frank.call('netJoinWithToken', { channel: ch, token: spare, timeoutMs: 10_000 }).catch((e: any) => e)
    expect(refused.code).toMatch(/^SKYTALE_INVITE_/)
    // Leaving needs no role: bob (member) leaves; an online member commits his request.
    await bob.call('netLeave', { channel: ch })
    await until(async () => !(await alice.call('netMembers', { channel: ch })).includes(bobId), 30_000, 'bob removed')
  })

  it('an external join without a valid invite proof is never merged and decrypts nothing', async () => {
    const [aliceId, carolId, frankId] = ['alice', 'carol', 'frank'].map(uid)
    const alice = await agent(aliceId)
    const carol = await agent(carolId)
    const frank = await agent(frankId)
    const ch = `acme/authority/${uid('xjoin')}`
    await alice.call('netCreateChannel', { name: ch })
    await alice.call('netAddMember', { channel: ch, identity: carolId })
    await carol.call('waitForChannel', { channel: ch })
    const before = await alice.call('netEpoch', { channel: ch })
    // Frank got a GroupInfo out of band (a leaked one) and commits a join without a proof.
    const groupInfo = await alice.call('exportGroupInfo', { channel: ch })
    const joined = await frank.call('joinUnchecked', { groupInfo }).then(
      () => 'relay-accepted',
      (e: any) => e.code,
    )
    if (joined === 'relay-accepted') {
      // The relay ordered it; every member rejects it (fail closed), nothing changes.
      for (const p of [alice, carol]) {
        await until(async () => (await events(p)).some((e: any) => e.code === 'SKYTALE_POLICY_DENIED'), 30_000, 'rejection')
      }
    } else {
      expect(joined).toBe('SKYTALE_NOT_A_MEMBER') // the relay's roster refused the non-member
    }
    expect(await alice.call('netEpoch', { channel: ch })).toBe(before)
    expect(await carol.call('netMembers', { channel: ch })).not.toContain(frankId)
    await alice.call('netSend', { channel: ch, text: 'members only' })
    expect(await texts(carol, ch, 1)).toEqual(['members only'])
    const atFrank = await frank.call('netReceive', { channel: ch, count: 1, timeoutMs: 3_000 }).catch(() => [])
    expect(atFrank.filter((m: any) => m.text !== undefined)).toEqual([])
  })

  it('Welcomes: a taken name is refused, and with acceptWelcomes "none" only invited joins happen', async () => {
    const [aliceId, strangerId, bobId] = ['alice', 'stranger', 'bob'].map(uid)
    const alice = await agent(aliceId)
    const stranger = await agent(strangerId)
    const bob = await agent(bobId, { acceptWelcomes: 'none' })
    const ch = `acme/authority/${uid('welcome')}`
    await alice.call('netCreateChannel', { name: ch })
    await alice.call('netSend', { channel: ch, text: 'first' })
    // The stranger cannot take the name: created by someone else first.
    await expect(stranger.call('netCreateChannel', { name: ch })).rejects.toMatchObject({ code: 'SKYTALE_CHANNEL_EXISTS' })
    // A channel of the stranger's own: bob does not join on its Welcome (he asked for none)...
    const own = `acme/authority/${uid('lookalike')}`
    await stranger.call('netCreateChannel', { name: own })
    await stranger.call('netAddMember', { channel: own, identity: bobId })
    await until(async () => (await events(bob)).some((e: any) => e.code === 'SKYTALE_WELCOME_REFUSED'), 30_000, 'refusal')
    expect(await bob.call('netChannels')).not.toContain(own)
    // ...but an invite he uses works.
    const token = await alice.call('netCreateInvite', { channel: ch })
    await bob.call('netJoinWithToken', { channel: ch, token })
    expect(await bob.call('netChannels')).toContain(ch)
  })

  it('what connect finds reaches the first event listener: a member removed while offline hears of it', async () => {
    const [aliceId, bobId] = ['alice', 'bob'].map(uid)
    const alice = await agent(aliceId)
    const bob = await agent(bobId)
    const ch = `acme/authority/${uid('offline-removal')}`
    await alice.call('netCreateChannel', { name: ch })
    await alice.call('netAddMember', { channel: ch, identity: bobId })
    await bob.call('waitForChannel', { channel: ch })
    await bob.kill()
    await alice.call('netRemoveMembers', { channel: ch, identities: [bobId] })
    // Restarted, bob's Subscribe is refused by the relay's roster while Client.connect runs;
    // the listener the worker attaches after connect resolved still gets that error.
    const again = await agent(bobId)
    const removal = (e: any) => e.kind === 'error' && e.code === 'SKYTALE_NOT_A_MEMBER' && e.channel === ch
    await until(async () => (await events(again)).some(removal), 10_000, 'the removal error')
    expect(await events(again)).toContainEqual(expect.objectContaining({ kind: 'connected' }))
    expect(await again.call('netChannels')).not.toContain(ch)
  })

  it('an add (committed without an update path) is followed by the adder\'s self-update once its key is older than selfUpdateIntervalSecs', async () => {
    const [aliceId, bobId] = ['alice', 'bob'].map(uid)
    // Alice's interval is 0: every add of hers is followed by a rotation of her own key.
    const alice = await agent(aliceId, { selfUpdateIntervalSecs: 0 })
    const bob = await agent(bobId)
    const ch = `acme/authority/${uid('pcs')}`
    await alice.call('netCreateChannel', { name: ch })
    const created = await alice.call('netEpoch', { channel: ch })
    await alice.call('netAddMember', { channel: ch, identity: bobId })
    await bob.call('waitForChannel', { channel: ch })
    // The add took one epoch, the scheduled rotation takes the next.
    await until(async () => (await alice.call('netEpoch', { channel: ch })) === created + 2, 30_000, 'the self-update')
    await alice.call('netSend', { channel: ch, text: 'after the update' })
    // Bob joined at the add's epoch: what he sees next is Alice's rotation — a commit of hers
    // that changes nobody's membership (a rotation always carries an update path) — and then
    // her message in the new epoch.
    const [update, message] = await bob.call('netReceive', { channel: ch, count: 1, timeoutMs: 30_000 })
    expect(update).toMatchObject({ kind: 'commit', sender: aliceId, epoch: created + 2 })
    expect([...(update.added ?? []), ...(update.removed ?? [])]).toEqual([])
    expect(message).toMatchObject({ text: 'after the update', sender: aliceId, epoch: created + 2 })

    // An interval above a day is refused up front.
    const p = startAgentProcess()
    procs.push(p)
    const longId = uid('long')
    await p.call('open', { dataDir: join(root, longId), identity: longId, keystoreKey: new Uint8Array(randomBytes(32)) })
    await expect(p.call('connect', { apiUrl: apiSrv.url, apiKey: admin, relay: relay.address, selfUpdateIntervalSecs: 86_401 }))
      .rejects.toMatchObject({ code: 'SKYTALE_INVALID_ARGUMENT' })
  })
})
