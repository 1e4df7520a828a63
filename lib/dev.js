// Local development stack: the API server (embedded PGlite) and the relay binary (embedded
// SQLite) as child processes on 127.0.0.1, with their data under one root directory
// (default ./.skytale), plus a dev account created once. Used by `skytale dev` and the demo.
// With `cluster: N` (`skytale dev --cluster 3`): N nats-server nodes with JetStream
// (lib/dev-cluster.js) and N relay nodes sharing them, the API server publishing all N.
//
// DEV ONLY: `<root>/dev.json` (mode 0600) holds the dev account's API key and a dev keystore key
// in clear text, so that the CLI and examples work without any setup. Never use it for anything
// that matters.
'use strict'

const { spawn } = require('node:child_process')
const { randomBytes } = require('node:crypto')
const dgram = require('node:dgram')
const fs = require('node:fs')
const net = require('node:net')
const path = require('node:path')
const readline = require('node:readline')
const { createError } = require('./errors.js')
const { relayBinary, apiServerEntry, INSTALL_HINT, PKG_ROOT } = require('./binaries.js')
const { startNatsCluster, freePort } = require('./dev-cluster.js')

/** Root of this package (the repository root in a checkout). */
const REPO = PKG_ROOT

/** Default ports: chosen away from the relay's own defaults (UDP 4433, HTTP 8787) and the API server's (8080). */
const DEFAULT_PORTS = { api: 7780, relay: 7781, relayHttp: 7782 }

/** @param {string} code @param {string} message */
function devError(code, message) {
  return createError(code, message)
}

function tcpPortFree(port) {
  return new Promise((resolve) => {
    const srv = net.createServer()
    srv.once('error', () => resolve(false))
    srv.listen({ port, host: '127.0.0.1', exclusive: true }, () => srv.close(() => resolve(true)))
  })
}

function udpPortFree(port) {
  return new Promise((resolve) => {
    const sock = dgram.createSocket('udp4')
    sock.once('error', () => { sock.close(); resolve(false) })
    sock.bind({ port, address: '127.0.0.1', exclusive: true }, () => sock.close(() => resolve(true)))
  })
}

/** `port` if it is free (or 0), else 0 (the child then picks a free one). */
async function pickPort(port, udp) {
  if (!port) return 0
  return (await (udp ? udpPortFree(port) : tcpPortFree(port))) ? port : 0
}

function isAlive(pid) {
  try {
    process.kill(pid, 0)
    return true
  } catch (e) {
    return e.code === 'EPERM'
  }
}

const liveChildren = new Set()
let exitHookInstalled = false
function track(child) {
  liveChildren.add(child)
  child.once('exit', () => liveChildren.delete(child))
  if (!exitHookInstalled) {
    exitHookInstalled = true
    // Last resort: never leave the stack running when the parent goes away without stop().
    process.once('exit', () => {
      for (const c of liveChildren) {
        try { c.kill('SIGKILL') } catch {}
      }
    })
  }
}

/**
 * Spawns a child, drains its stdout/stderr line by line (into `logFile` and, unless quiet, to
 * our stderr with a prefix) and resolves with the match of `pattern` on stdout.
 */
function spawnAndWait({ cmd, args, env, name, pattern, logStream, quiet, timeoutMs = 60_000 }) {
  const child = spawn(cmd, args, { env, stdio: ['ignore', 'pipe', 'pipe'] })
  track(child)
  const exited = new Promise((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })))
  const tail = []
  const onLine = (line) => {
    logStream.write(`${line}\n`)
    tail.push(line)
    if (tail.length > 20) tail.shift()
    if (!quiet) process.stderr.write(`[${name}] ${line}\n`)
  }
  const out = readline.createInterface({ input: child.stdout })
  readline.createInterface({ input: child.stderr }).on('line', onLine)
  const ready = new Promise((resolve, reject) => {
    let done = false
    const timer = setTimeout(() => {
      if (done) return
      done = true
      reject(devError('SKYTALE_DEV_STACK', `${name} did not start within ${timeoutMs} ms`))
    }, timeoutMs)
    out.on('line', (line) => {
      onLine(line)
      const m = !done && line.match(pattern)
      if (m) { done = true; clearTimeout(timer); resolve(m) }
    })
    child.once('error', (e) => {
      if (done) return
      done = true
      clearTimeout(timer)
      reject(devError('SKYTALE_DEV_STACK', `${name} could not be started: ${e.message}`))
    })
    child.once('exit', (code, signal) => {
      if (done) return
      done = true
      clearTimeout(timer)
      // Let the last lines of output arrive before reporting them.
      setTimeout(() => {
        const err = devError('SKYTALE_DEV_STACK', `${name} exited during start (${code ?? signal}):\n  ${tail.join('\n  ')}`)
        Object.assign(err, { tail: tail.slice() })
        reject(err)
      }, 50)
    })
  })
  return { child, exited, ready }
}

