// What a thread wake-up costs on this host, measured next to the relay benchmark so its
// latencies can be compared across machines: every message of the latency phase crosses
// about ten thread wake-ups in three processes (see BENCHMARKS.md), and on some virtual
// machines waking a thread on the other, idle vCPU costs tens of microseconds.
//
// Two threads of this process ping-pong through a shared word (Atomics.wait / notify, i.e.
// futex wait / wake, like tokio's and the storage thread's parking): one round trip = two
// wake-ups. Nothing else of the SDK is involved.
import { Worker } from 'node:worker_threads'

const PONG = `
const { workerData } = require('node:worker_threads')
const a = new Int32Array(workerData)
for (;;) {
  Atomics.wait(a, 0, 0)
  if (Atomics.load(a, 2) === 1) break
  Atomics.store(a, 0, 0)
  Atomics.store(a, 1, 1)
  Atomics.notify(a, 1)
}
`

/**
 * Median and p90 of `rounds` wake-up round trips between two threads (µs), after a warm-up.
 * @param {number} rounds
 * @returns {Promise<{roundTripUs: {p50: number, p90: number}, rounds: number}>}
 */
export async function wakeRoundTrip(rounds = 5000) {
  const shared = new SharedArrayBuffer(12)
  const a = new Int32Array(shared)
  const worker = new Worker(PONG, { eval: true, workerData: shared })
  await new Promise((resolve, reject) => {
    worker.once('online', resolve)
    worker.once('error', reject)
  })
  const times = []
  const warmUp = 200
  for (let i = 0; i < rounds + warmUp; i++) {
    const t0 = process.hrtime.bigint()
    Atomics.store(a, 0, 1)
    Atomics.notify(a, 0)
    Atomics.wait(a, 1, 0)
    Atomics.store(a, 1, 0)
    if (i >= warmUp) times.push(Number(process.hrtime.bigint() - t0) / 1000)
  }
  Atomics.store(a, 2, 1)
  Atomics.store(a, 0, 1)
  Atomics.notify(a, 0)
  await worker.terminate()
  times.sort((x, y) => x - y)
  const at = (q) => Math.round(times[Math.min(times.length - 1, Math.floor(q * times.length))] * 10) / 10
  return { roundTripUs: { p50: at(0.5), p90: at(0.9) }, rounds }
}
