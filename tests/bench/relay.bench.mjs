// Relay benchmark (issue 4): agent → relay → agent over loopback, decrypted in Node.
// The real API server (PGlite), the real relay binary and agents in their own processes
// (tests/bench/relay/worker.mjs), as in tests/relay-e2e.test.ts.
//
//   npm run bench:relay                        # everything, ~2 min
//   npm run bench:relay -- --quick             # shorter phases, 25 fan-out subscribers
//   npm run bench:relay -- --only latency,throughput,fanout,channels
//   npm run bench:relay -- --rate 1000 --seconds 10 --subscribers 100 --per-process 25
//   npm run bench:relay -- --relay-workers 1     # the relay with one tokio worker thread
//
// Phases:
//   latency     one sender, one receiver (two processes): `--rate` msg/s offered for `--seconds`;
//               every message carries its send time; the receiver takes receive - send when
//               the decrypted message comes out of ClientChannel.messages(). Lower loads first
//               (`--low-rates`, default 100,500 msg/s, ≤ 5 s each).
//   throughput  one sender floods `--flood` messages of 256 B (up to 256 send() calls
//               outstanding), the same with sendMany() of 64 (4 calls outstanding), and 1,000
//               with one send() at a time (window 1) for comparison;
//               then `--senders` sender agents (own Client each, one process) at once.
//   fanout      one sender, `--subscribers` members in one channel, `--per-process` agents per
//               worker process; members added one by one (timed); `--fanout-messages` messages
//               sent at `--fanout-rate` msg/s; deliveries/s = decrypted messages summed over
//               all subscribers / time from the first send to the last delivery.
//   channels    one receiver agent in many busy channels: `--channels` sender agents (one
//               process, own Client each) each flood their own channel with `--flood` /
//               `--channels` messages (≤ 256 / `--channels` send() outstanding each), and the
//               receiver, a member of all of them, reads them all at once, so their deliveries
//               reach it interleaved. Then the same total from one sender in one channel, and
//               from one sender agent flooding all `--channels` channels in turn. Reports
//               messages/s decrypted and the receiver's CPU per message for each.
// The relay runs with SKYTALE_RELAY_FRAMES_PER_SECOND=100000 and SKYTALE_RELAY_BURST=100000
// (the default, 100 frames/s per identity, would be the bottleneck otherwise).
// Results: a markdown table on stdout, JSON in target/bench/relay.json. With
// SKYTALE_BENCH_DUMP=<prefix>, each latency phase also writes its raw latencies (ms, in arrival
// order) to <prefix>-<rate>.json, to see where in time the slow ones are.
// Before anything starts, the host's thread wake-up round trip is measured (relay/host.mjs)
// and reported with the results: latencies of different machines compare only with it.
// With `--probe`, the sender, the relay and the receiver record when each message passes each
// step of its path (SKYTALE_PROBE_DIR, crates/skytale-proto/src/probe.rs), and every latency
// run is reported with the median time of each step (relay/probe.mjs): where the time goes.

import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { cpus, loadavg, tmpdir } from 'node:os'
import { join } from 'node:path'
import { randomBytes } from 'node:crypto'
import { REPO, signup, startApiServer, startRelay } from '../helpers/stack.mjs'
import { cpuMeter, startWorker, summarize } from './relay/proc.mjs'
import { wakeRoundTrip } from './relay/host.mjs'
import { breakdown, formatBreakdown } from './relay/probe.mjs'

const argv = process.argv.slice(2)
const flag = (name) => argv.includes(`--${name}`)
const opt = (name, def) => {
  const i = argv.indexOf(`--${name}`)
  return i >= 0 && argv[i + 1] !== undefined ? argv[i + 1] : def
}
const quick = flag('quick')
const cfg = {
  rate: Number(opt('rate', 1000)),
  seconds: Number(opt('seconds', quick ? 3 : 10)),
  flood: Number(opt('flood', quick ? 1500 : 5000)),
  senders: Number(opt('senders', 4)),
  subscribers: Number(opt('subscribers', quick ? 25 : 100)),
  perProcess: Number(opt('per-process', 25)),
  fanoutMessages: Number(opt('fanout-messages', quick ? 100 : 400)),
  // 200 msg/s × 100 subscribers offers 20,000 deliveries/s: room above the 10,000/s target.
  fanoutRate: Number(opt('fanout-rate', 200)),
  channels: Number(opt('channels', 8)),
  size: Number(opt('size', 256)),
  lowRates: opt('low-rates', '100,500').split(',').filter(Boolean).map(Number),
}
const only = new Set(opt('only', 'latency,throughput,fanout,channels').split(','))
const probe = flag('probe')

