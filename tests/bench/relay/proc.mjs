// Helpers of the relay benchmark: spawning bench workers, CPU time of processes, percentiles.
import { spawn } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import readline from 'node:readline'

const WORKER = fileURLToPath(new URL('./worker.mjs', import.meta.url))

/** Starts a bench worker process; `call(op, args)` resolves with its answer. */
export function startWorker(name) {
  const child = spawn(process.execPath, [WORKER], { stdio: ['pipe', 'pipe', 'inherit'] })
  const pending = new Map()
  let next = 1
  readline.createInterface({ input: child.stdout }).on('line', (line) => {
    const msg = JSON.parse(line)
    const p = pending.get(msg.id)
    if (!p) return
    pending.delete(msg.id)
    if (msg.ok) p.resolve(msg.value)
    else p.reject(Object.assign(new Error(`${name}: ${msg.message}`), { code: msg.code }))
  })
  const exited = new Promise((resolve) => child.on('exit', (code, signal) => {
    for (const p of pending.values()) p.reject(new Error(`${name} exited (${code ?? signal})`))
    pending.clear()
    resolve({ code, signal })
  }))
  return {
    name,
    pid: child.pid,
    call(op, args = {}) {
      const id = next++
      return new Promise((resolve, reject) => {
        pending.set(id, { resolve, reject })
        child.stdin.write(JSON.stringify({ id, op, args }) + '\n')
      })
    },
    async kill() { if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL'); return exited },
  }
}

/** User+system CPU seconds used so far by process `pid` (Linux /proc; 0 elsewhere). */
export function cpuSeconds(pid) {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
    return (Number(f[11]) + Number(f[12])) / 100 // utime, stime in clock ticks (USER_HZ = 100)
  } catch {
    return 0
  }
}

/** Snapshot of CPU seconds of named pids; `since(snapshot)` gives the difference per name. */
export function cpuMeter(pids) {
  const take = () => Object.fromEntries(Object.entries(pids).map(([k, pid]) => [k, cpuSeconds(pid)]))
  const start = take()
  return { since() { const now = take(); return Object.fromEntries(Object.keys(now).map((k) => [k, +(now[k] - start[k]).toFixed(2)])) } }
}

export function percentile(sorted, p) {
  if (sorted.length === 0) return NaN
  const i = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))
  return sorted[i]
}

export function summarize(latencies) {
  const s = [...latencies].sort((a, b) => a - b)
  const r = (x) => +x.toFixed(2)
  return { n: s.length, p50: r(percentile(s, 50)), p90: r(percentile(s, 90)), p99: r(percentile(s, 99)), max: r(s[s.length - 1] ?? NaN) }
}
