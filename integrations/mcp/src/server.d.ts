// Types of @skytale/mcp (the programmatic API behind the skytale-mcp bin).
import type { McpServer } from '@modelcontextprotocol/sdk/server/mcp.js'
import type { SkytaleChannelManager } from '@skytale/sdk'

export declare const VERSION: string

/** `skytale://channels/<URI-encoded channel>/messages` */
export declare function channelUri(channel: string): string

/** `{ code, message }` of an error (`SKYTALE_*` codes). */
export declare function errorInfo(err: unknown): { code: string; message: string }

/** A received message as the tools and resources return it. */
export interface InboxMessage {
  sender: string
  text: string
  seq: number
}

/**
 * New messages per channel: durable reads through `manager.messages()` by default; after
 * `goLive()` (the first resource subscription) an in-memory queue fed by `message` events.
 */
export declare class Inbox {
  constructor(manager: SkytaleChannelManager, options?: { historySize?: number })
  readonly isLive: boolean
  goLive(): void
  history(channel: string): InboxMessage[]
  take(channel: string, options?: { timeoutMs?: number; max?: number; signal?: AbortSignal }): Promise<InboxMessage[]>
  onMessage(fn: (channel: string, message: InboxMessage) => void): () => void
}

export interface SkytaleContextOptions {
  /** Allow-list of channel names. */
  channels?: string[]
  /** Only receive, channels and members. */
  readOnly?: boolean
  /** Messages kept per channel for resource reads (default 100). */
  historySize?: number
  /** Logger (default: console.error, i.e. stderr). */
  log?: (...args: unknown[]) => void
}

export interface SkytaleContext {
  manager: SkytaleChannelManager
  inbox: Inbox
  /** Aborted by close(): ends pending waits. */
  signal: AbortSignal
  /** A new McpServer with the Skytale tools and resources (one per connection or session). */
  buildServer(): McpServer
  close(): Promise<void>
}

export declare function createSkytaleContext(manager: SkytaleChannelManager, options?: SkytaleContextOptions): SkytaleContext

/** Serves one MCP connection over stdin/stdout; resolves when the client goes away. */
export declare function serveStdio(ctx: SkytaleContext): Promise<void>

/** Serves MCP over Streamable HTTP at http://host:port/mcp with a required bearer token. */
export declare function serveHttp(ctx: SkytaleContext, options: {
  host?: string
  port?: number
  token: string
  path?: string
  log?: (...args: unknown[]) => void
}): Promise<{ url: string; close(): Promise<void> }>

/** The SDK's SkytaleChannelManager class. */
export declare function managerClass(): typeof SkytaleChannelManager
