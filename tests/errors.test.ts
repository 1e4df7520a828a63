// Errors of the JS layer: every code of lib/codes.js maps to its class, the ESM and CommonJS
// entries export the same names, and real rejections of Agent, Channel, Client and
// ClientChannel calls are SkytaleError subclasses chosen by their code.
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { createRequire } from 'node:module'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
// @ts-expect-error plain JS helper
import { signup, startApiServer, startRelay } from './helpers/stack.mjs'

const require = createRequire(import.meta.url)
const sdk = require('../lib/index.js')
const { CODES, CATEGORY_CLASS } = require('../lib/codes.js')
const { Agent, Client, SkytaleChannelManager, SkytaleError, toSkytaleError, errorClassFor } = sdk

/** Resolves with the rejection (or synchronous throw) of `fn`. */
async function rejection(fn: () => unknown): Promise<any> {
  try {
    await fn()
  } catch (e) {
    return e
  }
  throw new Error('expected a rejection')
}

function expectError(err: any, cls: string, code: string) {
  expect(err, `${err?.name} ${err?.code}: ${err?.message}`).toBeInstanceOf(SkytaleError)
  expect(err).toBeInstanceOf(sdk[cls])
  expect(err.name).toBe(cls)
  expect(err.code).toBe(code)
}

describe('error code table', () => {
  it('maps every code to the class of its category', () => {
    const codes = Object.keys(CODES)
    expect(codes.length).toBeGreaterThan(60)
    for (const code of codes) {
      const cls = CATEGORY_CLASS[CODES[code]]
      expect(cls, code).toBeTypeOf('string')
      expect(errorClassFor(code), code).toBe(sdk[cls])
      expectError(toSkytaleError(Object.assign(new Error('x'), { code })), cls, code)
    }
  })

  it('files the codes the old regexes misfiled', () => {
    const cases: [string, string][] = [
      ['SKYTALE_INVALID_STATE', 'StateError'],
      ['SKYTALE_CLIENT_CLOSED', 'StateError'],
      ['SKYTALE_KEYSTORE_LOCKED', 'KeystoreError'],
      ['SKYTALE_KEYSTORE_CORRUPT', 'KeystoreError'],
      ['SKYTALE_KEYSTORE_WRONG_KEY', 'KeystoreError'],
      ['SKYTALE_STORAGE', 'KeystoreError'],
      ['SKYTALE_INVALID_ARGUMENT', 'ValidationError'],
      ['SKYTALE_INVALID_CHANNEL_NAME', 'ValidationError'],
      ['SKYTALE_AGENT_NOT_REGISTERED', 'AuthError'],
      ['SKYTALE_CREDENTIAL_INVALID', 'AuthError'],
      ['SKYTALE_RATE_LIMITED', 'TransportError'],
      ['SKYTALE_NOT_A_MEMBER', 'ChannelError'],
      ['SKYTALE_DECRYPT_FAILED', 'MlsError'],
    ]
    for (const [code, cls] of cases) expectError(toSkytaleError({ code, message: 'm' }), cls, code)
  })

  it('unknown codes and foreign errors become the base class; napi argument errors become ValidationError', () => {
    const unknown = toSkytaleError({ code: 'SKYTALE_SOMETHING_NEW', message: 'm' })
    expect(unknown.constructor).toBe(SkytaleError)
    expect(unknown.code).toBe('SKYTALE_SOMETHING_NEW')
    const foreign = toSkytaleError(new TypeError('boom'))
    expect(foreign.constructor).toBe(SkytaleError)
    expect(foreign.code).toBe('SKYTALE_INTERNAL')
    expect(foreign.cause).toBeInstanceOf(TypeError)
    expectError(toSkytaleError(Object.assign(new Error('m'), { code: 'InvalidArg' })), 'ValidationError', 'SKYTALE_INVALID_ARGUMENT')
    const same = new sdk.ChannelError('m', 'SKYTALE_CHANNEL_EXISTS')
    expect(toSkytaleError(same)).toBe(same)
  })

  it('the ESM entry exports exactly the names of the CommonJS entry, as the same objects', async () => {
    const esm = await import('../lib/index.mjs')
    expect(Object.keys(esm).sort()).toEqual(Object.keys(sdk).sort())
    for (const k of Object.keys(sdk)) expect(esm[k], k).toBe(sdk[k])
  })
})

