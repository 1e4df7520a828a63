// Agents are who they say they are (issue: per-agent credentials): the real API server, the
// real relay, honest agents in their own processes, and a hostile agent (tests/hostile) doing
// what an org-mate with a valid key, or a compromised member, can do with its own code.
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { createPrivateKey, createPublicKey, generateKeyPairSync, randomBytes } from 'node:crypto'
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

/** A fresh Ed25519 public key, base64url (what an agent registers). */
function newSignatureKey(): string {
  return generateKeyPairSync('ed25519').publicKey.export({ format: 'jwk' }).x as string
}

describe('per-agent credentials', () => {
  let root: string
  let apiSrv: Awaited<ReturnType<typeof startApiServer>>
  let relay: Awaited<ReturnType<typeof startRelay>>
  let admin: string
  let evilAdmin: string
  const procs: Proc[] = []
  const keys = new Map<string, Uint8Array>()

  beforeAll(async () => {
    root = mkdtempSync(join(tmpdir(), 'skytale-identity-e2e-'))
    apiSrv = await startApiServer({ dataDir: join(root, 'api') })
    relay = await startRelay({
      dataDir: join(root, 'relay'),
      jwksUrl: `${apiSrv.url}/.well-known/jwks.json`,
      env: { SKYTALE_RELAY_REVOCATION_POLL_SECS: '1' },
    })
    admin = await signup(apiSrv.url, 'acme')
    evilAdmin = await signup(apiSrv.url, 'evil')
  })
  afterAll(async () => {
    await Promise.all(procs.map((p) => p.kill()))
    await relay?.kill()
    await apiSrv?.stop()
    rmSync(root, { recursive: true, force: true })
  })

  const uid = (name: string) => `${name}-${randomBytes(3).toString('hex')}`

  async function agent(identity: string, apiKey = admin) {
    const p = startAgentProcess()
    procs.push(p)
    if (!keys.has(identity)) keys.set(identity, new Uint8Array(randomBytes(32)))
    await p.call('open', { dataDir: join(root, identity), identity, keystoreKey: keys.get(identity) })
    await p.call('connect', { apiUrl: apiSrv.url, apiKey, relay: relay.address })
    return p
  }

  async function agentKey(identity: string): Promise<{ id: string; key: string }> {
    const r = await api(apiSrv.url, 'POST', '/v1/keys', admin, { name: `key-${identity}`, identity })
    expect(r.status).toBe(201)
    return { id: r.body.id, key: r.body.key }
  }

  async function token(key: string, identity?: string, scope?: string) {
    return api(apiSrv.url, 'POST', '/v1/tokens', key, { ...(identity ? { identity } : {}), ...(scope ? { scope } : {}) })
  }

  it('an impostor with an agent key bound to mallory cannot become bob', async () => {
    const bob = uid('bob')
    const mallory = uid('mallory')
    await agent(bob) // the real bob registers first
    const { key: malloryKey } = await agentKey(mallory)
    const t = await token(malloryKey, bob)
    expect(t.status).toBe(403)
    expect(t.body.error.code).toBe('SKYTALE_AUTH_IDENTITY_FORBIDDEN')
    const reg = await api(apiSrv.url, 'POST', '/v1/agents', malloryKey, { identity: bob, signatureKey: newSignatureKey() })
    expect(reg.body.error.code).toBe('SKYTALE_AUTH_IDENTITY_FORBIDDEN')
    // An agent process that calls itself bob, with mallory's key: refused before any relay contact.
    const p = startAgentProcess()
    procs.push(p)
    await p.call('open', { dataDir: join(root, `fake-${bob}`), identity: bob, keystoreKey: new Uint8Array(randomBytes(32)) })
    await expect(p.call('connect', { apiUrl: apiSrv.url, apiKey: malloryKey, relay: relay.address })).rejects.toMatchObject({
      code: 'SKYTALE_AUTH_IDENTITY_FORBIDDEN',
    })
    // Even the org's admin key cannot put another signature key under bob's name.
    await expect(p.call('connect', { apiUrl: apiSrv.url, apiKey: admin, relay: relay.address })).rejects.toMatchObject({
      code: 'SKYTALE_AGENT_KEY_MISMATCH',
    })
    // A token without an identity is not accepted by the relay (the API server never issues one).
    const noIdentity = await token(admin)
    expect(noIdentity.status).toBe(400)
  })

  it('forged bob credentials (self-signed, or from another org) are refused by addMember', async () => {
    const alice = await agent(uid('alice'))
    const ch = `acme/identity/${uid('forged')}`
    await alice.call('netCreateChannel', { name: ch })
    for (const forge of ['self', 'other-org']) {
      // bob is a registered agent of acme (so tokens for bob exist), but the key packages on the
      // relay under bob's name were made by the forger.
      const bob = uid(`bob-${forge}`)
      expect((await api(apiSrv.url, 'POST', '/v1/agents', admin, { identity: bob, signatureKey: newSignatureKey() })).status).toBe(201)
      const t = await token(admin, bob)
      expect(t.status).toBe(200)
      const published = await runHostile('publish-forged', {
        dir: join(root, `forger-${bob}`),
        identity: bob,
        org: 'acme',
        relay: relay.address,
        token: t.body.token,
        forge,
        ...(forge === 'other-org' ? { api: apiSrv.url, 'api-key': evilAdmin } : {}),
      })
      expect(published).toMatchObject({ ok: true })
      await expect(alice.call('netAddMember', { channel: ch, identity: bob })).rejects.toMatchObject({
        code: 'SKYTALE_CREDENTIAL_INVALID',
      })
    }
    // Nothing changed: alice alone, still at epoch 0; a message to the channel reaches no impostor.
    expect(await alice.call('netMembers', { channel: ch })).toEqual([expect.stringMatching(/^alice-/)])
    expect(await alice.call('netEpoch', { channel: ch })).toBe(0)
    expect(await alice.call('netSend', { channel: ch, text: 'secret' })).toBeGreaterThan(0)
  })

  it('a commit adding an uncertified leaf is rejected by every other member; the channel keeps working', async () => {
    const [aliceId, carolId, malloryId, daveId] = [uid('alice'), uid('carol'), uid('mallory'), uid('dave')]
    const alice = await agent(aliceId)
    const carol = await agent(carolId)
    const { key: malloryKey } = await agentKey(malloryId)
    const mallory = await agent(malloryId, malloryKey)
    const ch = `acme/identity/${uid('hostile')}`
    await alice.call('netCreateChannel', { name: ch })
    await alice.call('netAddMember', { channel: ch, identity: carolId })
    await alice.call('netAddMember', { channel: ch, identity: malloryId })
    await carol.call('waitForChannel', { channel: ch })
    await mallory.call('waitForChannel', { channel: ch })
    // Out-of-band check: everyone sees the same fingerprints, and alice's matches her own.
    const fps = await alice.call('netFingerprints', { channel: ch })
    expect(fps[aliceId]).toBe(await alice.call('fingerprint'))
    await until(async () => Object.keys(await carol.call('netFingerprints', { channel: ch })).length === 3, 30_000, 'carol sees 3 members')
    expect(await carol.call('netFingerprints', { channel: ch })).toEqual(fps)
    const before = { epoch: await carol.call('netEpoch', { channel: ch }), members: (await carol.call('netMembers', { channel: ch })).sort() }
    expect(before.members).toHaveLength(3)

    // mallory's process stops; her keystore is then used by the hostile agent to commit an Add of
    // a leaf with a self-signed credential for "bob".
    await mallory.kill()
    const t = await token(malloryKey)
    expect(t.status).toBe(200)
    const res = await runHostile('commit-add', {
      dir: join(root, malloryId),
      identity: malloryId,
      'keystore-key': Buffer.from(keys.get(malloryId)!).toString('hex'),
      channel: ch,
      relay: relay.address,
      token: t.body.token,
      org: 'acme',
      'forged-identity': 'bob-forged',
    })
    expect(res).toMatchObject({ ok: true }) // the relay ordered it (it cannot judge credentials)

    // Both honest members refuse it with SKYTALE_CREDENTIAL_INVALID and keep their state.
    for (const p of [alice, carol]) {
      await until(async () => (await p.call('events')).some((e: any) => e.code === 'SKYTALE_CREDENTIAL_INVALID'), 30_000, 'rejection')
      expect(await p.call('netEpoch', { channel: ch })).toBe(before.epoch)
      expect((await p.call('netMembers', { channel: ch })).sort()).toEqual(before.members)
    }
    // The channel keeps working: a message goes through, and the next commit takes the next slot.
    await alice.call('netSend', { channel: ch, text: 'after the rejected commit' })
    const got = await carol.call('netReceive', { channel: ch, count: 1, timeoutMs: 30_000 })
    expect(got.filter((m: any) => m.text).map((m: any) => m.text)).toEqual(['after the rejected commit'])
    const dave = await agent(daveId)
    await alice.call('netAddMember', { channel: ch, identity: daveId })
    await dave.call('waitForChannel', { channel: ch })
    await until(async () => (await carol.call('netMembers', { channel: ch })).includes(daveId), 30_000, 'carol sees dave')
    expect(await carol.call('netEpoch', { channel: ch })).toBe(before.epoch + 1)
    await carol.call('netSend', { channel: ch, text: 'welcome dave' })
    const atDave = await dave.call('netReceive', { channel: ch, count: 1, timeoutMs: 30_000 })
    expect(atDave.filter((m: any) => m.text).map((m: any) => m.text)).toEqual(['welcome dave'])
  })

  it('a revoked API key or agent loses its relay session within 30 s and cannot reconnect', async () => {
    const erinId = uid('erin')
    const { id: erinKeyId, key: erinKey } = await agentKey(erinId)
    const erin = await agent(erinId, erinKey)
    expect(await erin.call('connected')).toBe(true)
    const t0 = Date.now()
    expect((await api(apiSrv.url, 'DELETE', `/v1/keys/${erinKeyId}`, admin)).status).toBe(204)
    await until(async () => !(await erin.call('connected')), 30_000, 'erin disconnected')
    expect(Date.now() - t0).toBeLessThan(30_000)
    const again = startAgentProcess()
    procs.push(again)
    await again.call('open', { dataDir: join(root, `${erinId}-2`), identity: erinId, keystoreKey: new Uint8Array(randomBytes(32)) })
    await expect(again.call('connect', { apiUrl: apiSrv.url, apiKey: erinKey, relay: relay.address })).rejects.toMatchObject({
      code: 'SKYTALE_AUTH_KEY_REVOKED',
    })

    const frankId = uid('frank')
    const frank = await agent(frankId)
    const t1 = Date.now()
    expect((await api(apiSrv.url, 'DELETE', `/v1/agents/${frankId}`, admin)).status).toBe(204)
    await until(async () => !(await frank.call('connected')), 30_000, 'frank disconnected')
    expect(Date.now() - t1).toBeLessThan(30_000)
    expect((await token(admin, frankId)).body.error.code).toBe('SKYTALE_AGENT_REVOKED')
  })

  it('a channels:r token cannot send, commit, create channels or invite', async () => {
    const owner = await agent(uid('owner'))
    const ch = `acme/identity/${uid('scope')}`
    await owner.call('netCreateChannel', { name: ch })
    const reader = uid('reader')
    expect((await api(apiSrv.url, 'POST', '/v1/agents', admin, { identity: reader, signatureKey: newSignatureKey() })).status).toBe(201)
    const t = await token(admin, reader, 'channels:r')
    expect(t.status).toBe(200)
    const r = await runHostile('probe', { relay: relay.address, token: t.body.token, channel: ch })
    expect(r).toMatchObject({
      ok: true,
      fetch: 'SKYTALE_NOT_A_MEMBER', // reads need membership (relay roster); a member's reads: relay/tests/authority.rs
      create: 'SKYTALE_SCOPE_FORBIDDEN',
      send: 'SKYTALE_SCOPE_FORBIDDEN',
      commit: 'SKYTALE_SCOPE_FORBIDDEN',
      invite: 'SKYTALE_SCOPE_FORBIDDEN',
    })
  })
})

