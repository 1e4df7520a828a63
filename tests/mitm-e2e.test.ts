// Issue #10: the relay as an adversary. The real API server, the real relay, and between the
// agents and the relay an adversarial proxy (tests/mitm, `skytale-mitm`) that sees what a
// compromised relay sees and drops, duplicates, reorders, delays, replays, withholds, fakes
// Acks, swaps commits and injects frames. Each agent runs in its own process. Every test
// asserts: no plaintext accepted twice, no forged message accepted, and every member ends in
// the same epoch with the same epoch authenticator and the same messages, or a fork is
// reported and healed.
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { randomBytes } from 'node:crypto'
// @ts-expect-error plain JS helper
import { startAgentProcess } from './helpers/agent-process.mjs'
// @ts-expect-error plain JS helper
import { signup, startApiServer, startMitm, startRelay } from './helpers/stack.mjs'

type Proc = ReturnType<typeof startAgentProcess>
type Got = { seq: number; sender: string; text: string; epoch: number }

/** One row of the report table (SECURITY.md): fault, messages, outcome. */
const report: { fault: string; messages: number; fired: number; outcome: string }[] = []

/** Polls `read` until `ok` holds (a condition, not a sleep); fails after `timeoutMs`. */
async function until<T>(what: string, read: () => Promise<T>, ok: (v: T) => boolean, timeoutMs = 60_000): Promise<T> {
  const deadline = Date.now() + timeoutMs
  let last: T = await read()
  while (!ok(last)) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}: ${JSON.stringify(last)}`)
    await new Promise((r) => setTimeout(r, 100))
    last = await read()
  }
  return last
}

const texts = (prefix: string, n: number) => Array.from({ length: n }, (_, i) => `${prefix}${i}`)

/** No plaintext twice, nothing that was not sent, in the sender's order. */
function exactlyOnceInOrder(got: Got[], expected: string[]) {
  const t = got.map((g) => g.text)
  expect(new Set(t).size, 'no plaintext accepted twice').toBe(t.length)
  expect(t).toEqual(expected)
}

describe('adversarial relay (skytale-mitm) end to end', () => {
  let root: string
  let api: Awaited<ReturnType<typeof startApiServer>>
  let relay: Awaited<ReturnType<typeof startRelay>>
  let mitm: Awaited<ReturnType<typeof startMitm>>
  let apiKey: string
  const procs: Proc[] = []

  beforeAll(async () => {
    root = mkdtempSync(join(tmpdir(), 'skytale-mitm-e2e-'))
    api = await startApiServer({ dataDir: join(root, 'api') })
    relay = await startRelay({ dataDir: join(root, 'relay'), jwksUrl: `${api.url}/.well-known/jwks.json` })
    mitm = await startMitm({ relayAddress: relay.address })
    apiKey = await signup(api.url, 'acme')
  })
  afterEach(async () => {
    await mitm.call('clear')
  })
  afterAll(async () => {
    await Promise.all(procs.map((p) => p.kill()))
    await mitm?.stop()
    await relay?.kill()
    await api?.stop()
    rmSync(root, { recursive: true, force: true })
    console.log(`mitm report\n${report.map((r) => `| ${r.fault} | ${r.messages} | ${r.fired} | ${r.outcome} |`).join('\n')}`)
  })

  async function agent(name: string) {
    const identity = `${name}-${randomBytes(3).toString('hex')}`
    const p = startAgentProcess()
    procs.push(p)
    await p.call('open', { dataDir: join(root, identity), identity, keystoreKey: new Uint8Array(randomBytes(32)) })
    await p.call('connect', { apiUrl: api.url, apiKey, relay: mitm.address })
    return Object.assign(p, { id: identity })
  }

  /** A channel of `names.length` members, all through the proxy. */
  async function group(channel: string, names: string[]) {
    const members = []
    for (const n of names) members.push(await agent(n))
    await members[0].call('netCreateChannel', { name: channel })
    for (const m of members.slice(1)) {
      await members[0].call('netAddMember', { channel, identity: m.id })
      await m.call('waitForChannel', { channel, timeoutMs: 30_000 })
    }
    return members
  }

  /** Every member in the same epoch with the same epoch authenticator. */
  async function converged(channel: string, members: Proc[]) {
    return until(
      'the same epoch and authenticator everywhere',
      () => Promise.all(members.map((m) => m.call('netForkState', { channel }))),
      (s: any[]) => s.every((x) => x.epoch === s[0].epoch && x.auth === s[0].auth),
    )
  }

  async function fired(rule: number) {
    const stats = await mitm.call('stats')
    return stats.rules[rule].fired as number
  }

  const seenEvents = new Map<Proc, any[]>()
  /** Client events of `kind` seen by `p` so far (the worker hands each event out once). */
  async function eventsOf(p: Proc, kind: string) {
    const all = seenEvents.get(p) ?? []
    all.push(...(await p.call('events')))
    seenEvents.set(p, all)
    return all.filter((e: any) => e.kind === kind)
  }

  it('drop: 30% of the deliveries pushed to bob vanish; bob fills every hole from the archive', async () => {
    const ch = 'acme/mitm/drop'
    const [alice, bob] = await group(ch, ['alice', 'bob'])
    const rule = await mitm.call('add', { rule: { action: 'drop', to: [bob.id], channel: ch, via: 'push', prob: 0.3 } })
    const sending = (async () => {
      await alice.call('netSendMany', { channel: ch, prefix: 'a-', count: 100 })
      await alice.call('netRotateKey', { channel: ch })
      await alice.call('netSendMany', { channel: ch, prefix: 'c-', count: 100 })
    })()
    const back = bob.call('netSendMany', { channel: ch, prefix: 'b-', count: 50 })
    await Promise.all([sending, back])
    const expected = [...texts('a-', 100), ...texts('c-', 100)]
    const atBob: Got[] = await bob.call('netReceiveUntil', { channel: ch, expect: expected, timeoutMs: 60_000 })
    exactlyOnceInOrder(atBob, expected)
    expect(new Set(atBob.map((g) => g.seq)).size, 'each seq once').toBe(200)
    exactlyOnceInOrder(await alice.call('netReceiveUntil', { channel: ch, expect: texts('b-', 50) }), texts('b-', 50))
    expect(await fired(rule)).toBeGreaterThan(0)
    await converged(ch, [alice, bob])
    report.push({ fault: 'drop 30% of pushes to one member', messages: 250, fired: await fired(rule), outcome: 'all delivered once, in order; same epoch + authenticator' })
  })

  it('duplicate: every delivery to bob arrives twice; each plaintext is accepted once', async () => {
    const ch = 'acme/mitm/dup'
    const [alice, bob] = await group(ch, ['alice', 'bob'])
    const rule = await mitm.call('add', { rule: { action: 'duplicate', to: [bob.id], channel: ch } })
    await alice.call('netSendMany', { channel: ch, prefix: 'd-', count: 100 })
    await alice.call('netRotateKey', { channel: ch })
    await alice.call('netSendMany', { channel: ch, prefix: 'e-', count: 20 })
    const got = await bob.call('netReceiveUntil', { channel: ch, expect: [...texts('d-', 100), ...texts('e-', 20)] })
    exactlyOnceInOrder(got, [...texts('d-', 100), ...texts('e-', 20)])
    expect(await bob.call('netReceive', { channel: ch, count: 1, timeoutMs: 1500 })).toEqual([])
    await converged(ch, [alice, bob])
    report.push({ fault: 'duplicate every delivery', messages: 120, fired: await fired(rule), outcome: 'each accepted once; same epoch + authenticator' })
  })

  it('spoof: the sender a relay names on a Welcome or a delivery is never what a member reports', async () => {
    const ch = 'acme/mitm/spoof'
    const [alice] = await group(ch, ['alice'])
    const bob = await agent('bob')
    const mallory = await agent('mallory') // a real org-mate: a plausible claim
    const onWelcome = await mitm.call('add', { rule: { action: 'spoof', frame: 'welcome', to: [bob.id], as: mallory.id } })
    const onDeliver = await mitm.call('add', { rule: { action: 'spoof', to: [bob.id], channel: ch, as: mallory.id } })
    await alice.call('netAddMember', { channel: ch, identity: bob.id })
    await bob.call('waitForChannel', { channel: ch, timeoutMs: 30_000 })
    // Who added bob is the Welcome's sender as MLS authenticates it (its GroupInfo signer).
    const joined = await until('bob\'s joined event', () => eventsOf(bob, 'joined'), (e) => e.some((x: any) => x.channel === ch))
    expect(joined.filter((x: any) => x.channel === ch).map((x: any) => x.message)).toEqual([alice.id])
    await alice.call('netSendMany', { channel: ch, prefix: 's-', count: 10 })
    const got: Got[] = await bob.call('netReceiveUntil', { channel: ch, expect: texts('s-', 10) })
    exactlyOnceInOrder(got, texts('s-', 10))
    expect(new Set(got.map((g) => g.sender))).toEqual(new Set([alice.id]))
    expect(await fired(onWelcome)).toBeGreaterThan(0)
    expect(await fired(onDeliver)).toBeGreaterThanOrEqual(10)
    report.push({ fault: 'claim another sender on Welcomes and deliveries', messages: 10, fired: (await fired(onWelcome)) + (await fired(onDeliver)), outcome: 'joined.by and every sender are the MLS-authenticated ones' })
  })

  /** An agent that can be killed and started again on its keystore; every add of it is
   *  followed by a rotation of its key (self-update interval 0). */
  function restartable(name: string) {
    const identity = `${name}-${randomBytes(3).toString('hex')}`
    const keystoreKey = new Uint8Array(randomBytes(32))
    const start = async () => {
      const p = startAgentProcess()
      procs.push(p)
      await p.call('open', { dataDir: join(root, identity), identity, keystoreKey })
      await p.call('connect', { apiUrl: api.url, apiKey, relay: mitm.address, selfUpdateIntervalSecs: 0 })
      return p
    }
    return { identity, start }
  }

  /**
   * Waits until `adder` is at `epoch` through its own rotation, then has it send: the member
   * `reader` (who joined by the add) reads the rotation — a commit of the adder that changes no
   * membership — and then the message.
   */
  async function rotatedThenSends(what: string, adder: Proc, reader: Proc, channel: string, identity: string, epoch: number) {
    await until(what, () => adder.call('netEpoch', { channel }), (e) => e === epoch)
    await adder.call('netSend', { channel, text: `in epoch ${epoch}` })
    const [update, message] = await reader.call('netReceive', { channel, count: 1, timeoutMs: 30_000 })
    expect(update).toMatchObject({ kind: 'commit', sender: identity, epoch })
    expect([...(update.added ?? []), ...(update.removed ?? [])]).toEqual([])
    expect(message).toMatchObject({ text: `in epoch ${epoch}`, sender: identity })
  }

  it('kill -9 between an add\'s send and its Ack: the restarted adder completes the add and then its self-update', async () => {
    const ch = 'acme/mitm/add-crash'
    const { identity, start } = restartable('alice')
    const alice = await start()
    const bob = await agent('bob')
    await alice.call('netCreateChannel', { name: ch })
    const created = await alice.call('netEpoch', { channel: ch })
    // The relay never gets alice's commit: she has written it as pending and waits for its Ack.
    const rule = await mitm.call('add', { rule: { action: 'drop', dir: 'to_relay', frame: 'commit', to: [identity] } })
    const adding = alice.call('netAddMember', { channel: ch, identity: bob.id }).catch(() => 'killed')
    await until('the add on the wire', () => fired(rule), (n) => n > 0)
    await alice.kill()
    expect(await adding).toBe('killed')
    const dropped = await fired(rule)
    await mitm.call('clear')
    // Restarted, alice sends the pending add again (same client_msg_id), merges it on its Ack
    // and then rotates her own key, as the live path does after an add.
    const again = await start()
    await bob.call('waitForChannel', { channel: ch, timeoutMs: 30_000 })
    await rotatedThenSends('the self-update after the recovered add', again, bob, ch, identity, created + 2)
    report.push({ fault: 'withhold an add from the relay, kill -9 the adder, restart it', messages: 1, fired: dropped, outcome: 'add completed once after the restart, then the adder\'s self-update' })
  })

  it('kill -9 while an add\'s self-update waits in the follow-up queue: the restarted adder rotates at connect', async () => {
    const ch = 'acme/mitm/owed-update'
    const { identity, start } = restartable('alice')
    const alice = await start()
    const bob = await agent('bob')
    await alice.call('netCreateChannel', { name: ch })
    // Alice's invite refreshes never reach the relay: her follow-up queue waits on the one her
    // rotation schedules (the request's 30 s timeout), so the self-update check her add
    // schedules waits behind it.
    const rule = await mitm.call('add', { rule: { action: 'drop', dir: 'to_relay', frame: 'update_invite', to: [identity] } })
    await alice.call('netCreateInvite', { channel: ch })
    await alice.call('netRotateKey', { channel: ch })
    await until('an invite refresh on the wire', () => fired(rule), (n) => n > 0)
    const before = await alice.call('netEpoch', { channel: ch })
    await alice.call('netAddMember', { channel: ch, identity: bob.id })
    await bob.call('waitForChannel', { channel: ch, timeoutMs: 30_000 })
    expect(await alice.call('netEpoch', { channel: ch }), 'the rotation is still queued').toBe(before + 1)
    await alice.kill()
    const dropped = await fired(rule)
    await mitm.call('clear')
    // The keystore says the add still owes its self-update check: the next connect does it.
    const again = await start()
    await rotatedThenSends('the owed self-update after the restart', again, bob, ch, identity, before + 2)
    report.push({ fault: 'hold the adder\'s follow-ups (drop its invite refreshes), kill -9 it after an add, restart it', messages: 1, fired: dropped, outcome: 'the owed self-update runs at the next connect' })
  })

  /**
   * alice (restartable, the only admin), bob and dave in `ch`. `leave()`: once everyone is at
   * alice's epoch, dave gets no more deliveries (so he never sees the leave request and can
   * still send: his message after bob's leave request shows, once alice has it, that she
   * processed the request), and bob leaves.
   */
  async function leaveSetup(ch: string, others: string[] = []) {
    const { identity, start } = restartable('alice')
    const alice = await start()
    const bob = await agent('bob')
    const dave = await agent('dave')
    const more = []
    for (const name of others) more.push(await agent(name))
    await alice.call('netCreateChannel', { name: ch })
    const created = await alice.call('netEpoch', { channel: ch })
    let epoch = created
    for (const p of [bob, dave, ...more]) {
      await alice.call('netAddMember', { channel: ch, identity: p.id })
      epoch += 2
      await until('the self-update after the add', () => alice.call('netEpoch', { channel: ch }), (e) => e === epoch)
    }
    /** Bob leaves; returns (with the rule that deafens dave) once alice processed his request. */
    const leave = async () => {
      const now = await alice.call('netEpoch', { channel: ch })
      for (const p of [bob, dave, ...more]) await until('caught up', () => p.call('netEpoch', { channel: ch }), (e) => e === now)
      const deaf = await mitm.call('add', { rule: { action: 'drop', frame: 'deliver', to: [dave.id] } })
      await bob.call('netLeave', { channel: ch })
      await dave.call('netSend', { channel: ch, text: 'after the leave request' })
      expect(await alice.call('netReceive', { channel: ch, count: 1, timeoutMs: 30_000 })).toContainEqual(
        expect.objectContaining({ text: 'after the leave request', sender: dave.id }),
      )
      return deaf
    }
    return { identity, start, alice, bob, dave, more, created, leave }
  }

  it('kill -9 while a leave request waits for its commit: the restarted member commits it at connect', async () => {
    const ch = 'acme/mitm/leave-crash'
    const { identity, start, alice, bob, dave, created, leave } = await leaveSetup(ch)
    // Alice's follow-ups wait behind an invite refresh that never reaches the relay (the
    // request's 30 s timeout), so the commit of bob's leave request waits in her queue.
    const rule = await mitm.call('add', { rule: { action: 'drop', dir: 'to_relay', frame: 'update_invite', to: [identity] } })
    await alice.call('netCreateInvite', { channel: ch })
    await alice.call('netRotateKey', { channel: ch })
    await until('an invite refresh on the wire', () => fired(rule), (n) => n > 0)
    await leave()
    expect(await alice.call('netMembers', { channel: ch })).toContain(bob.id)
    await alice.kill()
    await dave.kill()
    const dropped = await fired(rule)
    await mitm.call('clear')
    // The leave request is in her keystore's proposal store: the next connect commits it.
    const again = await start()
    await until('bob removed', () => again.call('netMembers', { channel: ch }), (m: string[]) => !m.includes(bob.id), 20_000)
    await again.call('netSend', { channel: ch, text: 'after the restart' })
    // Two adds with their self-updates, the invite's registration, the rotation, the leave.
    expect(await again.call('netEpoch', { channel: ch })).toBe(created + 7)
    report.push({ fault: 'hold a member\'s follow-ups (drop its invite refreshes), kill -9 it after it processed a leave request, restart it', messages: 2, fired: dropped, outcome: 'the leave is committed at the next connect' })
  })

  it('a send while a leave request waits for its commit waits for the commit and goes out after it', async () => {
    const ch = 'acme/mitm/leave-send'
    const { identity, alice, bob, more: [carol], created, leave } = await leaveSetup(ch, ['carol'])
    // Alice's follow-ups (and so her own commit of the leave) wait behind an invite refresh
    // that never reaches the relay; carol commits the leave, 3 s late at the proxy.
    const held = await mitm.call('add', { rule: { action: 'drop', dir: 'to_relay', frame: 'update_invite', to: [identity] } })
    await alice.call('netCreateInvite', { channel: ch })
    await alice.call('netRotateKey', { channel: ch })
    await until('an invite refresh on the wire', () => fired(held), (n) => n > 0)
    const slow = await mitm.call('add', { rule: { action: 'delay', delay_ms: 3000, dir: 'to_relay', frame: 'commit', to: [carol.id] } })
    const deaf = await leave()
    // Alice holds the leave request: MLS lets her send nothing until its commit is applied.
    const seq = await alice.call('netSend', { channel: ch, text: 'during the leave' })
    expect(seq).toBeGreaterThan(0)
    expect(await fired(slow)).toBe(1)
    // Three adds with their self-updates, the invite's registration, the rotation, the leave.
    expect(await alice.call('netEpoch', { channel: ch })).toBe(created + 9)
    expect(await alice.call('netMembers', { channel: ch })).not.toContain(bob.id)
    expect(await carol.call('netReceive', { channel: ch, count: 2, timeoutMs: 30_000 })).toContainEqual(
      expect.objectContaining({ text: 'during the leave', sender: identity }),
    )
    report.push({ fault: 'hold a member\'s follow-ups, delay the leave commit of another by 3 s (deliveries withheld from a third)', messages: 2, fired: (await fired(held)) + (await fired(slow)) + (await fired(deaf)), outcome: 'a send during the leave waits for the commit; nothing fails' })
    await mitm.call('clear')
  })

  it('a commit while a leave request waits commits the leave first: an add never voids it', async () => {
    const ch = 'acme/mitm/leave-then-add'
    const { identity, alice, bob, created, leave } = await leaveSetup(ch)
    const erin = await agent('erin')
    // Alice's own commit of the leave waits behind an invite refresh that never reaches the relay.
    const held = await mitm.call('add', { rule: { action: 'drop', dir: 'to_relay', frame: 'update_invite', to: [identity] } })
    await alice.call('netCreateInvite', { channel: ch })
    await alice.call('netRotateKey', { channel: ch })
    await until('an invite refresh on the wire', () => fired(held), (n) => n > 0)
    const deaf = await leave()
    // Her add would end the epoch without bob's leave request (MLS voids it): the leave goes first.
    await alice.call('netAddMember', { channel: ch, identity: erin.id })
    await erin.call('waitForChannel', { channel: ch, timeoutMs: 30_000 })
    const members = await erin.call('netMembers', { channel: ch })
    expect(members).toContain(erin.id)
    expect(members).not.toContain(bob.id)
    // Two adds with their self-updates, the invite's registration, the rotation, the leave, the add.
    expect(await alice.call('netEpoch', { channel: ch })).toBe(created + 8)
    report.push({ fault: 'hold a member\'s follow-ups, have it add someone while it holds a leave request (deliveries withheld from another member)', messages: 1, fired: (await fired(held)) + (await fired(deaf)), outcome: 'the leave is committed before the add; the leaver is out' })
    await mitm.call('clear')
  })

  it('a leave request voided by another member\'s commit: the admin removes the leaver, also after a kill -9', async () => {
    const ch = 'acme/mitm/leave-voided'
    const { identity, start, alice, bob, more: [carol], leave } = await leaveSetup(ch, ['carol'])
    // Alice's follow-ups wait behind an invite refresh that never reaches the relay; carol gets
    // no deliveries, so she never sees bob's leave request.
    const held = await mitm.call('add', { rule: { action: 'drop', dir: 'to_relay', frame: 'update_invite', to: [identity] } })
    await alice.call('netCreateInvite', { channel: ch })
    await alice.call('netRotateKey', { channel: ch })
    await until('an invite refresh on the wire', () => fired(held), (n) => n > 0)
    const epoch = await alice.call('netEpoch', { channel: ch })
    await until('carol caught up', () => carol.call('netEpoch', { channel: ch }), (e) => e === epoch)
    await mitm.call('add', { rule: { action: 'drop', frame: 'deliver', to: [carol.id] } })
    await leave()
    // Carol's rotation, built without the request, ends the epoch after it: the request is void.
    await carol.call('netRotateKey', { channel: ch })
    await until('alice applied the rotation', () => alice.call('netEpoch', { channel: ch }), (e) => e === epoch + 1)
    expect(await alice.call('netMembers', { channel: ch })).toContain(bob.id)
    // Killed before her (held) follow-ups ran: the note is in her keystore.
    await alice.kill()
    const dropped = await fired(held)
    await mitm.call('clear')
    const again = await start()
    await until('bob removed', () => again.call('netMembers', { channel: ch }), (m: string[]) => !m.includes(bob.id), 20_000)
    report.push({ fault: 'a commit built without a leave request ends its epoch (deliveries withheld from its committer); the admin is killed, restarted', messages: 1, fired: dropped, outcome: 'the admin removes the leaver at the next connect' })
  })

  it('kill -9 before an invite refresh reaches the relay: the restarted member refreshes at connect, so an external joiner gets in', async () => {
    const ch = 'acme/mitm/invite-refresh'
    const { identity, start } = restartable('alice')
    const alice = await start()
    await alice.call('netCreateChannel', { name: ch })
    const token = await alice.call('netCreateInvite', { channel: ch, maxUses: 5 })
    // Her invite refreshes never reach the relay: the invite keeps the creation epoch's GroupInfo.
    const held = await mitm.call('add', { rule: { action: 'drop', dir: 'to_relay', frame: 'update_invite', to: [identity] } })
    await alice.call('netRotateKey', { channel: ch })
    await until('the refresh on the wire', () => fired(held), (n) => n > 0)
    await alice.kill()
    const dropped = await fired(held)
    await mitm.call('clear')
    // Restarted, alice is online but never sees join requests, so she admits nobody: the joiner
    // must commit externally from the invite's sealed GroupInfo, which has to be current.
    await mitm.call('add', { rule: { action: 'drop', frame: 'deliver', kind: 'join_request', to: [identity] } })
    const again = await start()
    const carol = await agent('carol')
    await carol.call('netJoinWithToken', { channel: ch, token, timeoutMs: 20_000 })
    await until('alice sees carol', () => again.call('netMembers', { channel: ch }), (m: string[]) => m.includes(carol.id))
    await mitm.call('clear')
    await carol.call('netSend', { channel: ch, text: 'in by the refreshed invite' })
    expect(await again.call('netReceive', { channel: ch, count: 1, timeoutMs: 30_000 })).toContainEqual(
      expect.objectContaining({ text: 'in by the refreshed invite', sender: carol.id }),
    )
    report.push({ fault: 'drop a member\'s invite refresh, kill -9 it, restart it (join requests withheld from it)', messages: 1, fired: dropped, outcome: 'the stale invite is refreshed at connect; the joiner commits externally' })
  })

  it('kill -9 while members wait to record an external joiner\'s invite use: the restarted member records it at connect', async () => {
    const ch = 'acme/mitm/record-use'
    const { identity, start } = restartable('alice')
    const alice = await start()
    await alice.call('netCreateChannel', { name: ch })
    const token = await alice.call('netCreateInvite', { channel: ch, maxUses: 5 })
    const carol = await agent('carol')
    // Alice admits nobody (join requests withheld), so carol commits externally; carol's own
    // record of the use (her second commit) never reaches the relay.
    await mitm.call('add', { rule: { action: 'drop', frame: 'deliver', kind: 'join_request', to: [identity] } })
    const held = await mitm.call('add', { rule: { action: 'drop', dir: 'to_relay', frame: 'commit', to: [carol.id], every: 2 } })
    await carol.call('netJoinWithToken', { channel: ch, token, timeoutMs: 20_000 })
    // Members give the joiner 3 s to record its use first: alice dies within them.
    await until('alice applied the join', () => alice.call('netMembers', { channel: ch }), (m: string[]) => m.includes(carol.id))
    await alice.kill()
    await until('carol\'s record on the wire', () => fired(held), (n) => n > 0)
    await carol.kill()
    const dropped = await fired(held)
    await mitm.call('clear')
    // The join's owed record was written with the join: the next connect records it.
    const again = await start()
    const invites = await until(
      'the use recorded',
      () => again.call('netInvites', { channel: ch }),
      (list: any[]) => list.some((i) => i.used.includes(carol.id)),
      30_000,
    )
    expect(invites).toHaveLength(1)
    report.push({ fault: 'drop an external joiner\'s record of its invite use, kill -9 it and the member within the grace, restart the member', messages: 0, fired: dropped, outcome: 'the use is recorded in the policy at the next connect' })
  })

  it('reorder and delay: swapped and late deliveries are applied in relay order', async () => {
    const ch = 'acme/mitm/reorder'
    const [alice, bob, carol] = await group(ch, ['alice', 'bob', 'carol'])
    const r1 = await mitm.call('add', { rule: { action: 'reorder', to: [bob.id], channel: ch, every: 3 } })
    const r2 = await mitm.call('add', { rule: { action: 'delay', to: [carol.id], channel: ch, via: 'push', prob: 0.2, delay_ms: 300 } })
    await alice.call('netSendMany', { channel: ch, prefix: 'r-', count: 60 })
    await alice.call('netRotateKey', { channel: ch })
    await alice.call('netSendMany', { channel: ch, prefix: 's-', count: 60 })
    const expected = [...texts('r-', 60), ...texts('s-', 60)]
    exactlyOnceInOrder(await bob.call('netReceiveUntil', { channel: ch, expect: expected }), expected)
    exactlyOnceInOrder(await carol.call('netReceiveUntil', { channel: ch, expect: expected }), expected)
    await converged(ch, [alice, bob, carol])
    report.push({ fault: 'reorder every 3rd / delay 20% by 300 ms', messages: 120, fired: (await fired(r1)) + (await fired(r2)), outcome: 'in relay order, once; same epoch + authenticator' })
  })

  it('replay and inject: old deliveries again, replays under new seqs and garbage are never accepted', async () => {
    const ch = 'acme/mitm/replay'
    const [alice, bob] = await group(ch, ['alice', 'bob'])
    const rule = await mitm.call('add', { rule: { action: 'replay', to: [bob.id], channel: ch, prob: 0.3 } })
    await alice.call('netSendMany', { channel: ch, prefix: 'p-', count: 40 })
    const first: Got[] = await bob.call('netReceiveUntil', { channel: ch, expect: texts('p-', 40) })
    exactlyOnceInOrder(first, texts('p-', 40))
    // A replayed ciphertext under a fresh seq, a garbage "message" and a garbage "commit".
    await mitm.call('inject', { to: bob.id, channel: ch, payload: 'replay', replay_seq: first[3].seq })
    await mitm.call('inject', { to: bob.id, channel: ch, payload: 'garbage' })
    await mitm.call('inject', { to: bob.id, channel: ch, payload: 'garbage', kind: 'commit' })
    await alice.call('netSendMany', { channel: ch, prefix: 'q-', count: 20 })
    exactlyOnceInOrder(await bob.call('netReceiveUntil', { channel: ch, expect: texts('q-', 20) }), texts('q-', 20))
    expect(await bob.call('netReceive', { channel: ch, count: 1, timeoutMs: 1500 })).toEqual([])
    const state = await until('skipped items counted', () => bob.call('netForkState', { channel: ch }), (s: any) => s.skipped >= 1)
    expect(state.forks).toBe(0)
    await converged(ch, [alice, bob])
    report.push({ fault: 'replay 30% + inject replay/garbage', messages: 60, fired: (await fired(rule)) + 3, outcome: `none accepted; ${state.skipped} counted as skipped` })
  })

  it('withhold a commit from one member (push and fetch): it reports a fork, resyncs, and keeps its outbox', async () => {
    const ch = 'acme/mitm/withhold'
    const [alice, bob] = await group(ch, ['alice', 'bob'])
    const rule = await mitm.call('add', { rule: { action: 'withhold', to: [bob.id], from: [alice.id], channel: ch, kind: 'commit' } })
    await alice.call('netRotateKey', { channel: ch })
    await alice.call('netSendMany', { channel: ch, prefix: 'w-', count: 5 })
    // Bob cannot follow the relay's order: it resyncs by itself.
    await until('bob healed', () => eventsOf(bob, 'healed'), (e: any[]) => e.length > 0, 60_000)
    const withheld = await fired(rule)
    await mitm.call('clear')
    const forks = await bob.call('netForkState', { channel: ch })
    expect(forks.forks).toBeGreaterThan(0)
    expect(forks.heals).toBe(1)
    // Bob's sends made after the resync, and alice's, arrive exactly once.
    await bob.call('netSendMany', { channel: ch, prefix: 'x-', count: 10 })
    exactlyOnceInOrder(await alice.call('netReceiveUntil', { channel: ch, expect: texts('x-', 10) }), texts('x-', 10))
    await alice.call('netSendMany', { channel: ch, prefix: 'y-', count: 10 })
    const atBob: Got[] = await bob.call('netReceiveUntil', { channel: ch, expect: texts('y-', 10) })
    expect(atBob.filter((g) => g.text.startsWith('y-')).map((g) => g.text)).toEqual(texts('y-', 10))
    expect(new Set(atBob.map((g) => g.text)).size).toBe(atBob.length)
    await converged(ch, [alice, bob])
    expect((await alice.call('netMembers', { channel: ch })).sort()).toEqual([alice.id, bob.id].sort())
    report.push({ fault: 'withhold a commit from one member', messages: 25, fired: withheld, outcome: 'fork reported, resynced; later messages once; same epoch + authenticator' })
  })

  it('Ack a commit and never deliver it (fake Ack): the committer reports a fork, resyncs, and its queued send is re-encrypted', async () => {
    const ch = 'acme/mitm/fakeack'
    const [alice, bob] = await group(ch, ['alice', 'bob'])
    const rule = await mitm.call('add', { rule: { action: 'fake_ack', dir: 'to_relay', frame: 'commit', to: [alice.id], channel: ch, count: 1 } })
    await alice.call('netRotateKey', { channel: ch }) // "accepted" by the proxy, never by the relay
    expect(await fired(rule)).toBe(1)
    await alice.call('netSendMany', { channel: ch, prefix: 'f-', count: 5 })
    exactlyOnceInOrder(await bob.call('netReceiveUntil', { channel: ch, expect: texts('f-', 5) }), texts('f-', 5))
    expect((await eventsOf(alice, 'fork')).length).toBeGreaterThan(0)
    expect((await until('alice healed', () => eventsOf(alice, 'healed'), (e: any[]) => e.length > 0)).length).toBe(1)
    await bob.call('netSendMany', { channel: ch, prefix: 'g-', count: 5 })
    exactlyOnceInOrder(await alice.call('netReceiveUntil', { channel: ch, expect: texts('g-', 5) }), texts('g-', 5))
    await converged(ch, [alice, bob])
    report.push({ fault: 'fake Ack of a commit (never archived)', messages: 10, fired: 1, outcome: 'fork reported, committer resynced; no message lost or doubled' })
  })

  it('deliver a commit the relay refused (swap): the member on that branch resyncs and sends its lost messages again', async () => {
    const ch = 'acme/mitm/swap'
    const [alice, bob, carol] = await group(ch, ['alice', 'bob', 'carol'])
    // Carol's commit reaches the relay late and is refused; bob is handed it instead of alice's.
    const swap = await mitm.call('add', { rule: { action: 'substitute', to: [bob.id], channel: ch, kind: 'commit', count: 1 } })
    const slow = await mitm.call('add', { rule: { action: 'delay', dir: 'to_relay', frame: 'commit', to: [carol.id], channel: ch, count: 1, delay_ms: 600 } })
    await carol.call('netRotateLater', { channel: ch })
    await until('carol committing', () => fired(slow), (n: number) => n === 1)
    await alice.call('netRotateKey', { channel: ch })
    await carol.call('netSettled')
    expect(await fired(swap)).toBe(1)
    // Bob is on a branch the relay never archived; its messages are unreadable for the others
    // until it notices, resyncs and sends them again.
    await bob.call('netSendMany', { channel: ch, prefix: 'h-', count: 5 })
    await alice.call('netSendMany', { channel: ch, prefix: 'i-', count: 5 })
    await until('bob healed', () => eventsOf(bob, 'healed'), (e: any[]) => e.length > 0, 60_000)
    await mitm.call('clear')
    const atAlice: Got[] = await alice.call('netReceiveUntil', { channel: ch, expect: texts('h-', 5) })
    expect(atAlice.map((g) => g.text).filter((t) => t.startsWith('h-'))).toEqual(texts('h-', 5))
    expect(new Set(atAlice.map((g) => g.text)).size).toBe(atAlice.length)
    await alice.call('netSendMany', { channel: ch, prefix: 'j-', count: 5 })
    const atBob: Got[] = await bob.call('netReceiveUntil', { channel: ch, expect: texts('j-', 5) })
    expect(atBob.map((g) => g.text).filter((t) => t.startsWith('j-'))).toEqual(texts('j-', 5))
    await converged(ch, [alice, bob, carol])
    const aliceForks = await alice.call('netForkState', { channel: ch })
    report.push({ fault: 'deliver a refused commit to one member', messages: 15, fired: 2, outcome: `fork reported (alice ${aliceForks.forks}), bob resynced, lost messages re-sent once` })
  })

  it('withhold a commit after its Ack from every other member: each resyncs, the channel converges', async () => {
    const ch = 'acme/mitm/withhold-all'
    const [alice, bob, carol] = await group(ch, ['alice', 'bob', 'carol'])
    const rule = await mitm.call('add', { rule: { action: 'withhold', to: [bob.id, carol.id], from: [alice.id], channel: ch, kind: 'commit' } })
    await alice.call('netRotateKey', { channel: ch }) // acked by the relay, delivered to nobody
    await alice.call('netSendMany', { channel: ch, prefix: 'v-', count: 3 })
    await until('bob and carol healed', async () => [(await eventsOf(bob, 'healed')).length, (await eventsOf(carol, 'healed')).length], (n: number[]) => n[0] > 0 && n[1] > 0, 90_000)
    const withheld = await fired(rule)
    await mitm.call('clear')
    await converged(ch, [alice, bob, carol])
    expect((await alice.call('netMembers', { channel: ch })).sort()).toEqual([alice.id, bob.id, carol.id].sort())
    await carol.call('netSendMany', { channel: ch, prefix: 'z-', count: 10 })
    exactlyOnceInOrder(await alice.call('netReceiveUntil', { channel: ch, expect: texts('z-', 10) }), texts('z-', 10))
    const atBob: Got[] = await bob.call('netReceiveUntil', { channel: ch, expect: texts('z-', 10) })
    expect(atBob.map((g) => g.text).filter((t) => t.startsWith('z-'))).toEqual(texts('z-', 10))
    report.push({ fault: 'withhold an acked commit from all others', messages: 13, fired: withheld, outcome: 'fork reported and resynced by each; same epoch + authenticator' })
  })

  it('chaos: drop, duplicate, reorder and delay on every member at once, with concurrent commits (3 runs)', async () => {
    let total = 0
    let faults = 0
    for (let run = 0; run < 3; run++) {
      const ch = `acme/mitm/chaos-${run}`
      const members = await group(ch, ['alice', 'bob', 'carol'])
      const rules = [
        await mitm.call('add', { rule: { action: 'drop', channel: ch, via: 'push', prob: 0.1 } }),
        await mitm.call('add', { rule: { action: 'duplicate', channel: ch, prob: 0.1 } }),
        await mitm.call('add', { rule: { action: 'reorder', channel: ch, every: 7 } }),
        await mitm.call('add', { rule: { action: 'delay', channel: ch, via: 'push', prob: 0.1, delay_ms: 200 } }),
      ]
      const n = 40
      await Promise.all(members.map(async (m, i) => {
        await m.call('netSendMany', { channel: ch, prefix: `${i}-`, count: n / 2 })
        if (i < 2) await m.call('netRotateKey', { channel: ch }) // alice and bob commit at about the same time
        await m.call('netSendMany', { channel: ch, prefix: `${i}+`, count: n / 2 })
      }))
      total += 3 * n
      for (const [i, m] of members.entries()) {
        const others = [0, 1, 2].filter((j) => j !== i)
        const expect_ = others.flatMap((j) => [...texts(`${j}-`, n / 2), ...texts(`${j}+`, n / 2)])
        const got: Got[] = await m.call('netReceiveUntil', { channel: ch, expect: expect_ })
        for (const j of others) {
          const from = got.filter((g) => g.sender === members[j].id).map((g) => g.text)
          expect(from, `member ${i} from ${j}, run ${run}`).toEqual([...texts(`${j}-`, n / 2), ...texts(`${j}+`, n / 2)])
        }
      }
      for (const r of rules) faults += await fired(r)
      await mitm.call('clear')
      const states = await converged(ch, members)
      expect(states.every((x: any) => x.forks === 0)).toBe(true)
    }
    report.push({ fault: 'chaos: drop 10% + duplicate 10% + reorder 1/7 + delay 10%, all members, concurrent commits', messages: total, fired: faults, outcome: '3 runs: all delivered once, per-sender order; same epoch + authenticator; no fork' })
  })
})
