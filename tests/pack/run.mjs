#!/usr/bin/env node
// Pack test (`npm run test:pack`): the packages as users install them. Packs @skytale/sdk (with
// the optionalDependencies a release adds), @skytale/api-server, and this platform's addon and
// relay packages; installs the tarballs into a fresh project in the temp dir (outside the
// repository); then, there: an ESM import and a CommonJS require of every public name, real
// rejections as SkytaleError subclasses, `skytale relay --which` / `skytale api --which`
// resolving to the installed packages, `npx skytale dev`, a two-agent round trip through the
// installed SDK, and `skytale doctor`.
//
// Needs `npm run build` first (the .node, npm/relay-<platform>/skytale-relay, api-server/dist).
// SKYTALE_PACK_KEEP=1 keeps the temp dir.
import { spawn, spawnSync } from 'node:child_process'
import { cpSync, existsSync, mkdirSync, mkdtempSync, readdirSync, realpathSync, rmSync, writeFileSync } from 'node:fs'
import { createRequire } from 'node:module'
import { tmpdir } from 'node:os'
import { dirname, join, resolve, sep } from 'node:path'
import readline from 'node:readline'
import { fileURLToPath } from 'node:url'

const require = createRequire(import.meta.url)
const REPO = resolve(dirname(fileURLToPath(import.meta.url)), '../..')
const { currentPlatform } = require('../../lib/binaries.js')
const rootPkg = require('../../package.json')
const NPM = process.platform === 'win32' ? 'npm.cmd' : 'npm'
const started = Date.now()
const log = (/** @type {string} */ s) => process.stderr.write(`[pack ${((Date.now() - started) / 1000).toFixed(1)}s] ${s}\n`)

/** An environment without the repository's hints (no target dir, no binary overrides). */
function cleanEnv(extra = {}) {
  /** @type {Record<string, string>} */
  const env = {}
  for (const [k, v] of Object.entries(process.env)) {
    if (v === undefined || k.startsWith('SKYTALE_') || k.startsWith('npm_') || k === 'CARGO_TARGET_DIR' || k === 'NODE_PATH' || k === 'NAPI_RS_NATIVE_LIBRARY_PATH' || k === 'INIT_CWD') continue
    env[k] = v
  }
  return { ...env, ...extra }
}

/**
 * @param {string} cmd @param {string[]} args
 * @param {{ cwd: string, env?: Record<string, string>, allowFail?: boolean }} opts
 */
function run(cmd, args, { cwd, env = cleanEnv(), allowFail = false }) {
  const r = spawnSync(cmd, args, { cwd, env, encoding: 'utf8', maxBuffer: 64 << 20 })
  if (r.status !== 0 && !allowFail) {
    throw new Error(`${cmd} ${args.join(' ')} (in ${cwd}) exited ${r.status ?? r.signal}\n${r.stdout}\n${r.stderr}`)
  }
  return r
}

function assert(cond, /** @type {string} */ what) {
  if (!cond) throw new Error(`pack test: ${what}`)
}

const plat = currentPlatform()
const nodeFile = join(REPO, `skytale.${plat}.node`)
const relayExe = process.platform === 'win32' ? 'skytale-relay.exe' : 'skytale-relay'
const relayDir = join(REPO, 'npm', `relay-${plat}`)
for (const [file, what] of [
  [nodeFile, 'the native addon'],
  [join(relayDir, relayExe), 'the relay binary'],
  [join(REPO, 'api-server', 'dist', 'main.js'), 'the API server build'],
]) {
  if (!existsSync(file)) {
    console.error(`pack test: ${what} is missing (${file}): run npm run build first`)
    process.exit(1)
  }
}