describe('issuer key rotation (real API server restarted with rotated keys)', () => {
  it('old tokens work while the old key is listed; a dropped key stops verifying after the refresh interval', async () => {
    const root = mkdtempSync(join(tmpdir(), 'skytale-rotation-e2e-'))
    const port = 30000 + Math.floor(Math.random() * 20000)
    const pem = () => generateKeyPairSync('ed25519').privateKey.export({ format: 'pem', type: 'pkcs8' }).toString()
    const [k1, k2] = [pem(), pem()]
    const start = (env: Record<string, string>) => startApiServer({ dataDir: join(root, 'api'), env: { PORT: String(port), ...env } })
    let apiSrv = await start({ SKYTALE_SIGNING_KEY: k1 })
    const relay = await startRelay({
      dataDir: join(root, 'relay'),
      jwksUrl: `${apiSrv.url}/.well-known/jwks.json`,
      env: { SKYTALE_RELAY_JWKS_REFRESH_SECS: '1', SKYTALE_RELAY_JWKS_MIN_REFETCH_SECS: '0' },
    })
    try {
      const admin = await signup(apiSrv.url, 'rot')
      const who = 'rotating-agent'
      expect((await api(apiSrv.url, 'POST', '/v1/agents', admin, { identity: who, signatureKey: newSignatureKey() })).status).toBe(201)
      const probe = async (tok: string) => runHostile('probe', { relay: relay.address, token: tok })
      const oldToken = (await api(apiSrv.url, 'POST', '/v1/tokens', admin, { identity: who })).body.token
      expect(await probe(oldToken)).toMatchObject({ ok: true })
      // Rotation: k2 signs, k1 is still listed.
      await apiSrv.stop()
      apiSrv = await start({ SKYTALE_SIGNING_KEY: k2, SKYTALE_PREVIOUS_SIGNING_KEYS: k1 })
      const newToken = (await api(apiSrv.url, 'POST', '/v1/tokens', admin, { identity: who })).body.token
      expect(await probe(newToken)).toMatchObject({ ok: true })
      expect(await probe(oldToken)).toMatchObject({ ok: true })
      // k1 is dropped from the JWKS: after the refresh interval its tokens are refused.
      await apiSrv.stop()
      apiSrv = await start({ SKYTALE_SIGNING_KEY: k2 })
      await until(async () => (await probe(oldToken)).code === 'SKYTALE_AUTH_INVALID', 20_000, 'old key dropped')
      expect(await probe(newToken)).toMatchObject({ ok: true })
    } finally {
      await relay.kill()
      await apiSrv.stop()
      rmSync(root, { recursive: true, force: true })
    }
  })
})

