// Adds `ClientChannel.prototype.messages()`: an async iterator with AbortSignal support over the
// native push stream (`subscribe`: a threadsafe callback, no polling, no timers), `ackLater` and `ack`.
'use strict'

const native = require('../index.js')
const { ClientChannel } = native

/**
 * Async iterator over the channel's messages (and membership changes), in relay order, pushed by
 * the native side as they arrive. An item is acknowledged once the consumer asks for the next
 * one: noted at once without a keystore write (`ackLater`: the deletion rides along with the
 * channel's next processing transaction, or is written within 20 ms), and written for certain
 * (`ack`) before the iterator ends. So a crash loses nothing: the item being handled comes back
 * after a restart, and so may the few handled just before it whose acknowledgement was not
 * written yet (their `seq` tells them apart); nothing acknowledged and written comes back.
 * `options.signal` ends the iteration.
 */
ClientChannel.prototype.messages = function messages(options = {}) {
  const channel = this
  const { signal } = options
  const queue = []
  let waiter = null
  let current = 0 // seq of the item the consumer is handling
  let handled = 0 // highest seq the consumer is done with
  let noted = 0 // highest seq noted as handled (`ackLater`)
  let done = false
  let sub = null
  const wake = () => {
    if (waiter) { const w = waiter; waiter = null; w() }
  }
  // Notes what was handled (no keystore write on the way to the next item).
  const note = () => {
    if (handled > noted) { channel.ackLater(handled); noted = handled }
  }
  // Writes the acknowledgement of everything handled before the iterator ends.
  let written = 0
  const settle = async () => {
    if (handled > written) { const seq = handled; await channel.ack(seq); written = Math.max(written, seq) }
  }
  const onAbort = () => { done = true; wake() }
  const finish = async () => {
    if (current) { handled = Math.max(handled, current); current = 0 }
    done = true
    sub?.close()
    sub = null
    signal?.removeEventListener('abort', onAbort)
    wake()
    await settle()
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
      if (current) { handled = Math.max(handled, current); current = 0 }
      if (signal?.aborted) return finish()
      start()
      if (done) return finish()
      note()
      while (!done && queue.length === 0) await new Promise((resolve) => { waiter = resolve })
      if (done) return finish()
      const item = queue.shift()
      current = item.seq
      return { value: item, done: false }
    },
    async return() { return finish() },
  }
}
