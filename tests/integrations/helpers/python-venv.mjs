// Test helper: a Python venv with a pinned requirements file, created once and cached under
// $HOME/.cache/<prefix>-<hash of the requirements file> (override the cache root with
// SKYTALE_VENV_CACHE). A half-built venv is never reused.
import { spawn } from 'node:child_process'
import { createHash } from 'node:crypto'
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { homedir } from 'node:os'
import { join } from 'node:path'

function run(cmd, args, opts = {}) {
  return new Promise((resolve) => {
    const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'], ...opts })
    let out = ''
    child.stdout.on('data', (d) => { out += d })
    child.stderr.on('data', (d) => { out += d })
    child.on('error', (e) => resolve({ code: -1, out: `${out}\n${e.message}` }))
    child.on('exit', (code, signal) => resolve({ code: code ?? signal, out }))
  })
}

/**
 * Returns `{ python, dir, cached, ms }` for a venv with `requirements` installed. Throws an Error
 * with pip's output tail when Python or the install fails (the caller's test then fails clearly).
 */
export async function ensureVenv({ requirements, prefix, python = process.env.SKYTALE_PYTHON ?? 'python3' }) {
  const started = Date.now()
  const reqText = readFileSync(requirements)
  const hash = createHash('sha256').update(reqText).digest('hex').slice(0, 16)
  const root = process.env.SKYTALE_VENV_CACHE ?? join(homedir(), '.cache')
  const dir = join(root, `${prefix}-${hash}`)
  const bin = process.platform === 'win32' ? join(dir, 'Scripts', 'python.exe') : join(dir, 'bin', 'python')
  if (existsSync(join(dir, '.skytale-ok')) && existsSync(bin)) return { python: bin, dir, cached: true, ms: Date.now() - started }

  // Built in place (venvs hard-code their path); the marker file is written only after pip
  // succeeded, so a half-built venv is removed and rebuilt next time.
  mkdirSync(root, { recursive: true })
  rmSync(dir, { recursive: true, force: true })
  const venv = await run(python, ['-m', 'venv', dir])
  if (venv.code !== 0) throw new Error(`could not create a Python venv with ${python} (needs Python 3.10–3.13 with venv):\n${venv.out.slice(-2000)}`)
  const pip = await run(bin, ['-m', 'pip', 'install', '--disable-pip-version-check', '-r', requirements])
  if (pip.code !== 0) {
    rmSync(dir, { recursive: true, force: true })
    throw new Error(`pip install -r ${requirements} failed (exit ${pip.code}); the CrewAI test cannot run here:\n${pip.out.slice(-4000)}`)
  }
  writeFileSync(join(dir, '.skytale-ok'), `${new Date().toISOString()}\n`)
  return { python: bin, dir, cached: false, ms: Date.now() - started }
}
