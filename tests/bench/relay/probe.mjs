// Where a message's time goes: reads the latency probes of one `npm run bench:relay -- --only
// latency` run (SKYTALE_PROBE_DIR set for it; see crates/skytale-proto/src/probe.rs) and prints,
// per step of the path, the median and p90 of the time from the previous step.
//
//   SKYTALE_PROBE_DIR=/tmp/probe npm run bench:relay -- --only latency --rate 2000 --seconds 10 --low-rates ""
//   node tests/bench/relay/probe.mjs /tmp/probe [messages]
//
// With one sender and one receiver every step sees the messages in the same order, so the n-th
// mark of each step (counted from the end: the last phase) is the same message. `messages`
// defaults to the last phase's count (the number of `js.recv` marks of the last receive run is
// not known here, so pass it: rate × seconds).
import fs from 'node:fs'
import path from 'node:path'

const STEPS = [
  ['js.send', 'sender: payload made, send() called (JS)'],
  ['send.call', 'sender: in the addon, queued (JS thread)'],
  ['send.encrypt', 'sender: outbox picked it up (tokio worker)'],
  ['send.encrypted', 'sender: encrypted, keystore committed'],
  ['send.written', 'sender: Send frame written to the QUIC stream'],
  ['relay.read', 'relay: frame read and decoded (connection reader task)'],
  ['relay.session', 'relay: session task handles it'],
  ['relay.actor', 'relay: channel actor batches it'],
  ['relay.store', 'relay: storage thread plans it'],
  ['relay.committed', 'relay: group commit done'],
  ['relay.resumed', 'relay: channel actor resumed'],
  ['relay.fanout', 'relay: Deliver queued to the subscriber'],
  ['recv.frame', 'receiver: Deliver read and decoded'],
  ['recv.apply', 'receiver: delivery handling starts'],
  ['recv.applied', 'receiver: decrypted, inbox committed'],
  ['recv.emit', 'receiver: batch handed to JS'],
  ['js.recv', 'receiver: out of messages() (JS)'],
]

const [dir, countArg] = process.argv.slice(2)
if (!dir) {
  console.error('usage: node tests/bench/relay/probe.mjs <probe dir> [messages]')
  process.exit(2)
}
const marks = new Map(STEPS.map(([s]) => [s, []]))
for (const f of fs.readdirSync(dir).filter((f) => f.startsWith('probe-') && f.endsWith('.tsv'))) {
  for (const line of fs.readFileSync(path.join(dir, f), 'utf8').split('\n')) {
    const [stage, us] = line.split('\t')
    if (marks.has(stage)) marks.get(stage).push(Number(us))
  }
}
const present = STEPS.filter(([s]) => marks.get(s).length > 0)
const n = Number(countArg) || Math.min(...present.map(([s]) => marks.get(s).length))
const q = (xs, p) => {
  const s = [...xs].sort((a, b) => a - b)
  return s[Math.min(s.length - 1, Math.floor(p * s.length))]
}
const tail = (s) => {
  const all = marks.get(s)
  all.sort((a, b) => a - b)
  return all.slice(all.length - n)
}
console.log(`| step | marks | from the previous step: p50 / p90 (µs) |`)
console.log(`|---|---:|---|`)
let prev = null
for (const [s, what] of present) {
  const cur = tail(s)
  if (cur.length < n) {
    console.log(`| ${what} (\`${s}\`) | ${marks.get(s).length} | fewer marks than messages: skipped |`)
    continue
  }
  const cell = prev ? (() => { const d = cur.map((t, i) => t - prev[i]); return `${q(d, 0.5)} / ${q(d, 0.9)}` })() : '—'
  console.log(`| ${what} (\`${s}\`) | ${marks.get(s).length} | ${cell} |`)
  prev = cur
}
const first = tail(present[0][0])
const last = tail(present[present.length - 1][0])
const total = last.map((t, i) => t - first[i])
console.log(`| **total** (${n} messages) | | **${q(total, 0.5)} / ${q(total, 0.9)}** (p99 ${q(total, 0.99)}) |`)