const log = (...a) => console.error('[bench:relay]', ...a)
const root = mkdtempSync(join(tmpdir(), 'skytale-relay-bench-'))
const workers = []
let api
let relay
// Every process started from here on inherits it (the relay and the bench workers).
const probeDir = probe ? join(root, 'probe') : null
if (probeDir) {
  mkdirSync(probeDir)
  process.env.SKYTALE_PROBE_DIR = probeDir
}
const results = { config: cfg, machine: { cpus: cpus().length, model: cpus()[0]?.model, node: process.version, loadBefore: loadavg() }, phases: {} }

const b64key = () => randomBytes(32).toString('base64')
const sleep = (ms) => new Promise((r) => setTimeout(r, ms))
const rate = (n, ms) => (ms > 0 ? Math.round((n / ms) * 1000) : NaN)

async function worker(name, identities) {
  const w = startWorker(name)
  workers.push(w)
  const list = identities.map((identity) => ({ identity, dataDir: join(root, identity), keystoreKey: b64key() }))
  await w.call('open', { list, apiUrl: api.url, apiKey: results.apiKey, relay: relay.address })
  return w
}

/** A sender process and a receiver process (one agent each), and `channel(name)` that makes
 *  a fresh channel of the two: the relay's per-send cost grows with the channel's history
 *  (see BENCHMARKS.md), so every measured case starts on an empty channel. */
async function pair(tag) {
  const suffix = randomBytes(3).toString('hex')
  const sender = await worker(`${tag}-sender`, [`s-${suffix}`])
  const receiver = await worker(`${tag}-receiver`, [`r-${suffix}`])
  const channel = async (name) => {
    await sender.call('createChannel', { name })
    await sender.call('addMembers', { channel: name, identities: [`r-${suffix}`] })
    await receiver.call('waitForChannel', { channel: name, timeoutMs: 30_000 })
    return name
  }
  return { sender, receiver, channel }
}

function meter(extra = {}) {
  return cpuMeter({ relay: relay.child.pid, api: api.child.pid, ...extra })
}

async function latencyAt(sender, receiver, channel, r, count) {
  const m = meter({ sender: sender.pid, receiver: receiver.pid })
  const recv = receiver.call('receive', { channel, count, timeoutMs: (count / r) * 1000 + 60_000, latencies: true })
  await sleep(100)
  const sent = await sender.call('sendPaced', { channel, rate: r, count, size: cfg.size })
  const got = await recv
  const st = got.per[0]
  // Raw receive-minus-send times in arrival order, for looking at the tail over time.
  if (process.env.SKYTALE_BENCH_DUMP) writeFileSync(`${process.env.SKYTALE_BENCH_DUMP}-${r}.json`, JSON.stringify(got.latencies))
  // The native probes are written every 200 ms; nothing is sent before this run is read.
  let steps
  if (probeDir) {
    await sleep(500)
    steps = breakdown(probeDir, count)
  }
  return {
    offered: r,
    messages: count,
    received: st.got,
    timedOut: got.timedOut,
    outOfOrder: st.outOfOrder,
    duplicates: st.duplicates,
    sendErrors: sent.errors,
    senderMaxLagMs: +sent.maxLagMs.toFixed(1),
    ackRate: rate(count, (sent.lastAckUs - sent.startUs) / 1000),
    deliveredRate: rate(st.got, (st.lastUs - sent.startUs) / 1000),
    latencyMs: summarize(got.latencies),
    cpuSeconds: m.since(),
    wallSeconds: +((st.lastUs - sent.startUs) / 1e6).toFixed(2),
    steps,
  }
}