async function stopChild(proc, timeoutMs) {
  if (!proc) return
  const { child, exited } = proc
  if (child.exitCode === null && child.signalCode === null) {
    try { child.kill('SIGTERM') } catch {}
    const timer = setTimeout(() => {
      if (child.exitCode === null && child.signalCode === null) {
        try { child.kill('SIGKILL') } catch {}
      }
    }, timeoutMs)
    await exited
    clearTimeout(timer)
  }
}

/**
 * @param {string} apiUrl @param {string} method @param {string} route
 * @param {{ apiKey?: string, body?: unknown }} [options]
 */
async function api(apiUrl, method, route, { apiKey, body } = {}) {
  /** @type {Record<string, string>} */
  const headers = {}
  if (apiKey) headers.authorization = `Bearer ${apiKey}`
  if (body !== undefined) headers['content-type'] = 'application/json'
  const res = await fetch(`${apiUrl}${route}`, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) })
  const text = await res.text()
  let json = null
  try { json = text ? JSON.parse(text) : null } catch {}
  return { status: res.status, json }
}

function readDevFile(file) {
  try {
    return JSON.parse(fs.readFileSync(file, 'utf8'))
  } catch {
    return null
  }
}

function writeDevFile(file, data) {
  const tmp = `${file}.${process.pid}.tmp`
  fs.writeFileSync(tmp, `${JSON.stringify(data, null, 2)}\n`, { mode: 0o600 })
  fs.chmodSync(tmp, 0o600)
  fs.renameSync(tmp, file)
}

/** Creates the dev account once (org `dev` by default); reuses the key in dev.json while it still works. */
async function ensureDevAccount(apiUrl, file, org) {
  const saved = readDevFile(file) || {}
  let apiKey = saved.org === org ? saved.apiKey : undefined
  if (apiKey) {
    const me = await api(apiUrl, 'GET', '/v1/accounts/me', { apiKey })
    if (me.status !== 200) apiKey = undefined
  }
  if (!apiKey) {
    const res = await api(apiUrl, 'POST', '/v1/accounts', { body: { email: `${org}@example.com`, name: org, org } })
    if (res.status === 409) {
      throw devError('SKYTALE_DEV_STACK', `the dev account (org ${org}) exists but ${file} has no working key for it; delete the dev root (${path.dirname(file)}) to start afresh`)
    }
    if (res.status !== 201) {
      throw devError('SKYTALE_DEV_STACK', `creating the dev account failed: HTTP ${res.status} ${res.json?.error?.code ?? ''}`)
    }
    apiKey = res.json.apiKey
    saved.accountId = res.json.account.id
    saved.createdAt = new Date().toISOString()
  }
  saved.org = org
  saved.apiKey = apiKey
  // A dev keystore key so that the CLI works without setup (dev only, like the API key).
  if (typeof saved.keystoreKey !== 'string' || !/^[0-9a-f]{64}$/.test(saved.keystoreKey)) saved.keystoreKey = randomBytes(32).toString('hex')
  return saved
}

/**
 * Starts the local stack: the API server (PGlite in `<root>/api`), then the relay (data in
 * `<root>/relay`, trusting the API server's JWKS), and creates the dev account once.
 */
