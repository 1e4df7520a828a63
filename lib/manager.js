// SkytaleChannelManager: the high-level API of @skytale/sdk. One agent identity, its encrypted
// keystore and its relay connection; channels by name; invites; background delivery with
// Node events or pull-style reads. Built on the native Agent and Client classes.
'use strict'

const { EventEmitter } = require('node:events')
const { join } = require('node:path')
const native = require('../index.js')
const { createError, toSkytaleError } = require('./errors.js')
require('./iter.js')

const encoder = new TextEncoder()
const decoder = new TextDecoder()

function keystoreKeyFrom(value) {
  if (value instanceof Uint8Array) return value
  if (typeof value === 'string' && /^[0-9a-fA-F]{64}$/.test(value)) return new Uint8Array(Buffer.from(value, 'hex'))
  throw createError('SKYTALE_INVALID_ARGUMENT', 'keystoreKey must be 32 bytes (Uint8Array or 64 hex characters)')
}

function toMessage(channel, m) {
  return { channel, sender: m.sender, seq: m.seq, epoch: m.epoch, data: m.data, text: decoder.decode(m.data) }
}

async function guard(promise) {
  try {
    return await promise
  } catch (err) {
    throw toSkytaleError(err)
  }
}

/**
 * The channel manager. Options default to the environment: `SKYTALE_API_KEY`,
 * `SKYTALE_API_URL`, `SKYTALE_RELAY`, `SKYTALE_DATA_DIR` (default `./.skytale/agents/<identity>`),
 * `SKYTALE_KEYSTORE_KEY` (64 hex characters) or `SKYTALE_PASSPHRASE`.
 *
 * Events: `message` ({channel, sender, text, data, seq, epoch}), `member-joined` and
 * `member-left` ({channel, identity, by}), `fork` ({channel, localEpoch, remoteEpoch, reason}:
 * members hold different states of an epoch, or this agent cannot follow the relay's order),
 * `healed` ({channel, epoch}: this agent resynced), `error` (a SkytaleError), `connected`,
 * `disconnected`.
 * While a `message` listener is attached, messages are delivered as events; otherwise they stay
 * buffered (in the encrypted keystore, across restarts) for `receive()` and `messages()`.
 */
class SkytaleChannelManager extends EventEmitter {
  #opts
  #ready = null
  #agent = null
  #client = null
  #closed = false
  #abort = new AbortController()
  #pumps = new Map()
  #events = null

  constructor(options = {}) {
    super()
    const env = process.env
    const identity = options.identity ?? env.SKYTALE_IDENTITY
    if (!identity) throw createError('SKYTALE_INVALID_ARGUMENT', 'identity is required')
    this.#opts = {
      identity,
      apiKey: options.apiKey ?? env.SKYTALE_API_KEY,
      apiUrl: options.apiUrl ?? env.SKYTALE_API_URL ?? 'http://127.0.0.1:7780',
      relay: options.relay ?? env.SKYTALE_RELAY,
      dataDir: options.dataDir ?? env.SKYTALE_DATA_DIR ?? join('.skytale', 'agents', identity),
      keystoreKey: options.keystoreKey ?? env.SKYTALE_KEYSTORE_KEY,
      passphrase: options.passphrase ?? env.SKYTALE_PASSPHRASE,
      selfUpdateIntervalSecs: options.selfUpdateIntervalSecs,
      rateLimitWaitSecs: options.rateLimitWaitSecs,
    }
    this.on('newListener', (event) => {
      if (event === 'message') queueMicrotask(() => this.#startPumps())
    })
  }

