#!/usr/bin/env node
// The npm packages of a release: @skytale/sdk, its per-platform packages npm/<platform>/ (the
// napi addon, @skytale/sdk-<platform>) and npm/relay-<platform>/ (the relay binary,
// @skytale/relay-<platform>), and @skytale/api-server.
//
//   node tools/npm-packages.mjs optional-deps [package.json]
//       adds every per-platform package, at the SDK's version, to the optionalDependencies of the
//       given package.json (default: the repository's): npm installs only the one matching the
//       user's os/cpu/libc. Run at publish time (release.yml, tests/pack), as `napi prepublish`
//       does for the addon packages; the repository's package.json does not list them, so that
//       `npm ci` never looks for unpublished packages.
//   node tools/npm-packages.mjs check
//       fails when a package's version differs from the SDK's.
import { readFileSync, writeFileSync } from 'node:fs'
import { createRequire } from 'node:module'
import { dirname, join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'

const require = createRequire(import.meta.url)
const { TARGETS } = require('../lib/binaries.js')
const REPO = resolve(dirname(fileURLToPath(import.meta.url)), '..')
const read = (/** @type {string} */ p) => JSON.parse(readFileSync(p, 'utf8'))
const root = read(join(REPO, 'package.json'))

/** Directories (under npm/) and names of the per-platform packages. */
export function platformPackages() {
  const out = []
  for (const t of Object.values(TARGETS)) {
    out.push({ dir: join(REPO, 'npm', t.platform), name: `${root.napi.packageName}-${t.platform}` })
    out.push({ dir: join(REPO, 'npm', `relay-${t.platform}`), name: `@skytale/relay-${t.platform}` })
  }
  return out
}

function check() {
  const problems = []
  for (const { dir, name } of platformPackages()) {
    const pkg = read(join(dir, 'package.json'))
    if (pkg.name !== name) problems.push(`${dir}: name ${pkg.name}, expected ${name}`)
    if (pkg.version !== root.version) problems.push(`${dir}: version ${pkg.version}, expected ${root.version}`)
  }
  const api = read(join(REPO, 'api-server', 'package.json'))
  if (api.version !== root.version) problems.push(`api-server: version ${api.version}, expected ${root.version}`)
  if (api.private) problems.push('api-server: private (cannot be published)')
  return problems
}

const [cmd, arg] = process.argv.slice(2)
if (cmd === 'optional-deps') {
  const file = resolve(arg ?? join(REPO, 'package.json'))
  const pkg = read(file)
  pkg.optionalDependencies ??= {}
  for (const { name } of platformPackages()) pkg.optionalDependencies[name] = root.version
  writeFileSync(file, `${JSON.stringify(pkg, null, 2)}\n`)
  console.error(`${file}: ${platformPackages().length} optionalDependencies at ${root.version}`)
} else if (cmd === 'check') {
  const problems = check()
  for (const p of problems) console.error(p)
  if (problems.length) process.exit(1)
  console.error(`npm packages ok: ${platformPackages().length} platform packages and api-server at ${root.version}`)
} else if (cmd !== undefined) {
  console.error('usage: node tools/npm-packages.mjs optional-deps [package.json] | check')
  process.exit(2)
}