async function startDevStack(options = {}) {
  const root = path.resolve(options.root ?? './.skytale')
  const quiet = options.quiet ?? true
  const org = options.org ?? 'dev'
  if (!/^[a-z0-9-]{1,64}$/.test(org)) throw devError('SKYTALE_INVALID_ARGUMENT', 'org must match [a-z0-9-]{1,64}')
  const stopTimeoutMs = options.stopTimeoutMs ?? 5000
  const cluster = options.cluster ?? 1
  if (!Number.isInteger(cluster) || cluster < 1 || cluster > 9) throw devError('SKYTALE_INVALID_ARGUMENT', 'cluster must be 1..9 relay nodes')
  const entry = apiServerEntry()
  const relayBin = options.relayBinary ?? relayBinary()
  if (!fs.existsSync(entry)) throw devError('SKYTALE_DEV_STACK', `API server not found (${entry}): ${INSTALL_HINT.api}`)
  if (!fs.existsSync(relayBin)) throw devError('SKYTALE_DEV_STACK', `relay binary not found (${relayBin}): ${INSTALL_HINT.relay}`)

  fs.mkdirSync(path.join(root, 'logs'), { recursive: true, mode: 0o700 })
  fs.mkdirSync(path.join(root, 'api'), { recursive: true, mode: 0o700 })
  const relayDirs = cluster === 1 ? [path.join(root, 'relay')] : Array.from({ length: cluster }, (_, i) => path.join(root, `relay-${i + 1}`))
  for (const d of relayDirs) fs.mkdirSync(d, { recursive: true, mode: 0o700 })

  // One stack per root: PGlite and the relay store must not be opened twice.
  const pidFile = path.join(root, 'dev.pid')
  const other = Number.parseInt(readDevFile(pidFile)?.pid ?? '0', 10)
  if (other && other !== process.pid && isAlive(other)) {
    throw devError('SKYTALE_DEV_STACK', `a dev stack is already running with root ${root} (pid ${other})`)
  }
  fs.writeFileSync(pidFile, JSON.stringify({ pid: process.pid }), { mode: 0o600 })

  /** @type {Record<string, fs.WriteStream>} */
  const logs = { api: fs.createWriteStream(path.join(root, 'logs', 'api.log'), { flags: 'a', mode: 0o600 }) }
  relayDirs.forEach((_, i) => {
    const name = cluster === 1 ? 'relay' : `relay-${i + 1}`
    logs[name] = fs.createWriteStream(path.join(root, 'logs', `${name}.log`), { flags: 'a', mode: 0o600 })
  })
  /** @type {any} */
  let apiProc = null
  /** @type {any[]} */
  const relayProcs = []
  /** @type {any} */
  let nats = null
  let stopping = null

  const stop = () => {
    stopping ??= (async () => {
      await Promise.all(relayProcs.map((p) => stopChild(p, stopTimeoutMs)))
      await stopChild(apiProc, stopTimeoutMs)
      await nats?.stop(stopTimeoutMs)
      await Promise.all(Object.values(logs).map((s) => new Promise((r) => s.end(r))))
      try {
        if (readDevFile(pidFile)?.pid === process.pid) fs.rmSync(pidFile, { force: true })
      } catch {}
    })()
    return stopping
  }

  try {
    const startApi = async (port, extraEnv = {}) => {
      apiProc = spawnAndWait({
        cmd: process.execPath,
        args: [entry],
        env: {
          ...process.env,
          PORT: String(port),
          HOST: '127.0.0.1',
          SKYTALE_API_DATA_DIR: path.join(root, 'api'),
          LOG_LEVEL: process.env.LOG_LEVEL ?? 'info',
          ...extraEnv,
          ...options.apiEnv,
        },
        name: 'api',
        pattern: /listening on (http:\/\/\S+)/,
        logStream: logs.api,
        quiet,
      })
      return (await apiProc.ready)[1]
    }
    const startRelay = async (i, udp, http, jwksUrl, extraEnv = {}) => {
      const name = cluster === 1 ? 'relay' : `relay-${i + 1}`
      const proc = spawnAndWait({
        cmd: relayBin,
        args: [],
        env: {
          ...process.env,
          RUST_LOG: process.env.RUST_LOG ?? 'info,iroh=warn,noq=warn',
          SKYTALE_RELAY_DATA_DIR: relayDirs[i],
          SKYTALE_RELAY_LISTEN: `127.0.0.1:${udp}`,
          SKYTALE_RELAY_HTTP_LISTEN: `127.0.0.1:${http}`,
          SKYTALE_RELAY_JWKS_URL: jwksUrl,
          ...extraEnv,
          ...options.relayEnv,
        },
        name,
        pattern: /^skytale-relay listening (\S+) (\S+)/,
        logStream: logs[name],
        quiet,
      })
      relayProcs[i] = proc
      const m = await proc.ready
      return { relay: m[1], relayHttp: m[2] }
    }

    let apiUrl
    /** @type {{ relay: string, relayHttp: string }[]} */
    const relayInfos = []
    if (cluster === 1) {
      const apiPort = await pickPort(options.apiPort ?? DEFAULT_PORTS.api, false)
      try {
        apiUrl = await startApi(apiPort)
      } catch (e) {
        if (apiPort === 0 || !/EADDRINUSE/.test(e.message)) throw e
        apiUrl = await startApi(0) // lost a race for the port
      }
      const jwks = `${apiUrl}/.well-known/jwks.json`
      const relayPort = await pickPort(options.relayPort ?? DEFAULT_PORTS.relay, true)
      const relayHttpPort = await pickPort(options.relayHttpPort ?? DEFAULT_PORTS.relayHttp, false)
      try {
        relayInfos.push(await startRelay(0, relayPort, relayHttpPort, jwks))
      } catch (e) {
        if (relayPort === 0 && relayHttpPort === 0) throw e
        if (!/in use|AddrInUse|os error 98/i.test(e.message)) throw e
        relayInfos[0] = await startRelay(0, 0, 0, jwks)
      }
    } else {
      // The relays come first (they fetch the JWKS when the first token arrives), so that the
      // API server can publish their addresses from its start.
      nats = await startNatsCluster({ root, nodes: cluster, quiet, track })
      const apiPort = (await pickPort(options.apiPort ?? DEFAULT_PORTS.api, false)) || (await freePort())
      const jwks = `http://127.0.0.1:${apiPort}/.well-known/jwks.json`
      for (let i = 0; i < cluster; i++) {
        const urls = nats.urls.slice(i).concat(nats.urls.slice(0, i)) // each relay prefers its own NATS node
        const udp = await pickPort((options.relayPort ?? DEFAULT_PORTS.relay) + 2 * i, true)
        const http = await pickPort((options.relayHttpPort ?? DEFAULT_PORTS.relayHttp) + 2 * i, false)
        relayInfos.push(await startRelay(i, udp, http, jwks, {
          SKYTALE_RELAY_STORE: 'nats',
          SKYTALE_RELAY_NATS_URL: urls.join(','),
          SKYTALE_RELAY_NATS_REPLICAS: String(Math.min(cluster, 3)),
        }))
      }
      const all = relayInfos.map((r) => r.relay)
      apiUrl = await startApi(apiPort, { SKYTALE_RELAY_URL: all[0], SKYTALE_RELAY_URLS: all.join(',') })
    }
    const relay = relayInfos.map((r) => r.relay).join(',')
    const relayInfo = { relay, relayHttp: relayInfos[0].relayHttp }

    const devFile = path.join(root, 'dev.json')
    const account = await ensureDevAccount(apiUrl, devFile, org)
    account.apiUrl = apiUrl
    account.relay = relayInfo.relay
    account.relayHttp = relayInfo.relayHttp
    writeDevFile(devFile, account)

    const env = {
      SKYTALE_API_URL: apiUrl,
      SKYTALE_API_KEY: account.apiKey,
      SKYTALE_RELAY: relayInfo.relay,
      SKYTALE_RELAY_HTTP: relayInfo.relayHttp,
      SKYTALE_KEYSTORE_KEY: account.keystoreKey,
    }
    const exits = [apiProc.exited.then((r) => ({ which: 'api', ...r }))]
      .concat(relayProcs.map((p, i) => p.exited.then((r) => ({ which: 'relay', node: i + 1, ...r }))))
      .concat((nats?.nodes ?? []).map((n, i) => n.exited.then((r) => ({ which: 'nats', node: i + 1, ...r }))))
    return {
      root,
      apiUrl,
      relay: relayInfo.relay,
      relays: relayInfos.map((r) => r.relay),
      relayHttps: relayInfos.map((r) => r.relayHttp),
      natsUrls: nats?.urls ?? [],
      relayHttp: relayInfo.relayHttp,
      apiKey: account.apiKey,
      keystoreKey: account.keystoreKey,
      org,
      devFile,
      relayDataDir: relayDirs[0],
      apiDataDir: path.join(root, 'api'),
      logDir: path.join(root, 'logs'),
      pids: {
        api: apiProc.child.pid,
        relay: relayProcs[0].child.pid,
        relays: relayProcs.map((p) => p.child.pid),
        nats: (nats?.nodes ?? []).map((n) => n.child.pid),
      },
      env,
      exited: Promise.race(exits),
      stop,
    }
  } catch (e) {
    await stop()
    throw e
  }
}

module.exports = { startDevStack, relayBinary, apiServerEntry, DEFAULT_PORTS, REPO }
