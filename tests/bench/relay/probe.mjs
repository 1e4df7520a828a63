// Where a message's time goes: reads the latency probes of a benchmark run (SKYTALE_PROBE_DIR
// set for it; see crates/skytale-proto/src/probe.rs) and gives, per step of the path, the
// median and p90 of the time from the previous step.
//
//   npm run bench:relay -- --only latency --rate 2000 --seconds 10 --low-rates "" --probe
//       (the report then has the table for every latency run), or by hand:
//   SKYTALE_PROBE_DIR=/tmp/probe npm run bench:relay -- --only latency --rate 2000 --seconds 10 --low-rates ""
//   node tests/bench/relay/probe.mjs /tmp/probe 20000
//
// With one sender and one receiver every step sees the messages in the same order, so the n-th
// mark of each step, counted from the end, is the same message: `messages` must be the count
// of the last run (rate × seconds), and nothing may have been sent after it.
import fs from 'node:fs'
import path from 'node:path'
import { pathToFileURL } from 'node:url'

/** The steps in path order, with what each one marks. */
export const STEPS = [
  ['js.send', 'sender: payload made, send() called (JS)'],
  ['send.call', 'sender: in the addon, queued (JS thread)'],
  ['send.encrypt', 'sender: outbox picked it up (tokio worker)'],
  ['send.encrypted', 'sender: encrypted, keystore committed'],
  ['send.written', 'sender: Send frame written to the QUIC stream'],
  ['relay.read', 'relay: frame read and decoded (connection reader task)'],
  ['relay.session', 'relay: session task handles it'],
  ['relay.actor', 'relay: channel actor batches it'],
  ['relay.store', 'relay: store plans it (storage thread, or in place)'],
  ['relay.committed', 'relay: group commit done'],
  ['relay.resumed', 'relay: channel actor resumed'],
  ['relay.fanout', 'relay: Deliver queued to the subscriber'],
  ['recv.frame', 'receiver: Deliver read and decoded'],
  ['recv.apply', 'receiver: delivery handling starts'],
  ['recv.applied', 'receiver: decrypted, inbox committed'],
  ['recv.emit', 'receiver: batch handed to JS'],
  ['js.recv', 'receiver: out of messages() (JS)'],
]

const quantile = (xs, p) => {
  const s = [...xs].sort((a, b) => a - b)
  return s[Math.min(s.length - 1, Math.floor(p * s.length))]
}

/**
 * The breakdown of the last `n` messages of the probe files in `dir`: per step its mark count
 * and the p50/p90 (µs) of the time since the previous step present, and the p50/p90/p99 from
 * the first step to the last. Steps with fewer than `n` marks are reported and skipped.
 */
export function breakdown(dir, n) {
  const marks = new Map(STEPS.map(([s]) => [s, []]))
  for (const f of fs.readdirSync(dir).filter((f) => f.startsWith('probe-') && f.endsWith('.tsv'))) {
    for (const line of fs.readFileSync(path.join(dir, f), 'utf8').split('\n')) {
      const [stage, us] = line.split('\t')
      if (marks.has(stage)) marks.get(stage).push(Number(us))
    }
  }
  const steps = []
  let prev = null
  let first = null
  for (const [step, what] of STEPS) {
    const all = marks.get(step).sort((a, b) => a - b)
    if (all.length === 0) continue
    if (all.length < n) {
      steps.push({ step, what, marks: all.length, skipped: true })
      continue
    }
    const cur = all.slice(all.length - n)
    const d = prev ? cur.map((t, i) => t - prev[i]) : null
    steps.push({ step, what, marks: all.length, p50: d ? quantile(d, 0.5) : null, p90: d ? quantile(d, 0.9) : null })
    first ??= cur
    prev = cur
  }
  const total = first && prev ? prev.map((t, i) => t - first[i]) : []
  return {
    messages: n,
    steps,
    total: total.length ? { p50: quantile(total, 0.5), p90: quantile(total, 0.9), p99: quantile(total, 0.99) } : null,
  }
}

/** The breakdown as the rows of a Markdown table. */
export function formatBreakdown(b) {
  const rows = ['| step | marks | from the previous step: p50 / p90 (µs) |', '|---|---:|---|']
  for (const s of b.steps) {
    const cell = s.skipped ? 'fewer marks than messages: skipped' : s.p50 === null ? '—' : `${s.p50} / ${s.p90}`
    rows.push(`| ${s.what} (\`${s.step}\`) | ${s.marks} | ${cell} |`)
  }
  if (b.total) rows.push(`| **total** (${b.messages} messages) | | **${b.total.p50} / ${b.total.p90}** (p99 ${b.total.p99}) |`)
  return rows
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const [dir, countArg] = process.argv.slice(2)
  if (!dir || !Number(countArg)) {
    console.error('usage: node tests/bench/relay/probe.mjs <probe dir> <messages of the last run>')
    process.exit(2)
  }
  console.log(formatBreakdown(breakdown(dir, Number(countArg))).join('\n'))
}