describe('revocations when agents on the relay\'s address used up the feed\'s per-IP limit', () => {
  it('the relay\'s signed polls have their own bucket: a revoked agent still loses its session', async () => {
    const root = mkdtempSync(join(tmpdir(), 'skytale-poll-e2e-'))
    const relayDir = join(root, 'relay')
    mkdirSync(relayDir, { recursive: true })
    // The relay's endpoint key, known up front so that the API server can list the relay.
    const seed = randomBytes(32)
    writeFileSync(join(relayDir, 'iroh.key'), seed.toString('hex'))
    const pkcs8 = Buffer.concat([Buffer.from('302e020100300506032b657004220420', 'hex'), seed])
    const jwk = createPublicKey(createPrivateKey({ key: pkcs8, format: 'der', type: 'pkcs8' })).export({ format: 'jwk' })
    const relayId = Buffer.from(jwk.x as string, 'base64url').toString('hex')
    const apiSrv = await startApiServer({
      dataDir: join(root, 'api'),
      env: { SKYTALE_RELAY_URL: `iroh://${relayId}@127.0.0.1:1`, SKYTALE_RATE_REVOCATIONS_PER_IP: '3' },
    })
    const relay = await startRelay({
      dataDir: relayDir,
      jwksUrl: `${apiSrv.url}/.well-known/jwks.json`,
      env: { SKYTALE_RELAY_REVOCATION_POLL_SECS: '1' },
    })
    const procs: Proc[] = []
    try {
      expect(relay.address).toContain(relayId)
      const admin = await signup(apiSrv.url, 'poll')
      const frankId = `frank-${randomBytes(3).toString('hex')}`
      const frank = startAgentProcess()
      procs.push(frank)
      await frank.call('open', { dataDir: join(root, frankId), identity: frankId, keystoreKey: new Uint8Array(randomBytes(32)) })
      await frank.call('connect', { apiUrl: apiSrv.url, apiKey: admin, relay: relay.address })
      // Everything else on 127.0.0.1 (here: this test) uses up the feed's per-IP allowance.
      const feed = async () => (await fetch(`${apiSrv.url}/v1/revocations?since=0`)).status
      await until(async () => (await feed()) === 429, 10_000, 'the per-IP limit used up')
      const t0 = Date.now()
      expect((await api(apiSrv.url, 'DELETE', `/v1/agents/${frankId}`, admin)).status).toBe(204)
      // The relay's next poll (every second, in its own bucket) sees the revocation.
      await until(async () => !(await frank.call('connected')), 20_000, 'frank disconnected')
      expect(Date.now() - t0).toBeLessThan(20_000)
      expect(await feed()).toBe(429)
    } finally {
      await Promise.all(procs.map((p) => p.kill()))
      await relay.kill()
      await apiSrv.stop()
      rmSync(root, { recursive: true, force: true })
    }
  })
})
