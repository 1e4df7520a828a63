// Types of @skytale/sdk: the generated native types plus the JavaScript helpers in lib/index.js.
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