describe('real rejections are SkytaleError subclasses', () => {
  let root: string
  beforeAll(() => { root = mkdtempSync(join(tmpdir(), 'skytale-errors-')) })
  afterAll(() => rmSync(root, { recursive: true, force: true }))
  const key = (b: number) => new Uint8Array(32).fill(b)

  it('Agent and Channel', async () => {
    const dataDir = join(root, 'agent')
    expectError(await rejection(() => Agent.open({ dataDir, identity: 'not valid!', keystoreKey: key(1) })), 'ValidationError', 'SKYTALE_INVALID_IDENTITY')
    expectError(await rejection(() => Agent.open({ dataDir, identity: 'alice', keystoreKey: new Uint8Array(5) })), 'ValidationError', 'SKYTALE_INVALID_ARGUMENT')
    const agent = await Agent.open({ dataDir, identity: 'alice', keystoreKey: key(1) })
    expect(agent).toBeInstanceOf(Agent)
    expectError(await rejection(() => agent.createChannel('no slashes')), 'ValidationError', 'SKYTALE_INVALID_CHANNEL_NAME')
    expectError(await rejection(() => agent.channel('acme/x/missing')), 'ChannelError', 'SKYTALE_CHANNEL_NOT_FOUND')
    expectError(await rejection(() => agent.generateKeyPackages('two' as any)), 'ValidationError', 'SKYTALE_INVALID_ARGUMENT')
    const channel = await agent.createChannel('acme/x/general')
    expect(channel).toBeInstanceOf(sdk.Channel)
    expectError(await rejection(() => agent.createChannel('acme/x/general')), 'ChannelError', 'SKYTALE_CHANNEL_EXISTS')
    expectError(await rejection(() => channel.processIncoming(new Uint8Array([1, 2, 3]))), 'MlsError', 'SKYTALE_INVALID_MESSAGE')
    expectError(await rejection(() => Agent.open({ dataDir, identity: 'alice', keystoreKey: key(1) })), 'KeystoreError', 'SKYTALE_KEYSTORE_LOCKED')
    agent.close()
    expectError(await rejection(() => agent.channels()), 'StateError', 'SKYTALE_INVALID_STATE')
    expectError(await rejection(() => agent.createChannel('acme/x/other')), 'StateError', 'SKYTALE_INVALID_STATE')
    expectError(await rejection(() => Agent.open({ dataDir, identity: 'alice', keystoreKey: key(2) })), 'KeystoreError', 'SKYTALE_KEYSTORE_WRONG_KEY')
    expectError(await rejection(() => Agent.open({ dataDir, identity: 'bob', keystoreKey: key(1) })), 'KeystoreError', 'SKYTALE_IDENTITY_MISMATCH')
  })

  it('Client, ClientChannel and SkytaleChannelManager', async () => {
    const api = await startApiServer({ dataDir: join(root, 'api') })
    const relay = await startRelay({ dataDir: join(root, 'relay'), jwksUrl: `${api.url}/.well-known/jwks.json` })
    const agent = await Agent.open({ dataDir: join(root, 'c'), identity: 'carol', keystoreKey: key(3) })
    try {
      const apiKey = await signup(api.url, 'acme')
      expectError(await rejection(() => Client.connect({ agent, apiUrl: 'http://127.0.0.1:9', apiKey, relay: relay.address })), 'TransportError', 'SKYTALE_API_UNREACHABLE')
      expectError(await rejection(() => Client.connect(agent, { apiUrl: api.url, apiKey: 'sk_live_nope', relay: relay.address })), 'AuthError', 'SKYTALE_AUTH_KEY_INVALID')
      expectError(await rejection(() => Client.connect(agent, { apiUrl: api.url, apiKey, relay: relay.address, selfUpdateIntervalSecs: 86_401 })), 'ValidationError', 'SKYTALE_INVALID_ARGUMENT')
      const client = await Client.connect({ agent, apiUrl: api.url, apiKey, relay: relay.address })
      expect(client).toBeInstanceOf(Client)
      expectError(await rejection(() => client.createChannel('other/x/y')), 'AuthError', 'SKYTALE_FORBIDDEN_CHANNEL')
      // client.channel() never touches the keystore on the JS thread: a missing channel fails on use.
      expectError(await rejection(() => client.channel('acme/x/none').members()), 'ChannelError', 'SKYTALE_CHANNEL_NOT_FOUND')
      expectError(await rejection(() => client.channel('not a channel')), 'ValidationError', 'SKYTALE_INVALID_CHANNEL_NAME')
      expectError(await rejection(() => client.joinWithToken('acme/x/y', 'skt_inv_garbage', 1000)), 'ChannelError', 'SKYTALE_INVITE_INVALID')
      const ch = await client.createChannel('acme/x/y')
      expect(ch).toBeInstanceOf(sdk.ClientChannel)
      await client.close()
      expectError(await rejection(() => ch.send(new Uint8Array([1]))), 'StateError', 'SKYTALE_CLIENT_CLOSED')

      const mgr = new SkytaleChannelManager({ identity: 'dave', dataDir: join(root, 'd'), apiUrl: api.url, apiKey, relay: relay.address, keystoreKey: key(4) })
      try {
        expectError(await rejection(() => mgr.send('acme/x/none', 'x')), 'ChannelError', 'SKYTALE_CHANNEL_NOT_FOUND')
        expectError(await rejection(() => mgr.create('bad')), 'ValidationError', 'SKYTALE_INVALID_CHANNEL_NAME')
      } finally {
        await mgr.close()
      }
      expectError(await rejection(() => new SkytaleChannelManager({ identity: 'e', apiKey: 'x', keystoreKey: 'short' }).ready()), 'ValidationError', 'SKYTALE_INVALID_ARGUMENT')
      const tooLong = new SkytaleChannelManager({ identity: 'f', dataDir: join(root, 'f'), apiUrl: api.url, apiKey, relay: relay.address, keystoreKey: key(5), selfUpdateIntervalSecs: 86_401 })
      expectError(await rejection(() => tooLong.ready()), 'ValidationError', 'SKYTALE_INVALID_ARGUMENT')
      await tooLong.close()
    } finally {
      agent.close()
      await relay.stop()
      await api.stop()
    }
  })
})
