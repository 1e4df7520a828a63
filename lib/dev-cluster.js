// The NATS JetStream cluster of `skytale dev --cluster N`: N nats-server processes on 127.0.0.1
// with JetStream (store dirs under <root>/nats) and routes between them, for N relay nodes that
// share it (SKYTALE_RELAY_STORE=nats). Dev only: no auth, no TLS, loopback only.
'use strict'

const { spawn } = require('node:child_process')
const fs = require('node:fs')
const net = require('node:net')
const path = require('node:path')
const readline = require('node:readline')
const { createError } = require('./errors.js')

/** `$NATS_SERVER_BIN`, else `nats-server` from PATH (or /usr/sbin, /usr/local/bin); null if none. */
function natsServerBinary() {
  if (process.env.NATS_SERVER_BIN) return process.env.NATS_SERVER_BIN
  const dirs = (process.env.PATH ?? '').split(path.delimiter).concat(['/usr/sbin', '/usr/local/bin'])
  for (const d of dirs) {
    const p = path.join(d, process.platform === 'win32' ? 'nats-server.exe' : 'nats-server')
    try {
      if (fs.statSync(p).isFile()) return p
    } catch {}
  }
  return null
}

/** A free TCP port on 127.0.0.1 (free when asked; another process may take it before use). */
function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer()
    srv.once('error', reject)
    srv.listen({ port: 0, host: '127.0.0.1' }, () => {
      const { port } = /** @type {net.AddressInfo} */ (srv.address())
      srv.close(() => resolve(port))
    })
  })
}

function waitForPort(port, timeoutMs) {
  const deadline = Date.now() + timeoutMs
  return new Promise((resolve, reject) => {
    const attempt = () => {
      const s = net.connect({ port, host: '127.0.0.1' })
      s.once('connect', () => { s.destroy(); resolve(undefined) })
      s.once('error', () => {
        s.destroy()
        if (Date.now() > deadline) reject(createError('SKYTALE_DEV_STACK', `nats-server did not listen on ${port} within ${timeoutMs} ms`))
        else setTimeout(attempt, 50)
      })
    }
    attempt()
  })
}

/**
 * Starts `nodes` nats-server processes with JetStream, clustered when `nodes > 1`.
 * @param {{ root: string, nodes: number, quiet?: boolean, track?: (c: import('node:child_process').ChildProcess) => void, timeoutMs?: number }} options
 */
async function startNatsCluster({ root, nodes, quiet = true, track, timeoutMs = 30_000 }) {
  const bin = natsServerBinary()
  if (!bin) {
    throw createError('SKYTALE_DEV_STACK', 'nats-server not found: install it (apt-get install nats-server, brew install nats-server, or a release from nats.io) or set NATS_SERVER_BIN')
  }
  const ports = []
  for (let i = 0; i < nodes; i++) ports.push({ client: await freePort(), cluster: await freePort() })
  const procs = []
  for (let i = 0; i < nodes; i++) {
    const name = `n${i + 1}`
    const dir = path.join(root, 'nats', name)
    fs.mkdirSync(dir, { recursive: true, mode: 0o700 })
    const args = ['-js', '-a', '127.0.0.1', '-p', String(ports[i].client), '-n', name, '-sd', dir]
    if (nodes > 1) {
      const routes = ports.filter((_, j) => j !== i).map((p) => `nats://127.0.0.1:${p.cluster}`).join(',')
      args.push('--cluster_name', 'skytale-dev', '--cluster', `nats://127.0.0.1:${ports[i].cluster}`, '--routes', routes)
    }
    const log = fs.createWriteStream(path.join(root, 'logs', `nats-${name}.log`), { flags: 'a', mode: 0o600 })
    const child = spawn(bin, args, { stdio: ['ignore', 'pipe', 'pipe'] })
    track?.(child)
    const exited = new Promise((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })))
    for (const s of [child.stdout, child.stderr]) {
      readline.createInterface({ input: s }).on('line', (line) => {
        log.write(`${line}\n`)
        if (!quiet) process.stderr.write(`[nats-${name}] ${line}\n`)
      })
    }
    procs.push({ name, child, exited, log, url: `nats://127.0.0.1:${ports[i].client}` })
  }
  await Promise.all(ports.map((p) => waitForPort(p.client, timeoutMs)))
  return {
    nodes: procs,
    urls: procs.map((p) => p.url),
    /** SIGTERM to every node (SIGKILL after `graceMs`). */
    async stop(graceMs = 5000) {
      await Promise.all(procs.map(async (p) => {
        if (p.child.exitCode === null && p.child.signalCode === null) {
          try { p.child.kill('SIGTERM') } catch {}
          const timer = setTimeout(() => { try { p.child.kill('SIGKILL') } catch {} }, graceMs)
          await p.exited
          clearTimeout(timer)
        }
        await new Promise((r) => p.log.end(r))
      }))
    },
  }
}

module.exports = { startNatsCluster, natsServerBinary, freePort }