const work = mkdtempSync(join(tmpdir(), 'skytale-pack-'))
const tarballs = join(work, 'tarballs')
const project = join(work, 'project')
mkdirSync(tarballs)
mkdirSync(project)
let dev = null
try {
  // --- pack ---------------------------------------------------------------------------------
  // @skytale/sdk: its published files (as `npm pack` lists them), staged with the
  // optionalDependencies a release adds (tools/npm-packages.mjs optional-deps).
  const listed = JSON.parse(run(NPM, ['pack', '--dry-run', '--json', '--ignore-scripts'], { cwd: REPO }).stdout)[0].files.map((/** @type {any} */ f) => f.path)
  assert(!listed.some((/** @type {string} */ f) => f.endsWith('.node')), `the SDK tarball must not contain a .node (${listed.join(', ')})`)
  const sdkStage = join(work, 'stage-sdk')
  for (const f of listed) cpSync(join(REPO, f), join(sdkStage, f))
  run(process.execPath, [join(REPO, 'tools', 'npm-packages.mjs'), 'optional-deps', join(sdkStage, 'package.json')], { cwd: REPO })
  // The addon package of this platform, with the built .node (as `napi artifacts` does).
  const addonStage = join(work, `stage-${plat}`)
  cpSync(join(REPO, 'npm', plat), addonStage, { recursive: true })
  cpSync(nodeFile, join(addonStage, `skytale.${plat}.node`))
  const packDirs = [sdkStage, addonStage, relayDir, join(REPO, 'api-server')]
  for (const dir of packDirs) run(NPM, ['pack', '--ignore-scripts', '--pack-destination', tarballs], { cwd: dir })
  const tgz = readdirSync(tarballs).filter((f) => f.endsWith('.tgz')).map((f) => join(tarballs, f))
  assert(tgz.length === 4, `expected 4 tarballs, got ${tgz.join(', ')}`)
  log(`packed ${tgz.map((f) => f.slice(tarballs.length + 1)).join(', ')}`)

  // --- install into a fresh project outside the repository -----------------------------------
  writeFileSync(join(project, 'package.json'), JSON.stringify({ name: 'skytale-pack-test', version: '1.0.0', private: true }, null, 2))
  run(NPM, ['install', '--no-audit', '--no-fund', '--loglevel=error', ...tgz], { cwd: project })
  const installed = join(project, 'node_modules', '@skytale', 'sdk')
  assert(realpathSync(installed).startsWith(realpathSync(project) + sep), 'the SDK is a real copy in the project, not a link into the repository')
  const optional = require(join(installed, 'package.json')).optionalDependencies ?? {}
  assert(optional[`@skytale/relay-${plat}`] === rootPkg.version && optional[`@skytale/sdk-${plat}`] === rootPkg.version, 'the SDK lists its platform packages as optionalDependencies')
  log('installed the tarballs into a fresh project')

  // --- ESM and CommonJS entries, real rejections -----------------------------------------------
  const names = ['Agent', 'Channel', 'Client', 'ClientChannel', 'SkytaleChannelManager', 'SkytaleError', 'AuthError', 'KeystoreError', 'TransportError', 'ChannelError', 'MlsError', 'ValidationError', 'StateError', 'toSkytaleError', 'errorClassFor', 'ERROR_CODES']
  const body = (/** @type {string} */ sdk) => `{
const names = ${JSON.stringify(names)}
for (const n of names) if (${sdk}[n] === undefined) throw new Error('missing export ' + n)
const { Agent, ValidationError, KeystoreError, StateError, SkytaleError } = ${sdk}
const { mkdtempSync } = require('node:fs')
const { join } = require('node:path')
const { tmpdir } = require('node:os')
const expectClass = async (p, Cls, code) => {
  try { await p } catch (e) {
    if (!(e instanceof Cls) || !(e instanceof SkytaleError) || e.code !== code) throw new Error('expected ' + Cls.name + ' ' + code + ', got ' + e?.name + ' ' + e?.code + ': ' + e?.message)
    return
  }
  throw new Error('expected a rejection with ' + code)
}
const dir = mkdtempSync(join(tmpdir(), 'skytale-pack-agent-'))
await expectClass(Agent.open({ dataDir: dir, identity: 'bad identity!', keystoreKey: new Uint8Array(32) }), ValidationError, 'SKYTALE_INVALID_IDENTITY')
const agent = await Agent.open({ dataDir: dir, identity: 'alice', keystoreKey: new Uint8Array(32).fill(1) })
if (!(agent instanceof Agent)) throw new Error('agent instanceof Agent')
await expectClass(agent.createChannel('not a channel'), ValidationError, 'SKYTALE_INVALID_CHANNEL_NAME')
agent.close()
await expectClass(Agent.open({ dataDir: dir, identity: 'alice', keystoreKey: new Uint8Array(32).fill(2) }), KeystoreError, 'SKYTALE_KEYSTORE_WRONG_KEY')
await expectClass(agent.channels(), StateError, 'SKYTALE_INVALID_STATE')
const addon = process.report.getReport().sharedObjects.filter((f) => f.endsWith('.node'))
if (addon.length !== 1 || !addon[0].startsWith(require('node:fs').realpathSync(process.cwd()))) throw new Error('the addon must load from the project: ' + addon.join(', '))
console.log('ok ' + names.length + ' names')
}`
  writeFileSync(join(project, 'esm.mjs'), `import * as sdk from '@skytale/sdk'\nimport { ${names.join(', ')} } from '@skytale/sdk'\nimport { createRequire } from 'node:module'\nconst require = createRequire(import.meta.url)\nif (Agent !== sdk.Agent || require('@skytale/sdk').Agent !== Agent) throw new Error('ESM and CJS must share one Agent')\n${body('sdk')}`)
  writeFileSync(join(project, 'cjs.cjs'), `const sdk = require('@skytale/sdk')\n;(async () => {\n${body('sdk')}\n})().catch((e) => { console.error(e); process.exit(1) })\n`)
  for (const f of ['esm.mjs', 'cjs.cjs']) {
    const r = run(process.execPath, [f], { cwd: project })
    assert(/^ok /m.test(r.stdout), `${f}: ${r.stdout}${r.stderr}`)
  }
  log('ESM import and CommonJS require of every public name; rejections are SkytaleError subclasses')

  // --- the servers resolve to the installed packages -----------------------------------------
  const npx = (/** @type {string[]} */ args, env = cleanEnv(), allowFail = false) => run(NPM, ['exec', '--no', '--', 'skytale', ...args], { cwd: project, env, allowFail })
  for (const [cmd, pkg] of [['relay', `@skytale/relay-${plat}`], ['api', '@skytale/api-server']]) {
    const [path, source] = npx([cmd, '--which']).stdout.trim().split('\t')
    assert(source === pkg && realpathSync(path).startsWith(realpathSync(project) + sep), `skytale ${cmd} --which → ${path} (${source}), expected the installed ${pkg}`)
  }
  log('skytale relay/api resolve to the installed packages')

  // --- npx skytale dev, a round trip through the installed SDK, skytale doctor ----------------
  dev = spawn(NPM, ['exec', '--no', '--', 'skytale', 'dev', '--root', join(work, 'dev'), '--api-port', '0', '--relay-port', '0', '--relay-http-port', '0'], {
    cwd: project, env: cleanEnv(), stdio: ['ignore', 'pipe', 'pipe'], detached: process.platform !== 'win32',
  })
  /** @type {Record<string, string>} */
  const devEnv = {}
  let devErr = ''
  dev.stderr.on('data', (d) => { devErr += d })
  await new Promise((resolveReady, reject) => {
    const timer = setTimeout(() => reject(new Error(`skytale dev did not start within 90 s:\n${devErr}`)), 90_000)
    dev.once('exit', (code) => { clearTimeout(timer); reject(new Error(`skytale dev exited (${code}):\n${devErr}`)) })
    readline.createInterface({ input: dev.stdout }).on('line', (line) => {
      const m = /^export (SKYTALE_[A-Z_]+)=(.*)$/.exec(line)
      if (m) devEnv[m[1]] = m[2]
      if (devEnv.SKYTALE_KEYSTORE_KEY && devEnv.SKYTALE_RELAY_HTTP) { clearTimeout(timer); resolveReady(undefined) }
    })
  })
  log(`skytale dev is up (${devEnv.SKYTALE_API_URL}, ${devEnv.SKYTALE_RELAY})`)
  writeFileSync(join(project, 'roundtrip.mjs'), `
import { SkytaleChannelManager, ChannelError } from '@skytale/sdk'
const channel = 'dev/pack/general'
const mk = (identity) => new SkytaleChannelManager({ identity, dataDir: './agents/' + identity })
const alice = mk('alice'), bob = mk('bob')
try {
  await alice.create(channel)
  const token = await alice.invite(channel)
  await bob.joinWithToken(channel, token, { timeoutMs: 60000 })
  await alice.send(channel, 'hello bob')
  await bob.send(channel, 'hello alice')
  const got = async (m, want) => { for (let i = 0; i < 100; i++) { const t = await m.receive(channel); if (t.includes(want)) return; await new Promise((r) => setTimeout(r, 100)) } throw new Error('no ' + want) }
  await got(bob, 'hello bob')
  await got(alice, 'hello alice')
  try { await alice.send('dev/pack/none', 'x'); throw new Error('expected a ChannelError') } catch (e) { if (!(e instanceof ChannelError)) throw e }
  console.log('ok round trip')
} finally {
  await alice.close()
  await bob.close()
}
`)
  const rt = run(process.execPath, ['roundtrip.mjs'], { cwd: project, env: cleanEnv(devEnv) })
  assert(/ok round trip/.test(rt.stdout), rt.stdout + rt.stderr)
  log('two agents talked through the installed SDK')
  const doctor = npx(['doctor', '--identity', 'alice', '--data-dir', './agents/alice'], cleanEnv(devEnv), true)
  assert(doctor.status === 0 && /everything looks fine/.test(doctor.stdout), `skytale doctor:\n${doctor.stdout}${doctor.stderr}`)
  log('skytale doctor: everything looks fine')
  console.log(`pack test ok (${((Date.now() - started) / 1000).toFixed(1)} s)`)
} finally {
  if (dev && dev.exitCode === null) {
    const exited = new Promise((r) => dev.once('exit', r))
    try { process.kill(process.platform === 'win32' ? dev.pid : -dev.pid, 'SIGTERM') } catch {}
    await Promise.race([exited, new Promise((r) => setTimeout(r, 10_000).unref())])
  }
  if (process.env.SKYTALE_PACK_KEEP) log(`kept ${work}`)
  else rmSync(work, { recursive: true, force: true })
}