async function phaseLatency() {
  const { sender, receiver, channel } = await pair('latency')
  log('latency: warm-up (200 msg at 200 msg/s)')
  await latencyAt(sender, receiver, await channel('acme/bench/warm-up'), 200, 200)
  results.phases.latency = {}
  // Lower loads first (shorter: at most 5 s each), then the target load for `--seconds`.
  const rates = [...cfg.lowRates.filter((r) => r < cfg.rate), cfg.rate]
  for (const r of rates) {
    const secs = r === cfg.rate ? cfg.seconds : Math.min(5, cfg.seconds)
    const n = Math.round(r * secs)
    log(`latency: ${r} msg/s for ${secs} s (${n} messages)`)
    const res = await latencyAt(sender, receiver, await channel(`acme/bench/latency-${r}`), r, n)
    log(`  p50 ${res.latencyMs.p50} ms, p99 ${res.latencyMs.p99} ms, delivered ${res.deliveredRate} msg/s`)
    results.phases.latency[`${r}/s`] = res
  }
  await Promise.all([sender.call('close'), receiver.call('close')])
}

async function flood(tag, senderProc, receiver, channel, senders, count, window = 256, batch = 0) {
  const total = senders.length * count
  const m = meter({ sender: senderProc.pid, receiver: receiver.pid })
  const recv = receiver.call('receive', { channel, count: total, timeoutMs: 120_000, latencies: true })
  await sleep(100)
  const sent = await senderProc.call('sendFlood', { channel, count, size: cfg.size, senders, window, batch })
  const got = await recv
  const st = got.per[0]
  const r = {
    senders: senders.length,
    window,
    batch,
    messages: total,
    received: st.got,
    timedOut: got.timedOut,
    outOfOrder: st.outOfOrder,
    duplicates: st.duplicates,
    sendErrors: sent.errors,
    ackRate: rate(total, (sent.lastAckUs - sent.startUs) / 1000),
    deliveredRate: rate(st.got, (st.lastUs - sent.startUs) / 1000),
    latencyMs: summarize(got.latencies),
    cpuSeconds: m.since(),
    wallSeconds: +((st.lastUs - sent.startUs) / 1e6).toFixed(2),
  }
  log(`  ${tag}: acked ${r.ackRate} msg/s, delivered+decrypted ${r.deliveredRate} msg/s (${r.received}/${total})`)
  return r
}

async function phaseThroughput() {
  const { sender, receiver, channel } = await pair('tput')
  log(`throughput: warm-up, then 1 sender × ${cfg.flood} messages`)
  await flood('warm-up', sender, receiver, await channel('acme/bench/tput-warm-up'), [0], 300)
  const one = await flood('1 sender', sender, receiver, await channel('acme/bench/tput-1'), [0], cfg.flood)
  const oneBatched = await flood('1 sender, sendMany(64)', sender, receiver, await channel('acme/bench/tput-many'), [0], cfg.flood, 256, 64)
  const serial = await flood('1 sender, window 1', sender, receiver, await channel('acme/bench/tput-serial'), [0], Math.min(1000, cfg.flood), 1)
  // Same number of messages with the window, for a like-for-like comparison (same history).
  const oneShort = await flood('1 sender, 1000 only', sender, receiver, await channel('acme/bench/tput-short'), [0], Math.min(1000, cfg.flood))
  await sender.call('close')

  // Several sender agents in one process, each with its own Client (connection).
  const ch2 = 'acme/bench/throughput-multi'
  const suffix = randomBytes(3).toString('hex')
  const ids = Array.from({ length: cfg.senders }, (_, i) => `m${i}-${suffix}`)
  const multi = await worker('tput-senders', ids)
  const rid = `rm-${suffix}`
  const receiver2 = await worker('tput-receiver2', [rid])
  await multi.call('createChannel', { name: ch2 })
  await multi.call('addMembers', { channel: ch2, identities: [...ids.slice(1), rid] })
  await Promise.all([multi.call('waitForChannel', { channel: ch2, timeoutMs: 30_000 }), receiver2.call('waitForChannel', { channel: ch2, timeoutMs: 30_000 })])
  const per = Math.ceil(cfg.flood / cfg.senders)
  log(`throughput: ${cfg.senders} senders × ${per} messages`)
  const many = await flood(`${cfg.senders} senders`, multi, receiver2, ch2, ids.map((_, i) => i), per)
  results.phases.throughput = { one, oneBatched, oneShort, serial, many }
  await Promise.all([receiver.call('close'), multi.call('close'), receiver2.call('close')])
}