  /** The agent's identity. */
  get identity() { return this.#opts.identity }

  /** Opens the keystore and connects to the relay; every other method awaits this. */
  ready() {
    if (!this.#ready) this.#ready = this.#connect()
    return this.#ready
  }

  async #connect() {
    const o = this.#opts
    if (!o.apiKey) throw createError('SKYTALE_AUTH_KEY_INVALID', 'no API key: set SKYTALE_API_KEY or pass apiKey')
    const secret = o.keystoreKey != null ? { keystoreKey: keystoreKeyFrom(o.keystoreKey) } : o.passphrase ? { passphrase: o.passphrase } : null
    if (!secret) throw createError('SKYTALE_INVALID_ARGUMENT', 'no keystore key: set SKYTALE_KEYSTORE_KEY (64 hex) or SKYTALE_PASSPHRASE')
    this.#agent = await guard(native.Agent.open({ dataDir: o.dataDir, identity: o.identity, ...secret }))
    try {
      const selfUpdate = o.selfUpdateIntervalSecs !== undefined ? { selfUpdateIntervalSecs: o.selfUpdateIntervalSecs } : {}
      const rateLimitWait = o.rateLimitWaitSecs !== undefined ? { rateLimitWaitSecs: o.rateLimitWaitSecs } : {}
      this.#client = await guard(native.Client.connect(this.#agent, { apiUrl: o.apiUrl, apiKey: o.apiKey, relay: o.relay, ...selfUpdate, ...rateLimitWait }))
    } catch (err) {
      this.#agent.close()
      throw err
    }
    this.#eventLoop()
    if (this.listenerCount('message') > 0) this.#startPumps()
  }

  #eventLoop() {
    // Pushed by the native side (threadsafe callback): no polling, no timers.
    this.#events = this.#client.onEvent((ev) => {
      if (this.#closed) return
      if (ev.kind === 'error') this.#emitError(createError(ev.code ?? 'SKYTALE_INTERNAL', ev.message ?? 'error'))
      else if (ev.kind === 'joined') { this.emit('joined', { channel: ev.channel, by: ev.message }); this.#startPump(ev.channel) }
      else if (ev.kind === 'members') {
        for (const identity of ev.added ?? []) this.emit('member-joined', { channel: ev.channel, identity, by: ev.message })
        for (const identity of ev.removed ?? []) this.emit('member-left', { channel: ev.channel, identity, by: ev.message })
      }
      else if (ev.kind === 'fork') this.emit('fork', { channel: ev.channel, localEpoch: ev.localEpoch, remoteEpoch: ev.remoteEpoch, reason: ev.message })
      else if (ev.kind === 'healed') this.emit('healed', { channel: ev.channel, epoch: ev.localEpoch })
      else this.emit(ev.kind, ev)
    })
  }

