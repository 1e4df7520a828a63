// Types of @skytale/sdk: the generated native types plus the JavaScript helpers in lib/index.js.
import { EventEmitter } from 'node:events'
import type { ChannelMessage } from '../index'

export * from '../index'

/** Options of `ClientChannel.messages()`. */
export interface MessagesOptions {
  /** Ends the iteration when aborted. */
  signal?: AbortSignal
  /** How long one native wait lasts before the signal is checked again (ms, default 1000). */
  pollMs?: number
}

declare module '../index' {
  interface ClientChannel {
    /**
     * Async iterator over the channel's messages and membership changes, in relay order.
     * `break`, `return()` or the `signal` end it; each item is acknowledged when the next one
     * is requested, so nothing is lost if the process dies while handling one.
     */
    messages(options?: MessagesOptions): AsyncIterableIterator<ChannelMessage>
  }
}

/** Base class of every Skytale error; `code` is stable (`SKYTALE_…`). */
export declare class SkytaleError extends Error {
  readonly code: string
  constructor(message: string, code: string, options?: { cause?: unknown })
}
/** The API key, token or keystore key was refused, or a channel of another org was touched. */
export declare class AuthError extends SkytaleError {}
/** The API server or the relay could not be reached, or the client is closed. */
export declare class TransportError extends SkytaleError {}
/** Channel-level problems: unknown channel, bad name, invites, membership. */
export declare class ChannelError extends SkytaleError {}
/** MLS-level problems: undecryptable, replayed or out-of-epoch messages, key packages. */
export declare class MlsError extends SkytaleError {}
/** Wraps an error of the native layer into the matching SkytaleError subclass. */
export declare function toSkytaleError(err: unknown): SkytaleError

/** Options of `new SkytaleChannelManager()`; each defaults to its environment variable. */
export interface SkytaleChannelManagerOptions {
  /** The agent identity (env SKYTALE_IDENTITY). */
  identity: string
  /** API key `sk_live_…` (env SKYTALE_API_KEY). */
  apiKey?: string
  /** API server URL (env SKYTALE_API_URL, default http://127.0.0.1:7780). */
  apiUrl?: string
  /** Relay address `iroh://…` (env SKYTALE_RELAY; default: the one the API server publishes). */
  relay?: string
  /** Keystore directory (env SKYTALE_DATA_DIR, default ./.skytale/agents/<identity>). */
  dataDir?: string
  /** 32-byte keystore key, or 64 hex characters (env SKYTALE_KEYSTORE_KEY). */
  keystoreKey?: Uint8Array | string
  /** Passphrase for the keystore, stretched with Argon2id (env SKYTALE_PASSPHRASE). */
  passphrase?: string
}

/** A received message. */
export interface SkytaleMessage {
  channel: string
  sender: string
  text: string
  data: Uint8Array
  seq: number
  epoch: number
}

/** A membership change. */
export interface SkytaleMemberEvent {
  channel: string
  identity: string
  by: string
}

/**
 * The high-level API: one agent identity, its encrypted keystore and relay connection.
 * Messages are buffered in the background (in the keystore, across restarts) from the moment a
 * channel is created or joined. With a `message` listener they are delivered as events;
 * otherwise `receive()` and `messages()` read them.
 */
export declare class SkytaleChannelManager extends EventEmitter {
  constructor(options: SkytaleChannelManagerOptions)
  /** The agent identity. */
  readonly identity: string
  /** Opens the keystore and connects; every other method awaits it. */
  ready(): Promise<void>
  /** Creates a channel `org/namespace/service`. */
  create(channel: string): Promise<void>
  /** Creates an invite token `skt_inv_…` (default maxUses 1, ttlSeconds 3600). */
  invite(channel: string, options?: { maxUses?: number; ttlSeconds?: number }): Promise<string>
  /** Joins with an invite token, whether or not a member is online. */
  joinWithToken(channel: string, token: string, options?: { timeoutMs?: number; signal?: AbortSignal }): Promise<void>
  /** Encrypts and sends; resolves with the relay sequence number. */
  send(channel: string, data: string | Uint8Array): Promise<number>
  /** Drains buffered messages: their texts, oldest first. */
  receive(channel: string, options?: { max?: number }): Promise<string[]>
  /** Async iterator over messages; ends on `signal`. */
  messages(channel: string, options?: { signal?: AbortSignal }): AsyncIterableIterator<SkytaleMessage>
  /** Current members. */
  members(channel: string): Promise<string[]>
  /** Identity → fingerprint of each member's signature key (compare out of band). */
  memberFingerprints(channel: string): Promise<Record<string, string>>
  /** Fingerprint of this agent's signature key (null before `ready()`). */
  readonly fingerprint: string | null
  /** Removes a member. */
  remove(channel: string, identity: string): Promise<void>
  /** Rotates this agent's keys (new epoch). */
  rotateKey(channel: string): Promise<void>
  /** Leaves the channel. */
  leave(channel: string): Promise<void>
  /** Channels this agent is a member of. */
  channels(): string[]
  /** Closes everything. */
  close(): Promise<void>
  on(event: 'message', listener: (m: SkytaleMessage) => void): this
  on(event: 'member-joined' | 'member-left', listener: (e: SkytaleMemberEvent) => void): this
  on(event: 'joined', listener: (e: { channel: string; by: string }) => void): this
  on(event: 'error', listener: (err: SkytaleError) => void): this
  on(event: 'connected' | 'disconnected', listener: (e: unknown) => void): this
  on(event: string | symbol, listener: (...args: any[]) => void): this
}

import type { Agent as NativeAgent, Client as NativeClient, ClientConnectOptions } from '../index'

/** `Client.connect` also takes the agent inside the options: `Client.connect({ agent, apiUrl, apiKey, relay })`. */
export declare class Client extends NativeClient {
  /** Connects an agent to the relay (see the native `Client.connect`). */
  static connect(options: ClientConnectOptions & { agent: NativeAgent }): Promise<NativeClient>
  static connect(agent: NativeAgent, options: ClientConnectOptions): Promise<NativeClient>
}