async function phaseFanout() {
  const channel = 'acme/bench/fanout'
  const suffix = randomBytes(3).toString('hex')
  const n = cfg.subscribers
  const ids = Array.from({ length: n }, (_, i) => `f${i}-${suffix}`)
  const sender = await worker('fanout-sender', [`fs-${suffix}`])
  log(`fanout: opening ${n} subscriber agents, ${cfg.perProcess} per process`)
  let t = Date.now()
  const groups = []
  for (let i = 0; i < n; i += cfg.perProcess) groups.push(ids.slice(i, i + cfg.perProcess))
  const subs = await Promise.all(groups.map((g, i) => worker(`fanout-sub${i}`, g)))
  const openMs = Date.now() - t
  await sender.call('createChannel', { name: channel })
  log(`fanout: adding ${n} members one by one`)
  const pids = Object.fromEntries(subs.map((w, i) => [`sub${i}`, w.pid]))
  let m = meter({ sender: sender.pid, ...pids })
  t = Date.now()
  const addTimes = await sender.call('addMembers', { channel, identities: ids })
  const addMs = Date.now() - t
  await Promise.all(subs.map((w) => w.call('waitForChannel', { channel, timeoutMs: 120_000 })))
  const allJoinedMs = Date.now() - t
  const addCpu = m.since()
  log(`  adds done in ${(addMs / 1000).toFixed(1)} s, all joined in ${(allJoinedMs / 1000).toFixed(1)} s`)
  // Let the members finish applying the last commits before timing messages.
  await sleep(1000)

  const count = cfg.fanoutMessages
  log(`fanout: ${count} messages at ${cfg.fanoutRate} msg/s to ${n} subscribers`)
  m = meter({ sender: sender.pid, ...pids })
  const recvs = subs.map((w) => w.call('receive', { channel, count, timeoutMs: (count / cfg.fanoutRate) * 1000 + 90_000, latencies: true }))
  await sleep(200)
  const sent = await sender.call('sendPaced', { channel, rate: cfg.fanoutRate, count, size: cfg.size })
  const got = await Promise.all(recvs)
  const per = got.flatMap((g) => g.per)
  const delivered = per.reduce((a, s) => a + s.got, 0)
  const lastUs = Math.max(...per.map((s) => s.lastUs))
  const lat = got.flatMap((g) => g.latencies)
  const sorted = addTimes.slice().sort((a, b) => a - b)
  results.phases.fanout = {
    subscribers: n,
    perProcess: cfg.perProcess,
    processes: subs.length,
    openAndConnectMs: openMs,
    add: { totalMs: addMs, allJoinedMs, firstMs: +addTimes[0].toFixed(1), lastMs: +addTimes[addTimes.length - 1].toFixed(1), p50Ms: +sorted[Math.floor(sorted.length / 2)].toFixed(1), cpuSeconds: addCpu },
    messages: count,
    offered: cfg.fanoutRate,
    expectedDeliveries: n * count,
    delivered,
    complete: per.filter((s) => s.got >= count).length,
    outOfOrder: per.reduce((a, s) => a + s.outOfOrder, 0),
    duplicates: per.reduce((a, s) => a + s.duplicates, 0),
    timedOut: got.some((g) => g.timedOut),
    sendErrors: sent.errors,
    ackRate: rate(count, (sent.lastAckUs - sent.startUs) / 1000),
    deliveriesPerSecond: rate(delivered, (lastUs - sent.startUs) / 1000),
    wallSeconds: +((lastUs - sent.startUs) / 1e6).toFixed(2),
    latencyMs: summarize(lat),
    cpuSeconds: m.since(),
  }
  const f = results.phases.fanout
  log(`  ${f.delivered}/${f.expectedDeliveries} deliveries, ${f.deliveriesPerSecond}/s, p50 ${f.latencyMs.p50} ms, p99 ${f.latencyMs.p99} ms`)
}

/** A receiver agent (a fresh process) reading `n` channels at once, each flooded by a sender
 *  agent of its own, or with `rotate`, all of them by one sender agent in turn. */
