// Adds `ClientChannel.prototype.messages()`: an async iterator with AbortSignal support over the
// native `nextMessage`/`ack` calls (easier to write in JavaScript than through napi).
'use strict'

const native = require('../index.js')
const { ClientChannel } = native

/**
 * Async iterator over the channel's messages (and membership changes), in relay order.
 * Each item is acknowledged (deleted from the keystore inbox) when the consumer asks for the
 * next one or ends the loop, so an item being handled when the process dies comes back after
 * a restart, and none is returned twice once acknowledged.
 */
ClientChannel.prototype.messages = function messages(options = {}) {
  const channel = this
  const { signal, pollMs = 1000 } = options
  let lastSeq = 0
  let pendingAck = 0
  let done = false
  const ack = () => {
    if (pendingAck > 0) {
      channel.ack(pendingAck)
      pendingAck = 0
    }
  }
  const finish = () => {
    ack()
    done = true
    return { value: undefined, done: true }
  }
  return {
    [Symbol.asyncIterator]() { return this },
    async next() {
      ack()
      while (!done) {
        if (signal?.aborted) return finish()
        const got = channel.nextMessage(lastSeq, pollMs)
        let res
        if (signal) {
          let onAbort
          const waitAbort = new Promise((resolve) => {
            onAbort = () => resolve('aborted')
            signal.addEventListener('abort', onAbort, { once: true })
          })
          try {
            res = await Promise.race([got, waitAbort])
          } finally {
            signal.removeEventListener('abort', onAbort)
          }
        } else {
          res = await got
        }
        if (res === 'aborted') return finish()
        if (res) {
          lastSeq = res.seq
          pendingAck = res.seq
          return { value: res, done: false }
        }
      }
      return { value: undefined, done: true }
    },
    async return() { return finish() },
  }
}

