// End-to-end tests of the native core through the napi binding, with every agent in its own
// process and its own data directory (issue: native core).
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { randomBytes } from 'node:crypto'
import { createRequire } from 'node:module'
// @ts-expect-error plain JS helper
import { startAgentProcess } from './helpers/agent-process.mjs'

const require = createRequire(import.meta.url)
const sdk = require('../index.js') as typeof import('../index.js')
const pub = require('../lib/index.js') as typeof import('../lib/index.js')

const CH = 'acme/research/summarizer'
type Proc = ReturnType<typeof startAgentProcess>

function listFiles(dir: string): string[] {
  return readdirSync(dir).flatMap((f) => {
    const p = join(dir, f)
    return statSync(p).isDirectory() ? listFiles(p) : [p]
  })
}

describe('native core, agents in separate processes', () => {
  let root: string
  let aliceDir: string
  let bobDir: string
  const aliceKey = randomBytes(32)
  const procs: Proc[] = []
  const start = () => { const p = startAgentProcess(); procs.push(p); return p }

  beforeEach(() => {
    root = mkdtempSync(join(tmpdir(), 'skytale-e2e-'))
    aliceDir = join(root, 'alice')
    bobDir = join(root, 'bob')
  })
  afterEach(async () => {
    await Promise.all(procs.splice(0).map((p) => p.kill()))
    rmSync(root, { recursive: true, force: true })
  })

  async function setup() {
    const alice = start()
    const bob = start()
    await alice.call('open', { dataDir: aliceDir, identity: 'alice', keystoreKey: new Uint8Array(aliceKey) })
    await bob.call('open', { dataDir: bobDir, identity: 'bob', passphrase: 'correct horse' })
    const [kp] = await bob.call('generateKeyPackages', { count: 1 })
    await alice.call('createChannel', { name: CH })
    const { welcome, epoch } = await alice.call('addMembers', { channel: CH, keyPackages: [kp] })
    expect(epoch).toBe(1)
    const joined = await bob.call('joinChannel', { welcome })
    expect(joined).toEqual({ name: CH, epoch: 1 })
    return { alice, bob, kp }
  }

  async function send(from: Proc, to: Proc, text: string) {
    const wire = await from.call('encrypt', { channel: CH, text })
    const ev = await to.call('processIncoming', { channel: CH, wire })
    expect(ev.kind).toBe('message')
    expect(ev.text).toBe(text)
    return wire
  }

  it('round trip both ways, and the data dirs hold no plaintext and no plain SQLite file', async () => {
    const { alice, bob } = await setup()
    const marker = `PLAINTEXT-MARKER-${randomBytes(8).toString('hex')}`
    const wire = await send(alice, bob, marker)
    expect(Buffer.from(wire).includes(Buffer.from(marker))).toBe(false)
    await send(bob, alice, `reply ${marker}`)
    const ev = await alice.call('members', { channel: CH })
    expect(ev.sort()).toEqual(['alice', 'bob'])
    await alice.stop(); await bob.stop()
    for (const file of [...listFiles(aliceDir), ...listFiles(bobDir)]) {
      const bytes = readFileSync(file)
      expect(bytes.includes(Buffer.from(marker)), file).toBe(false)
      expect(bytes.subarray(0, 15).toString('latin1'), file).not.toBe('SQLite format 3')
    }
  })

  it('kill -9 an agent, reopen its data dir in a new process, continue both ways', async () => {
    const { alice, bob } = await setup()
    await send(alice, bob, 'before the crash')
    const wireInFlight = await alice.call('encrypt', { channel: CH, text: 'sent while bob was down' })
    await bob.kill()
    const bob2 = start()
    await bob2.call('open', { dataDir: bobDir, identity: 'bob', passphrase: 'correct horse' })
    expect(await bob2.call('channels')).toEqual([CH])
    expect(await bob2.call('epoch', { channel: CH })).toBe(1)
    const ev = await bob2.call('processIncoming', { channel: CH, wire: wireInFlight })
    expect(ev.text).toBe('sent while bob was down')
    await send(bob2, alice, 'bob is back')
    await send(alice, bob2, 'welcome back')
    // Membership changes keep working after the restart.
    await alice.kill()
    const alice2 = start()
    await alice2.call('open', { dataDir: aliceDir, identity: 'alice', keystoreKey: new Uint8Array(aliceKey) })
    const rot = await alice2.call('rotateKey', { channel: CH })
    const cev = await bob2.call('processIncoming', { channel: CH, wire: rot.commit })
    expect(cev).toMatchObject({ kind: 'commit', sender: 'alice', epoch: 2 })
    expect(await alice2.call('exportSecret', { channel: CH })).toEqual(await bob2.call('exportSecret', { channel: CH }))
    await send(alice2, bob2, 'new epoch')
  })

  it('tampered ciphertext is SKYTALE_DECRYPT_FAILED and the channel still works', async () => {
    const { alice, bob } = await setup()
    const wire: Uint8Array = await alice.call('encrypt', { channel: CH, text: 'integrity' })
    const bad = new Uint8Array(wire)
    bad[bad.length - 3] ^= 0x40
    await expect(bob.call('processIncoming', { channel: CH, wire: bad })).rejects.toMatchObject({ code: 'SKYTALE_DECRYPT_FAILED' })
    const ev = await bob.call('processIncoming', { channel: CH, wire })
    expect(ev.text).toBe('integrity')
    await send(bob, alice, 'still fine')
  })

  it('the same message twice is SKYTALE_REPLAY and state is unharmed', async () => {
    const { alice, bob } = await setup()
    const wire = await send(alice, bob, 'once')
    await expect(bob.call('processIncoming', { channel: CH, wire })).rejects.toMatchObject({ code: 'SKYTALE_REPLAY' })
    await send(alice, bob, 'twice')
    await send(bob, alice, 'and back')
    const rot = await bob.call('rotateKey', { channel: CH })
    await alice.call('processIncoming', { channel: CH, wire: rot.commit })
    await expect(alice.call('processIncoming', { channel: CH, wire: rot.commit })).rejects.toMatchObject({ code: 'SKYTALE_WRONG_EPOCH' })
    await send(alice, bob, 'after rotation')
  })

  it('a KeyPackage used twice is SKYTALE_KEY_PACKAGE_USED', async () => {
    const { alice, bob, kp } = await setup()
    await alice.call('createChannel', { name: 'acme/research/second' })
    await expect(alice.call('addMembers', { channel: 'acme/research/second', keyPackages: [kp] }))
      .rejects.toMatchObject({ code: 'SKYTALE_KEY_PACKAGE_USED' })
    const carol = start()
    await carol.call('open', { dataDir: join(root, 'carol'), identity: 'carol', keystoreKey: new Uint8Array(randomBytes(32)) })
    await carol.call('createChannel', { name: 'acme/research/third' })
    const { welcome } = await carol.call('addMembers', { channel: 'acme/research/third', keyPackages: [kp] })
    await expect(bob.call('joinChannel', { welcome })).rejects.toMatchObject({ code: 'SKYTALE_KEY_PACKAGE_USED' })
    await send(alice, bob, 'first channel unaffected')
  })

  it('wrong keystore key is SKYTALE_KEYSTORE_WRONG_KEY and the right key still opens', async () => {
    const { alice, bob } = await setup()
    await send(alice, bob, 'keep me')
    await alice.stop(); await bob.stop()
    const a2 = start()
    await expect(a2.call('open', { dataDir: aliceDir, identity: 'alice', keystoreKey: new Uint8Array(randomBytes(32)) }))
      .rejects.toMatchObject({ code: 'SKYTALE_KEYSTORE_WRONG_KEY' })
    await expect(a2.call('open', { dataDir: bobDir, identity: 'bob', passphrase: 'wrong horse' }))
      .rejects.toMatchObject({ code: 'SKYTALE_KEYSTORE_WRONG_KEY' })
    await a2.call('open', { dataDir: aliceDir, identity: 'alice', keystoreKey: new Uint8Array(aliceKey) })
    expect(await a2.call('channels')).toEqual([CH])
    const b2 = start()
    await b2.call('open', { dataDir: bobDir, identity: 'bob', passphrase: 'correct horse' })
    await send(a2, b2, 'after wrong keys')
  })

  it('remove and re-add: the removed member cannot read, then rejoins', async () => {
    const { alice, bob } = await setup()
    const rm = await alice.call('removeMembers', { channel: CH, identities: ['bob'] })
    const ev = await bob.call('processIncoming', { channel: CH, wire: rm.commit })
    expect(ev).toMatchObject({ kind: 'commit', selfRemoved: true, removed: ['bob'] })
    const wire = await alice.call('encrypt', { channel: CH, text: 'secret after removal' })
    await expect(bob.call('processIncoming', { channel: CH, wire })).rejects.toMatchObject({ code: 'SKYTALE_NOT_A_MEMBER' })
    const [kp2] = await bob.call('generateKeyPackages', { count: 1 })
    const add = await alice.call('addMembers', { channel: CH, keyPackages: [kp2] })
    await bob.call('joinChannel', { welcome: add.welcome })
    await send(alice, bob, 'welcome again')
  })
})