async function manyChannels(n, tag, rotate = false) {
  const suffix = randomBytes(3).toString('hex')
  const rid = `rc-${suffix}`
  const receiver = await worker(`channels-${tag}-receiver`, [rid])
  const ids = Array.from({ length: rotate ? 1 : n }, (_, i) => `c${i}-${suffix}`)
  const senders = await worker(`channels-${tag}-senders`, ids)
  const names = Array.from({ length: n }, (_, i) => `acme/bench/channels-${tag}-${i}`)
  for (let i = 0; i < n; i++) {
    const agent = rotate ? 0 : i
    await senders.call('createChannel', { name: names[i], agent })
    await senders.call('addMembers', { channel: names[i], identities: [rid], agent })
  }
  for (const name of names) await receiver.call('waitForChannel', { channel: name, timeoutMs: 30_000 })
  const per = Math.ceil(cfg.flood / ids.length)
  const total = per * ids.length
  const m = meter({ senders: senders.pid, receiver: receiver.pid })
  const recv = receiver.call('receiveAll', { channels: names, count: total, timeoutMs: 120_000 })
  await sleep(100)
  const sent = await senders.call('sendFlood', { channels: names, rotate, count: per, size: cfg.size, senders: ids.map((_, i) => i), window: Math.max(1, Math.floor(256 / ids.length)) })
  const got = await recv
  const cpuSeconds = m.since()
  await Promise.all([senders.call('close'), receiver.call('close')])
  const r = {
    channels: n,
    senders: ids.length,
    messages: total,
    received: got.got,
    timedOut: got.timedOut,
    outOfOrder: got.outOfOrder,
    duplicates: got.duplicates,
    sendErrors: sent.errors,
    deliveredRate: rate(got.got, (got.lastUs - sent.startUs) / 1000),
    receiverCpuUsPerMessage: got.got > 0 ? Math.round((cpuSeconds.receiver / got.got) * 1e6) : NaN,
    cpuSeconds,
    wallSeconds: +((got.lastUs - sent.startUs) / 1e6).toFixed(2),
  }
  log(`  ${n} channel(s), ${ids.length} sender(s): ${r.deliveredRate} msg/s decrypted (${r.received}/${total}), receiver CPU ${r.receiverCpuUsPerMessage} µs per message`)
  return r
}

async function phaseChannels() {
  log(`channels: warm-up, then ${cfg.channels} senders in a channel each → 1 receiver, and 1 → 1 (${cfg.flood} messages each)`)
  await manyChannels(2, 'warm-up')
  const many = await manyChannels(cfg.channels, 'many')
  const one = await manyChannels(1, 'one')
  const rotated = await manyChannels(cfg.channels, 'rotated', true)
  results.phases.channels = { many, one, rotated }
}

