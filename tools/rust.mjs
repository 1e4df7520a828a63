#!/usr/bin/env node
// Rust builds of the workspace, in ONE cargo invocation per purpose so that features unify once
// and every step reuses the same artifacts (same target triple, profile and feature set):
//
//   node tools/rust.mjs build [--target T] [--dist]
//       napi build of crates/skytale-node (writes skytale.<platform>.node, index.js, index.d.ts)
//       with cargo building the rest of the workspace in the same invocation; then copies the
//       relay binary into npm/relay-<platform>/. Default: `--workspace --all-targets` (the tests
//       too, so that `test` below compiles nothing new); `--dist`: only skytale-node and
//       skytale-relay (release builds).
//   node tools/rust.mjs test      cargo test --release --workspace --exclude skytale-node --target <host>
//       (skytale-node has no Rust tests, the JS tests cover it; building it outside napi, without
//       napi's type-def env, would recompile it here and again at the next napi build); then the
//       relay's behaviour tests once more with SKYTALE_TEST_RELAY_STORE=nats (JetStream store)
//   node tools/rust.mjs clippy    cargo clippy --release --workspace --all-targets -- -D warnings
//   node tools/rust.mjs fmt       cargo fmt --all --check
//
// napi always passes `--target`, which puts artifacts under target/<triple>/; every command here
// passes the same triple so that nothing is compiled twice (without `--target`, cargo uses
// target/release/ and rebuilds the whole dependency graph).
import { spawnSync } from 'node:child_process'
import { copyFileSync, chmodSync, existsSync, mkdirSync, readFileSync } from 'node:fs'
import { createRequire } from 'node:module'
import { dirname, join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'

const require = createRequire(import.meta.url)
const { TARGETS } = require('../lib/binaries.js')
const REPO = resolve(dirname(fileURLToPath(import.meta.url)), '..')

/** @param {string} cmd @param {string[]} args */
function run(cmd, args) {
  process.stderr.write(`$ ${cmd} ${args.join(' ')}\n`)
  const r = spawnSync(cmd, args, { cwd: REPO, stdio: 'inherit', shell: process.platform === 'win32' })
  if (r.status !== 0) process.exit(r.status ?? 1)
}

function hostTriple() {
  const r = spawnSync('rustc', ['-vV'], { encoding: 'utf8' })
  const m = /^host: (\S+)$/m.exec(r.stdout ?? '')
  if (!m) throw new Error('cannot read the host triple from `rustc -vV`')
  return m[1]
}

/** Names that index.d.ts declares more than once. */
function duplicateDeclarations() {
  const seen = new Set()
  const dup = new Set()
  for (const m of readFileSync(join(REPO, 'index.d.ts'), 'utf8').matchAll(/^export declare (?:class|function|const|enum) (\w+)/gm)) {
    if (seen.has(m[1])) dup.add(m[1])
    seen.add(m[1])
  }
  return [...dup]
}

function targetDir() {
  return process.env.CARGO_TARGET_DIR ? resolve(REPO, process.env.CARGO_TARGET_DIR) : join(REPO, 'target')
}

const [command, ...rest] = process.argv.slice(2)
let target = process.env.CARGO_BUILD_TARGET || undefined
let dist = false
const extra = []
for (let i = 0; i < rest.length; i++) {
  if (rest[i] === '--target') target = rest[++i]
  else if (rest[i] === '--dist') dist = true
  else extra.push(rest[i])
}
target ??= hostTriple()

if (command === 'build') {
  const napi = join(REPO, 'node_modules', '.bin', process.platform === 'win32' ? 'napi.cmd' : 'napi')
  const scope = dist ? ['-p', 'skytale-node', '-p', 'skytale-relay'] : ['--workspace', '--all-targets']
  const napiBuild = (/** @type {string[]} */ more) => run(napi, [
    'build', '--platform', '--release', '--target', target,
    '--manifest-path', 'crates/skytale-node/Cargo.toml',
    '--output-dir', '.', '--js', 'index.js', '--dts', 'index.d.ts',
    ...more, ...extra, '--', ...scope,
  ])
  napiBuild([])
  // napi's type-def cache is appended to whenever skytale-node compiles; when something else
  // compiled it in between (a cargo command on the same target dir), the cache holds every
  // declaration twice. Then build again without the cache (forces a fresh skytale-node compile).
  if (duplicateDeclarations().length) {
    process.stderr.write(`index.d.ts declares ${duplicateDeclarations().join(', ')} twice (stale napi type-def cache): rebuilding without it\n`)
    napiBuild(['--no-dts-cache'])
    const again = duplicateDeclarations()
    if (again.length) throw new Error(`index.d.ts still declares ${again.join(', ')} twice`)
  }
  const info = TARGETS[target]
  const exe = target.includes('windows') ? 'skytale-relay.exe' : 'skytale-relay'
  const built = join(targetDir(), target, 'release', exe)
  if (!existsSync(built)) throw new Error(`relay binary missing after the build: ${built}`)
  if (info) {
    const dir = join(REPO, 'npm', `relay-${info.platform}`)
    mkdirSync(dir, { recursive: true })
    copyFileSync(built, join(dir, exe))
    chmodSync(join(dir, exe), 0o755)
    process.stderr.write(`relay binary → npm/relay-${info.platform}/${exe}\n`)
  }
} else if (command === 'test') {
  run('cargo', ['test', '--release', '--workspace', '--exclude', 'skytale-node', '--target', target, ...extra])
  // The relay's behaviour suite again on the JetStream store (each relay gets its own
  // nats-server); skipped only when an explicit test filter was given. Selected from the
  // workspace like the run above (not `-p skytale-relay`): the dependencies keep the
  // workspace's feature set, so nothing is compiled a second time.
  if (!extra.length) {
    process.env.SKYTALE_TEST_RELAY_STORE = 'nats'
    run('cargo', ['test', '--release', '--workspace', '--exclude', 'skytale-node', '--target', target,
      '--test', 'relay', '--test', 'engine', '--test', 'invites', '--test', 'authority', '--test', 'membership',
      '--test', 'quotas'])
    delete process.env.SKYTALE_TEST_RELAY_STORE
  }
} else if (command === 'clippy') {
  run('cargo', ['clippy', '--release', '--workspace', '--all-targets', '--target', target, ...extra, '--', '-D', 'warnings'])
} else if (command === 'fmt') {
  run('cargo', ['fmt', '--all', '--check', ...extra])
} else {
  process.stderr.write('usage: node tools/rust.mjs build [--target T] [--dist] | test | clippy | fmt\n')
  process.exit(2)
}