describe('native core, in-process API', () => {
  it('validates channel names and keystore options with stable codes', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'skytale-api-'))
    try {
      const agent = await sdk.Agent.open({ dataDir: dir, identity: 'solo', keystoreKey: new Uint8Array(32).fill(9) })
      expect(agent.cipherVersion.length).toBeGreaterThan(0)
      await expect(agent.createChannel('Not/A Valid/Name')).rejects.toMatchObject({ code: 'SKYTALE_INVALID_CHANNEL_NAME' })
      await expect(agent.createChannel('acme/only-two')).rejects.toMatchObject({ code: 'SKYTALE_INVALID_CHANNEL_NAME' })
      const ch = await agent.createChannel('acme/solo/notes')
      await expect(agent.createChannel('acme/solo/notes')).rejects.toMatchObject({ code: 'SKYTALE_CHANNEL_EXISTS' })
      expect(() => agent.channel('acme/solo/missing')).toThrow(expect.objectContaining({ code: 'SKYTALE_CHANNEL_NOT_FOUND' }))
      await expect(ch.processIncoming(new Uint8Array([1, 2, 3]))).rejects.toMatchObject({ code: 'SKYTALE_INVALID_MESSAGE' })
      await expect(sdk.Agent.open({ dataDir: dir, identity: 'solo', keystoreKey: new Uint8Array(32).fill(9) }))
        .rejects.toMatchObject({ code: 'SKYTALE_KEYSTORE_LOCKED' })
      agent.close()
      await expect(ch.encrypt(new Uint8Array([1]))).rejects.toMatchObject({ code: 'SKYTALE_INVALID_STATE' })
      const again = await sdk.Agent.open({ dataDir: dir, identity: 'solo', keystoreKey: new Uint8Array(32).fill(9) })
      expect(again.channel('acme/solo/notes').epoch).toBe(0)
      again.close()
      await expect(sdk.Agent.open({ dataDir: dir, identity: 'solo', keystoreKey: new Uint8Array(31) }))
        .rejects.toMatchObject({ code: 'SKYTALE_INVALID_ARGUMENT' })
    } finally {
      rmSync(dir, { recursive: true, force: true })
    }
  })

  it('batch calls: one keystore transaction for many messages, all or nothing, the failing index named', async () => {
    const root = mkdtempSync(join(tmpdir(), 'skytale-batch-'))
    try {
      const alice = await pub.Agent.open({ dataDir: join(root, 'a'), identity: 'alice', keystoreKey: new Uint8Array(32).fill(1) })
      const bob = await pub.Agent.open({ dataDir: join(root, 'b'), identity: 'bob', keystoreKey: new Uint8Array(32).fill(2) })
      const [kp] = await bob.generateKeyPackages(1)
      const chA = await alice.createChannel('acme/batch/x')
      const { welcome } = await chA.addMembers([kp])
      const chB = await bob.joinChannel(welcome!)
      const enc = new TextEncoder()
      const texts = ['one', 'two', 'three', 'four']
      const wires = await chA.encryptBatch(texts.map((t) => enc.encode(t)))
      expect(wires).toHaveLength(4)

      // A tampered third message: the batch is refused with its index, and nothing changed —
      // the two before it are not consumed (processing them again is not a replay).
      const bad = new Uint8Array(wires[2])
      bad[bad.length - 3] ^= 0x40
      const err = await chB.processIncomingBatch([wires[0], wires[1], bad, wires[3]]).catch((e: unknown) => e)
      expect(err).toBeInstanceOf(pub.SkytaleError)
      expect(err).toMatchObject({ code: 'SKYTALE_DECRYPT_FAILED', index: 2 })
      const events = await chB.processIncomingBatch(wires)
      expect(events.map((e) => e.kind)).toEqual(['message', 'message', 'message', 'message'])
      expect(events.map((e) => new TextDecoder().decode(e.data!))).toEqual(texts)
      expect(events.every((e) => e.sender === 'alice')).toBe(true)

      // Replayed: the first item already fails.
      await expect(chB.processIncomingBatch(wires)).rejects.toMatchObject({ code: 'SKYTALE_REPLAY', index: 0 })
      // Nothing in the batch: nothing to do.
      expect(await chB.processIncomingBatch([])).toEqual([])
      // The channel goes on, both ways, one by one and batched.
      const back = await chB.encryptBatch([enc.encode('back')])
      expect(new TextDecoder().decode((await chA.processIncoming(back[0])).data!)).toBe('back')
      alice.close()
      const closed = await chA.encryptBatch([enc.encode('closed')]).catch((e: unknown) => e)
      expect(closed).toMatchObject({ code: 'SKYTALE_INVALID_STATE' })
      expect(closed).not.toHaveProperty('index')
      bob.close()
    } finally {
      rmSync(root, { recursive: true, force: true })
    }
  })

  it('setPastEpochs(0): a message one epoch late no longer decrypts; the default keeps it readable', async () => {
    const root = mkdtempSync(join(tmpdir(), 'skytale-past-'))
    try {
      const open = (id: string, n: number) => pub.Agent.open({ dataDir: join(root, id), identity: id, keystoreKey: new Uint8Array(32).fill(n) })
      const [alice, bob, carol] = [await open('alice', 1), await open('bob', 2), await open('carol', 3)]
      expect(() => alice.setPastEpochs(17)).toThrow(expect.objectContaining({ code: 'SKYTALE_INVALID_ARGUMENT' }))
      alice.setPastEpochs(0)
      const enc = new TextEncoder()
      // Alice keeps no past epoch, carol the default one; bob sends to both a message of
      // epoch 1 that they read only after their own rotation.
      const late = async (owner: typeof alice, name: string) => {
        const ch = await owner.createChannel(name)
        const { welcome } = await ch.addMembers(await bob.generateKeyPackages(1))
        const chB = await bob.joinChannel(welcome!)
        const wire = await chB.encrypt(enc.encode('one epoch late'))
        await ch.rotateKey()
        return ch.processIncoming(wire)
      }
      await expect(late(alice, 'acme/past/none')).rejects.toMatchObject({ code: expect.stringMatching(/^SKYTALE_/) })
      expect(new TextDecoder().decode((await late(carol, 'acme/past/one')).data!)).toBe('one epoch late')
      for (const a of [alice, bob, carol]) a.close()
    } finally {
      rmSync(root, { recursive: true, force: true })
    }
  })
})
