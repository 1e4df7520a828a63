// Adds `ClientChannel.prototype.messages()`: an async iterator with AbortSignal support over the
// native push stream (`subscribe`: a threadsafe callback, no polling, no timers) and `ack`.
'use strict'

const native = require('../index.js')
const { ClientChannel } = native

/**
 * Async iterator over the channel's messages (and membership changes), in relay order, pushed by
 * the native side as they arrive. An item is acknowledged (deleted from the keystore inbox) once
 * the consumer asks for the next one, in the background (acks of a burst are coalesced into one
 * keystore transaction; the next item is handed over without waiting for the write), and always
 * before the iterator ends. So a crash loses nothing: the item being handled comes back after a
 * restart, and so may the few handled just before it whose acknowledgement was still being
 * written (their `seq` tells them apart); nothing acknowledged comes back.
 * `options.signal` ends the iteration.
 */
ClientChannel.prototype.messages = function messages(options = {}) {
  const channel = this
  const { signal } = options
  const queue = []
  let waiter = null
  let current = 0 // seq of the item the consumer is handling
  let handled = 0 // highest seq the consumer is done with
  let acked = 0 // highest seq whose acknowledgement is written
  let acking = null // the acknowledgement being written
  let ackError = null
  let done = false
  let sub = null
  const wake = () => {
    if (waiter) { const w = waiter; waiter = null; w() }
  }
  // Writes the acknowledgement of everything handled; one write at a time, the next covers
  // whatever was handled meanwhile.
  const flush = () => {
    if (!acking && !ackError && handled > acked) {
      const seq = handled
      acking = channel.ack(seq).then(
        () => { acked = Math.max(acked, seq) },
        (e) => { ackError = e; wake() },
      ).finally(() => { acking = null; flush() })
    }
    return acking
  }
  const settle = async () => {
    while (flush()) await acking
    if (ackError) { const e = ackError; ackError = null; throw e }
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
      if (ackError) { const e = ackError; ackError = null; throw e }
      if (signal?.aborted) return finish()
      start()
      if (done) await settle()
      else flush()
      while (!done && queue.length === 0 && !ackError) await new Promise((resolve) => { waiter = resolve })
      if (ackError) { const e = ackError; ackError = null; throw e }
      if (done) return finish()
      const item = queue.shift()
      current = item.seq
      return { value: item, done: false }
    },
    async return() { return finish() },
  }
}
