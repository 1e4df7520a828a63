// Types of @skytale/langchain.
import type { DynamicStructuredTool } from '@langchain/core/tools'
import type { SkytaleChannelManager } from '@skytale/sdk'

export interface SkytaleToolsOptions {
  /** Allow-list of channel names; any other channel argument fails with SKYTALE_FORBIDDEN_CHANNEL. */
  channels?: string[]
  /** Leave out the tools that change state (create, invite, join, send, remove member, leave). */
  readOnly?: boolean
}

export type SkytaleToolName =
  | 'skytale_create_channel'
  | 'skytale_invite'
  | 'skytale_join'
  | 'skytale_send'
  | 'skytale_receive'
  | 'skytale_channels'
  | 'skytale_members'
  | 'skytale_remove_member'
  | 'skytale_leave'

/** All tool names, in the order skytaleTools() returns them. */
export declare const TOOL_NAMES: readonly SkytaleToolName[]
/** The tools left out by `readOnly`. */
export declare const MUTATING_TOOLS: readonly SkytaleToolName[]

/** A received message as the receive tool returns it. */
export interface SkytaleToolMessage {
  sender: string
  text: string
  seq: number
}

/**
 * LangChain tools (made with `tool()` and zod schemas) for one Skytale agent. Results are short
 * JSON strings; errors come back as tool errors (a ToolMessage with status "error" inside an
 * agent) whose content is `{"error":{"code":"SKYTALE_…","message":"…"}}`.
 */
export declare function skytaleTools(manager: SkytaleChannelManager, options?: SkytaleToolsOptions): DynamicStructuredTool[]
export default skytaleTools

/** Reads buffered messages, or waits up to `timeoutMs` for the first one. */
export declare function readMessages(
  manager: SkytaleChannelManager,
  channel: string,
  options?: { timeoutMs?: number; max?: number; idleMs?: number },
): Promise<SkytaleToolMessage[]>

/** `{ code, message }` of an error (`SKYTALE_*` codes). */
export declare function errorInfo(err: unknown): { code: string; message: string }
