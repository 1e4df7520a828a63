// Adds `ClientChannel.prototype.messages()`: an async iterator with AbortSignal support over the
// native push stream (`subscribe`: a threadsafe callback, no polling, no timers) and `ack`.
'use strict'

const native = require('../index.js')
const { ClientChannel } = native

/**
 * Async iterator over the channel's messages (and membership changes), in relay order, pushed by
 * the native side as they arrive. Each item is acknowledged (deleted from the keystore inbox)
 * when the consumer asks for the next one or ends the loop, so an item being handled when the
 * process dies comes back after a restart, and none is returned twice once acknowledged.
 * `options.signal` ends the iteration.
 */
ClientChannel.prototype.messages = function messages(options = {}) {
  const channel = this
  const { signal } = options
  const queue = []
  let waiter = null
  let pendingAck = 0
  let done = false
  let sub = null
  const wake = () => {
    if (waiter) { const w = waiter; waiter = null; w() }
  }
  const ack = async () => {
    if (pendingAck > 0) {
      const seq = pendingAck
      pendingAck = 0
      await channel.ack(seq)
    }
  }
  const onAbort = () => { done = true; wake() }
  const finish = async () => {
    done = true
    sub?.close()
    sub = null
    signal?.removeEventListener('abort', onAbort)
    wake()
    await ack()
    return { value: undefined, done: true }
  }
  const start = () => {
    if (sub || done) return
    sub = channel.subscribe(0, (items) => { for (const item of items) queue.push(item); wake() })
    signal?.addEventListener('abort', onAbort, { once: true })
  }
  return {
    [Symbol.asyncIterator]() { return this },
    async next() {
      await ack()
      if (signal?.aborted) return finish()
      start()
      while (!done && queue.length === 0) await new Promise((resolve) => { waiter = resolve })
      if (done) return finish()
      const item = queue.shift()
      pendingAck = item.seq
      return { value: item, done: false }
    },
    async return() { return finish() },
  }
}