function table() {
  const p = results.phases
  const rows = []
  const cpu = (c) => Object.entries(c).filter(([k]) => !k.startsWith('sub')).map(([k, v]) => `${k} ${v}`).join(', ')
  const subCpu = (c) => Object.entries(c).filter(([k]) => k.startsWith('sub')).reduce((a, [, v]) => a + v, 0).toFixed(1)
  if (p.latency) {
    for (const r of Object.values(p.latency)) {
      rows.push(`| latency, ${r.offered} msg/s offered × ${r.messages} | p50 **${r.latencyMs.p50}** ms, p90 ${r.latencyMs.p90}, p99 **${r.latencyMs.p99}** ms, max ${r.latencyMs.max}; delivered ${r.deliveredRate} msg/s, ${r.received}/${r.messages} | ${cpu(r.cpuSeconds)} (over ${r.wallSeconds} s) |`)
    }
  }
  if (p.throughput) {
    for (const r of [p.throughput.one, p.throughput.oneBatched, p.throughput.oneShort, p.throughput.serial, p.throughput.many].filter(Boolean)) {
      const how = r.batch ? `sendMany() of ${r.batch}, ≤ ${r.window} messages outstanding` : `≤ ${r.window} send() outstanding`
      rows.push(`| throughput, ${r.senders} sender agent(s), ${r.messages} × ${cfg.size} B, ${how} per agent | **${r.deliveredRate}** msg/s decrypted at the receiver (acks ${r.ackRate} msg/s); ${r.received}/${r.messages}; latency p50 ${r.latencyMs.p50} ms | ${cpu(r.cpuSeconds)} (over ${r.wallSeconds} s) |`)
    }
  }
  if (p.fanout) {
    const f = p.fanout
    rows.push(`| fan-out: add ${f.subscribers} members one by one | ${(f.add.totalMs / 1000).toFixed(1)} s (first add ${f.add.firstMs} ms, last ${f.add.lastMs} ms); all joined after ${(f.add.allJoinedMs / 1000).toFixed(1)} s | ${cpu(f.add.cpuSeconds)}, subscribers ${subCpu(f.add.cpuSeconds)} |`)
    rows.push(`| fan-out: 1 sender → ${f.subscribers} subscribers, ${f.messages} msg at ${f.offered} msg/s | **${f.deliveriesPerSecond}** deliveries/s; ${f.delivered}/${f.expectedDeliveries}; latency p50 ${f.latencyMs.p50} ms, p99 ${f.latencyMs.p99} ms | ${cpu(f.cpuSeconds)}, subscribers ${subCpu(f.cpuSeconds)} (over ${f.wallSeconds} s) |`)
  }
  if (p.channels) {
    for (const r of [p.channels.many, p.channels.one, p.channels.rotated]) {
      const who = r.senders === r.channels
        ? `${r.senders} sender agent(s), each flooding its own channel`
        : `1 sender agent flooding ${r.channels} channels in turn`
      rows.push(`| channels: ${who} → 1 receiver in all of them, ${r.messages} × ${cfg.size} B | **${r.deliveredRate}** msg/s decrypted; receiver CPU **${r.receiverCpuUsPerMessage} µs** per message, senders ${r.cpuSeconds.senders} s; ${r.received}/${r.messages}, ${r.outOfOrder} out of order, ${r.duplicates} twice | ${cpu(r.cpuSeconds)} (over ${r.wallSeconds} s) |`)
    }
  }
  const wake = results.machine.wakeRoundTripUs
  rows.unshift(`| host: thread wake-up round trip (idle, two threads) | p50 ${wake.p50} µs, p90 ${wake.p90} µs | |`)
  const out = ['| case | result | CPU seconds used |', '|---|---|---|', ...rows]
  for (const r of Object.values(p.latency ?? {}).filter((r) => r.steps)) {
    out.push('', `Where the time goes at ${r.offered} msg/s (\`--probe\`):`, '', ...formatBreakdown(r.steps))
  }
  return out.join('\n')
}

const started = Date.now()
try {
  results.machine.wakeRoundTripUs = (await wakeRoundTrip()).roundTripUs
  log(`host: thread wake-up round trip p50 ${results.machine.wakeRoundTripUs.p50} µs`)
  // Every agent of the run starts from this host: the API server's per-address limits (agent
  // registrations, revocation feed reads: 120 a minute each by default) would make the later
  // phases' connects wait for its next window.
  api = await startApiServer({ dataDir: join(root, 'api'), env: { SKYTALE_RATE_AGENTS_PER_IP: '100000', SKYTALE_RATE_REVOCATIONS_PER_IP: '100000', SKYTALE_RATE_TOKENS_PER_KEY: '100000' } })
  relay = await startRelay({
    dataDir: join(root, 'relay'),
    jwksUrl: `${api.url}/.well-known/jwks.json`,
    env: {
      SKYTALE_RELAY_FRAMES_PER_SECOND: '100000',
      SKYTALE_RELAY_BURST: '100000',
      // `--relay-workers N`: the relay's tokio worker threads (default: one per core)
      ...(opt('relay-workers') ? { TOKIO_WORKER_THREADS: String(opt('relay-workers')) } : {}),
    },
  })
  results.apiKey = await signup(api.url, 'acme')
  if (only.has('latency')) await phaseLatency()
  if (only.has('throughput')) await phaseThroughput()
  if (only.has('fanout')) await phaseFanout()
  if (only.has('channels')) await phaseChannels()
  delete results.apiKey
  results.machine.loadAfter = loadavg()
  results.totalSeconds = Math.round((Date.now() - started) / 1000)
  mkdirSync(join(REPO, 'target/bench'), { recursive: true })
  writeFileSync(join(REPO, 'target/bench/relay.json'), JSON.stringify(results, null, 2))
  console.log(table())
  log(`done in ${results.totalSeconds} s; JSON in target/bench/relay.json`)
} finally {
  // Latency probes are written every 200 ms: let the last ones out before the processes go.
  if (process.env.SKYTALE_PROBE_DIR) await new Promise((r) => setTimeout(r, 500))
  await Promise.all(workers.map((w) => w.kill()))
  await relay?.kill()
  await api?.stop()
  rmSync(root, { recursive: true, force: true })
}
