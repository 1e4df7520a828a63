// Where the servers live: the relay binary (per-platform package `@skytale/relay-<platform>`)
// and the API server (`@skytale/api-server`). Installed packages come first; the paths of a
// repository checkout (`npm run build`) are the fallback for contributors. Used by `skytale dev`,
// `skytale relay`, `skytale api` and lib/dev.js.
'use strict'

const fs = require('node:fs')
const path = require('node:path')

/** Root of this package (the repository root in a checkout). */
const PKG_ROOT = path.resolve(__dirname, '..')

/**
 * Rust target triple → npm platform suffix, os, cpu and libc of the per-platform packages
 * (the same names as the napi packages `@skytale/sdk-<platform>`).
 * @type {Record<string, { platform: string, os: string, cpu: string, libc?: string }>}
 */
const TARGETS = {
  'x86_64-unknown-linux-gnu': { platform: 'linux-x64-gnu', os: 'linux', cpu: 'x64', libc: 'glibc' },
  'aarch64-unknown-linux-gnu': { platform: 'linux-arm64-gnu', os: 'linux', cpu: 'arm64', libc: 'glibc' },
  'x86_64-unknown-linux-musl': { platform: 'linux-x64-musl', os: 'linux', cpu: 'x64', libc: 'musl' },
  'aarch64-unknown-linux-musl': { platform: 'linux-arm64-musl', os: 'linux', cpu: 'arm64', libc: 'musl' },
  'x86_64-apple-darwin': { platform: 'darwin-x64', os: 'darwin', cpu: 'x64' },
  'aarch64-apple-darwin': { platform: 'darwin-arm64', os: 'darwin', cpu: 'arm64' },
  'x86_64-pc-windows-msvc': { platform: 'win32-x64-msvc', os: 'win32', cpu: 'x64' },
}

/** @returns {boolean} whether this Linux process runs on musl libc */
function isMusl() {
  if (process.platform !== 'linux') return false
  /** @type {any} */
  const report = typeof process.report?.getReport === 'function' ? process.report.getReport() : null
  if (report?.header?.glibcVersionRuntime) return false
  if (Array.isArray(report?.sharedObjects)) return report.sharedObjects.some((/** @type {string} */ f) => f.includes('musl'))
  try {
    return fs.readFileSync('/usr/bin/ldd', 'utf8').includes('musl')
  } catch {
    return false
  }
}

/** The npm platform suffix of this process, e.g. `linux-x64-gnu` (undefined when unsupported). */
function currentPlatform() {
  const { platform, arch } = process
  if (platform === 'linux') return `linux-${arch}-${isMusl() ? 'musl' : 'gnu'}`
  if (platform === 'darwin') return `darwin-${arch}`
  if (platform === 'win32') return `win32-${arch}-msvc`
  return undefined
}

/** The Rust target triple of this process (undefined when unsupported). */
function currentTriple() {
  const plat = currentPlatform()
  return Object.keys(TARGETS).find((t) => TARGETS[t].platform === plat)
}

const RELAY_EXE = process.platform === 'win32' ? 'skytale-relay.exe' : 'skytale-relay'

/**
 * @param {string} id
 * @returns {string | undefined} the resolved path, or undefined when the module is not installed
 */
function tryResolve(id) {
  try {
    return require.resolve(id, { paths: [PKG_ROOT, process.cwd()] })
  } catch {
    return undefined
  }
}

/**
 * @param {{ path: string, source: string }[]} list
 * @returns {{ path: string, source: string }[]} the list without repeated paths (first kept)
 */
function dedupe(list) {
  const seen = new Set()
  return list.filter((c) => {
    let key = c.path
    try { key = fs.realpathSync(c.path) } catch {}
    if (seen.has(key)) return false
    seen.add(key)
    return true
  })
}

/**
 * Candidate paths of the relay binary, best first, with where each comes from.
 * @returns {{ path: string, source: string }[]}
 */
function relayCandidates() {
  /** @type {{ path: string, source: string }[]} */
  const out = []
  // An explicit override is the only candidate: never fall back silently from it.
  if (process.env.SKYTALE_RELAY_BIN) return [{ path: path.resolve(process.env.SKYTALE_RELAY_BIN), source: 'SKYTALE_RELAY_BIN' }]
  const plat = currentPlatform()
  if (plat) {
    const pkgJson = tryResolve(`@skytale/relay-${plat}/package.json`)
    if (pkgJson) out.push({ path: path.join(path.dirname(pkgJson), RELAY_EXE), source: `@skytale/relay-${plat}` })
    // A checkout: `npm run build` copies the binary into the platform package's directory.
    out.push({ path: path.join(PKG_ROOT, 'npm', `relay-${plat}`, RELAY_EXE), source: 'repository (npm run build)' })
  }
  const triple = currentTriple()
  const targetDirs = []
  if (process.env.CARGO_TARGET_DIR) targetDirs.push(path.resolve(PKG_ROOT, process.env.CARGO_TARGET_DIR))
  targetDirs.push(path.join(PKG_ROOT, 'target'))
  for (const dir of targetDirs) {
    if (triple) out.push({ path: path.join(dir, triple, 'release', RELAY_EXE), source: 'cargo target dir' })
    out.push({ path: path.join(dir, 'release', RELAY_EXE), source: 'cargo target dir' })
  }
  return dedupe(out)
}

/**
 * Path of the relay binary: $SKYTALE_RELAY_BIN, the installed `@skytale/relay-<platform>`, or a
 * build of this checkout. When none exists, the best candidate (for the error message).
 * @returns {string}
 */
function relayBinary() {
  const all = relayCandidates()
  return (all.find((c) => fs.existsSync(c.path)) ?? all[0]).path
}

/**
 * Candidate entry points of the API server, best first.
 * @returns {{ path: string, source: string }[]}
 */
function apiServerCandidates() {
  /** @type {{ path: string, source: string }[]} */
  const out = []
  if (process.env.SKYTALE_API_SERVER_ENTRY) return [{ path: path.resolve(process.env.SKYTALE_API_SERVER_ENTRY), source: 'SKYTALE_API_SERVER_ENTRY' }]
  const pkgJson = tryResolve('@skytale/api-server/package.json')
  if (pkgJson) out.push({ path: path.join(path.dirname(pkgJson), 'dist', 'main.js'), source: '@skytale/api-server' })
  out.push({ path: path.join(PKG_ROOT, 'api-server', 'dist', 'main.js'), source: 'repository (npm run build)' })
  return dedupe(out)
}

/**
 * Path of the API server entry point (`dist/main.js` of `@skytale/api-server`, or of this
 * checkout's api-server/ once built).
 * @returns {string}
 */
function apiServerEntry() {
  const all = apiServerCandidates()
  return (all.find((c) => fs.existsSync(c.path)) ?? all[0]).path
}

/** How to get a missing server, for error messages. */
const INSTALL_HINT = {
  relay: `install it (npm i @skytale/relay-${currentPlatform() ?? '<platform>'}; it comes with @skytale/sdk as an optional dependency), set SKYTALE_RELAY_BIN, or run npm run build in a checkout`,
  api: 'install it (npm i @skytale/api-server), set SKYTALE_API_SERVER_ENTRY, or run npm run build in a checkout',
}

module.exports = {
  TARGETS,
  PKG_ROOT,
  currentPlatform,
  currentTriple,
  relayBinary,
  relayCandidates,
  apiServerEntry,
  apiServerCandidates,
  INSTALL_HINT,
}