  #emitError(err) {
    if (this.listenerCount('error') > 0) this.emit('error', err)
  }

  #startPumps() {
    if (!this.#client || this.listenerCount('message') === 0) return
    for (const ch of this.#client.channels()) this.#startPump(ch)
  }

  #startPump(channel) {
    if (!this.#client || this.#pumps.has(channel) || this.listenerCount('message') === 0) return
    const ctl = new AbortController()
    this.#abort.signal.addEventListener('abort', () => ctl.abort(), { once: true })
    this.#pumps.set(channel, ctl)
    ;(async () => {
      try {
        for await (const m of this.#client.channel(channel).messages({ signal: ctl.signal })) {
          this.#dispatch(channel, m, true)
          if (this.listenerCount('message') === 0) break
        }
      } catch (err) {
        if (!this.#closed) this.#emitError(toSkytaleError(err))
      } finally {
        this.#pumps.delete(channel)
      }
    })()
  }

  #dispatch(channel, m, emitMessages) {
    if (m.kind === 'commit') return null // membership events come from the client's event stream
    const msg = toMessage(channel, m)
    if (emitMessages) this.emit('message', msg)
    return msg
  }

  /**
   * Creates a channel `org/namespace/service` with this agent as its first member and admin.
   * `policy` sets the least role (`'admin'` | `'member'`) for `add`, `remove`, `invite` and
   * `policy` changes (default: admin for all; leaving never needs a role).
   * @param {string} channel
   * @param {{ policy?: { add?: 'admin'|'member', remove?: 'admin'|'member', invite?: 'admin'|'member', policy?: 'admin'|'member' } }} [options]
   */
  async create(channel, options) {
    await this.ready()
    await guard(this.#client.createChannel(channel, options))
    this.#startPump(channel)
  }

  /** Gives a member the role `'admin'` or `'member'` (needs the `policy` role). */
  async setRole(channel, identity, role) {
    await this.ready()
    await guard(this.#client.setRole(channel, identity, role))
  }

  /** The members of a channel with their roles: `[{ identity, role }]`. */
  async roles(channel) {
    await this.ready()
    return guard(this.#client.roles(channel))
  }

  /** The invites of a channel as its policy records them (`[{ id, createdBy, expiresAt, maxUses, used, revoked }]`). */
  async invites(channel) {
    await this.ready()
    return guard(this.#client.invites(channel))
  }

  /** Revokes an invite (by id or token): every member and the relay refuse it from then on. */
  async revokeInvite(channel, idOrToken) {
    await this.ready()
    await guard(this.#client.revokeInvite(channel, idOrToken))
  }

  /**
   * Creates an invite token (`skt_inv_…`) for a channel: `maxUses` joins (default 1), valid for
   * `ttlSeconds` (default 3600). The relay only ever sees the invite id.
   */
  async invite(channel, { maxUses = 1, ttlSeconds = 3600 } = {}) {
    await this.ready()
    return guard(this.#client.createInvite(channel, maxUses, ttlSeconds))
  }

  /**
   * Joins a channel with an invite token, whether or not a member is online. Rejects with a
   * ChannelError: `SKYTALE_INVITE_INVALID`, `SKYTALE_INVITE_EXPIRED`, `SKYTALE_INVITE_USED_UP`,
   * `SKYTALE_INVITE_WRONG_CHANNEL`, `SKYTALE_JOIN_TIMEOUT`; with an AbortError on `signal`.
   * @param {string} channel @param {string} token
   * @param {{ timeoutMs?: number, signal?: AbortSignal }} [options]
   */
  async joinWithToken(channel, token, { timeoutMs = 60_000, signal } = {}) {
    await this.ready()
    signal?.throwIfAborted()
    const join = guard(this.#client.joinWithToken(channel, token, timeoutMs))
    if (signal) {
      const aborted = new Promise((_, reject) => signal.addEventListener('abort', () => reject(signal.reason), { once: true }))
      join.catch(() => {})
      await Promise.race([join, aborted])
    } else {
      await join
    }
    this.#startPump(channel)
  }

  /** Encrypts and sends a message (string or bytes); resolves with its relay sequence number. */
  async send(channel, data) {
    await this.ready()
    const bytes = typeof data === 'string' ? encoder.encode(data) : data
    if (!(bytes instanceof Uint8Array)) throw createError('SKYTALE_INVALID_ARGUMENT', 'data must be a string or a Uint8Array')
    return guard(this.#channel(channel).send(bytes))
  }

  /** Drains the buffered messages of a channel and returns their texts (oldest first). */
  async receive(channel, { max = 10_000 } = {}) {
    await this.ready()
    const ch = this.#channel(channel)
    const texts = []
    let last = 0
    while (texts.length < max) {
      const m = await guard(ch.nextMessage(last, 0))
      if (!m) break
      last = m.seq
      const msg = this.#dispatch(channel, m, false)
      if (msg) texts.push(msg.text)
    }
    if (last > 0) await guard(ch.ack(last))
    return texts
  }

  /**
   * Async iterator over a channel's messages ({sender, text, data, seq, epoch}); ends on `signal`.
   * @param {string} channel @param {{ signal?: AbortSignal }} [options]
   */
  async *messages(channel, { signal } = {}) {
    await this.ready()
    for await (const m of this.#channel(channel).messages({ signal })) {
      const msg = this.#dispatch(channel, m, false)
      if (msg) yield msg
    }
  }

  /** Identities of the channel's current members. */
  async members(channel) {
    await this.ready()
    try { return await this.#channel(channel).members() } catch (err) { throw toSkytaleError(err) }
  }

  /**
   * Each member's identity → fingerprint of its MLS signature key. Compare them out of band
   * (`manager.fingerprint` on the other side) to rule out an impostor.
   */
  async memberFingerprints(channel) {
    await this.ready()
    try { return await this.#channel(channel).memberFingerprints() } catch (err) { throw toSkytaleError(err) }
  }

  /**
   * Fork detection counters of the channel: `skipped` items (unprocessable), `forks` reported,
   * `heals` (resyncs) since connect.
   */
  async stats(channel) {
    await this.ready()
    try { return await this.#channel(channel).stats() } catch (err) { throw toSkytaleError(err) }
  }

  /** Fingerprint of this agent's MLS signature key (null before `ready()`). */
  get fingerprint() {
    return this.#agent?.fingerprint ?? null
  }

  /** Removes a member from the channel. */
  async remove(channel, identity) {
    await this.ready()
    await guard(this.#client.removeMembers(channel, [identity]))
  }

  /** Rotates this agent's keys in the channel (a new epoch). */
  async rotateKey(channel) {
    await this.ready()
    await guard(this.#client.rotateKey(channel))
  }

  /** Leaves the channel (the other members remove this agent) and forgets it locally. */
  async leave(channel) {
    await this.ready()
    this.#pumps.get(channel)?.abort()
    await guard(this.#client.leave(channel))
  }

  /** Names of the channels this agent is a member of ([] before `ready()`). */
  channels() {
    return this.#client ? this.#client.channels() : []
  }

  /** Stops background delivery, closes the connection and the keystore. */
  async close() {
    if (this.#closed) return
    this.#closed = true
    this.#abort.abort()
    if (this.#ready) await this.#ready.catch(() => {})
    this.#events?.close()
    await this.#client?.close().catch(() => {})
    this.#agent?.close()
  }

  #channel(channel) {
    try {
      return this.#client.channel(channel)
    } catch (err) {
      throw toSkytaleError(err)
    }
  }
}

module.exports = { SkytaleChannelManager }
