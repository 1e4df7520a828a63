// Test helper: spawns an agent worker process and calls it like an async API.
import { spawn } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import readline from 'node:readline'

const WORKER = fileURLToPath(new URL('./agent-worker.mjs', import.meta.url))
/** The SkytaleChannelManager worker. */
export const MANAGER_WORKER = fileURLToPath(new URL('./manager-worker.mjs', import.meta.url))

/** An error returned by a worker, with the native error's `code`. */
export class RemoteError extends Error {
  constructor(code, message) { super(message); this.code = code }
}

const enc = (v) => {
  if (v instanceof Uint8Array) return { $b64: Buffer.from(v).toString('base64') }
  if (Array.isArray(v)) return v.map(enc)
  if (v && typeof v === 'object') return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, enc(x)]))
  return v
}
const dec = (v) => {
  if (v && typeof v === 'object' && '$b64' in v) return new Uint8Array(Buffer.from(v.$b64, 'base64'))
  if (Array.isArray(v)) return v.map(dec)
  if (v && typeof v === 'object') return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, dec(x)]))
  return v
}

/** Starts a worker process; `call(op, args)` resolves with its answer or rejects with RemoteError. */
export function startAgentProcess(worker = WORKER) {
  const child = spawn(process.execPath, [worker], { stdio: ['pipe', 'pipe', 'inherit'] })
  const pending = new Map()
  let next = 1
  readline.createInterface({ input: child.stdout }).on('line', (line) => {
    const msg = JSON.parse(line)
    const p = pending.get(msg.id)
    if (!p) return
    pending.delete(msg.id)
    if (msg.ok) p.resolve(dec(msg.value))
    else { const e = new RemoteError(msg.code, msg.message); e.errorName = msg.name; p.reject(e) }
  })
  const exited = new Promise((resolve) => child.on('exit', (code, signal) => {
    for (const p of pending.values()) p.reject(new Error(`agent process exited (${code ?? signal})`))
    pending.clear()
    resolve({ code, signal })
  }))
  return {
    pid: child.pid,
    call(op, args = {}) {
      const id = next++
      return new Promise((resolve, reject) => {
        pending.set(id, { resolve, reject })
        child.stdin.write(JSON.stringify({ id, op, args: enc(args) }) + '\n')
      })
    },
    /** Kills the process with SIGKILL (no clean shutdown). */
    async kill() { child.kill('SIGKILL'); return exited },
    /** Ends the process normally. */
    async stop() { child.stdin.end(); return exited },
  }
}
