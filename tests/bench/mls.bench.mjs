// MLS benchmarks in one run: Skytale's napi API, raw openmls (Rust, in-memory, no persistence),
// skytale-core called from Rust (persisted, no napi) and ts-mls (pure TypeScript MLS), all
// with MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519.
//
//   npm run bench                          # everything (a few minutes)
//   npm run bench -- --quick               # fewer iterations
//   npm run bench -- --max-members 100     # skip the 1000-member cases
//   npm run bench -- --skip rust,ts-mls    # leave out implementations (rust, napi, ts-mls)
//
// Cases (the same as crates/skytale-core/benches/mls.rs):
//   msg/<size>   one application message: A encrypts, B decrypts (group of 2)
//   batch64/64B  the same per message, 64 at a time: encryptBatch + processIncomingBatch (one
//                napi call and one keystore transaction each per 64; raw openmls loops)
//   add1/<n>     add one member to a group of n: commit + Welcome, commit merged; the member is
//                removed again outside the timed part, so every iteration starts from n members
//   create/<n>   create a group and add n-1 members in one commit (merged)
// Key package generation is never timed. Reported value: the median (p50) in ms; the machine
// is shared, and the median is the statistic least disturbed by other processes.
// Results: a markdown table on stdout and JSON in target/bench/mls.json.

import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createRequire } from 'node:module';
import { Bench } from 'tinybench';
// ts-mls 1.6.4's index re-exports its optional noble crypto provider, which imports
// @noble/hashes (not a declared dependency): import the modules needed directly instead.
import { generateKeyPackage } from 'ts-mls/keyPackage.js';
import { createGroup, joinGroup } from 'ts-mls/clientState.js';
import { createApplicationMessage } from 'ts-mls/createMessage.js';
import { createCommit } from 'ts-mls/createCommit.js';
import { processPrivateMessage } from 'ts-mls/processMessages.js';
import { emptyPskIndex } from 'ts-mls/pskIndex.js';
import { getCiphersuiteFromName } from 'ts-mls/crypto/ciphersuite.js';
import { getCiphersuiteImpl } from 'ts-mls/crypto/getCiphersuiteImpl.js';
import { decodeMlsMessage, encodeMlsMessage } from 'ts-mls/message.js';
import { defaultLifetime } from 'ts-mls/lifetime.js';
import { defaultCapabilities } from 'ts-mls/defaultCapabilities.js';

const mls = {
  generateKeyPackage, createGroup, joinGroup, createApplicationMessage, createCommit, processPrivateMessage, emptyPskIndex,
  getCiphersuiteFromName, getCiphersuiteImpl, decodeMlsMessage, encodeMlsMessage, defaultLifetime, defaultCapabilities,
};

const root = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const require = createRequire(import.meta.url);
const { Agent } = require(join(root, 'index.js'));

const args = process.argv.slice(2);
const opt = (name) => {
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1] : undefined;
};
const quick = args.includes('--quick');
const maxMembers = Number(opt('--max-members') ?? 1000);
const skip = new Set((opt('--skip') ?? '').split(',').filter(Boolean));
const scale = quick ? 0.25 : 1;

const SIZES = [64, 1024, 16 * 1024];
const ADD_GROUPS = [10, 100, 1000].filter((n) => n <= maxMembers);
const CREATE_GROUPS = [100, 1000].filter((n) => n <= maxMembers);
const MSG_BATCH = 64;
const sizeName = (s) => (s >= 1024 ? `${s / 1024}KiB` : `${s}B`);
// Iterations of the slow cases (fixed counts keep the run bounded).
const addIters = (n, slowImpl) => Math.max(2, Math.round((n >= 1000 ? (slowImpl ? 5 : 10) : n >= 100 ? 30 : 100) * scale));
const createIters = (n, slowImpl) => Math.max(2, Math.round((n >= 1000 ? (slowImpl ? 2 : 3) : 10) * scale));
const MSG_TIME_MS = 2000 * scale;

const results = []; // { impl, case, median_ms, mean_ms, iters }
const log = (...a) => console.error(...a);

function record(impl, kase, task) {
  const r = task.result;
  if (r.state !== 'completed') throw new Error(`${impl} ${kase}: ${r.state} ${r.error?.stack ?? ''}`);
  const row = { impl, case: kase, median_ms: r.latency.p50, mean_ms: r.latency.mean, min_ms: r.latency.min, iters: r.latency.samplesCount ?? r.runs ?? null };
  results.push(row);
  log(`${impl.padEnd(8)} ${kase.padEnd(14)} median ${row.median_ms.toFixed(4).padStart(11)} ms  mean ${row.mean_ms.toFixed(4).padStart(11)} ms`);
}

/** Runs one task: time-bounded (`time` ms, `iters` minimum) or exactly `iters` iterations. */
async function measure(impl, kase, fn, { time = 1, iters, warmup = 1 } = {}) {
  const bench = new Bench({ time, iterations: iters, warmup: warmup > 0, warmupIterations: warmup, warmupTime: 1, throws: true });
  bench.add(kase, fn);
  await bench.run();
  record(impl, kase, bench.tasks[0]);
}

/** Times `timed`, then runs `after` outside the measurement. */
const partly = (timed, after) => async () => {
  const t0 = performance.now();
  const v = await timed();
  const overriddenDuration = performance.now() - t0;
  if (after) await after(v);
  return { overriddenDuration };
};

// ---------------------------------------------------------------------------------------------
// Rust: raw openmls and skytale-core (persisted), from the custom-harness bench target.

function runRust() {
  const out = join(root, 'target/bench/mls-rust.json');
  mkdirSync(dirname(out), { recursive: true });
  const rustArgs = ['bench', '-p', 'skytale-core', '--bench', 'mls', '--', '--json', out, '--max-members', String(maxMembers)];
  if (quick) rustArgs.push('--quick');
  log(`$ cargo ${rustArgs.join(' ')}`);
  const r = spawnSync('cargo', rustArgs, { cwd: root, stdio: ['ignore', 'inherit', 'inherit'] });
  if (r.status !== 0) {
    log(`cargo bench failed (status ${r.status}); Rust columns stay empty`);
    return;
  }
  for (const row of JSON.parse(readFileSync(out, 'utf8')).results) {
    results.push({ impl: row.impl === 'core' ? 'core-rs' : row.impl, case: row.case, median_ms: row.median_ms, mean_ms: row.mean_ms, min_ms: row.min_ms, iters: row.iters });
  }
}

// ---------------------------------------------------------------------------------------------
// Skytale napi

async function runNapi() {
  const dir = mkdtempSync(join(tmpdir(), 'skytale-bench-'));
  const key = new Uint8Array(32).fill(7);
  const open = (identity) => Agent.open({ dataDir: join(dir, identity), identity, keystoreKey: key });
  try {
    // Per message: a group of two agents.
    const alice = await open('alice');
    const bob = await open('bob');
    const chA = await alice.createChannel('bench/napi/msg');
    const { welcome } = await chA.addMembers(await bob.generateKeyPackages(1));
    const chB = await bob.joinChannel(welcome);
    for (const size of SIZES) {
      const data = new Uint8Array(size).fill(0x5a);
      await measure('napi', `msg/${sizeName(size)}`, async () => {
        const wire = await chA.encrypt(data);
        const ev = await chB.processIncoming(wire);
        if (ev.kind !== 'message' || ev.data.length !== size) throw new Error(`unexpected ${ev.kind}`);
      }, { time: MSG_TIME_MS, iters: 20 });
    }

    {
      const data = new Uint8Array(64).fill(0x5a);
      const batch = Array.from({ length: MSG_BATCH }, () => data);
      await measure('napi', `batch${MSG_BATCH}/64B`, async () => {
        const t0 = performance.now();
        const wires = await chA.encryptBatch(batch);
        const evs = await chB.processIncomingBatch(wires);
        const overriddenDuration = (performance.now() - t0) / MSG_BATCH;
        if (evs.length !== MSG_BATCH || evs.some((ev) => ev.kind !== 'message' || ev.data.length !== 64)) throw new Error('unexpected batch');
        return { overriddenDuration };
      }, { time: MSG_TIME_MS, iters: 5 });
    }

    // Members: one agent (own keystore) per identity. Each generates all the key packages it
    // will need up front (not timed), then is closed.
    const pool = Math.max(...ADD_GROUPS, ...CREATE_GROUPS) - 1;
    const need = new Array(pool).fill(0);
    for (const n of ADD_GROUPS) for (let i = 0; i < n - 1; i++) need[i] += 1;
    for (const n of CREATE_GROUPS) for (let i = 0; i < n - 1; i++) need[i] += createIters(n, false) + 2;
    const t0 = performance.now();
    const kps = [];
    const BATCH = 16;
    for (let i = 0; i < pool; i += BATCH) {
      const ids = Array.from({ length: Math.min(BATCH, pool - i) }, (_, j) => i + j);
      const got = await Promise.all(ids.map(async (j) => {
        const a = await open(`m-${j}`);
        const list = await a.generateKeyPackages(need[j]);
        a.close();
        return list;
      }));
      kps.push(...got);
    }
    log(`napi: ${pool} member agents opened, key packages generated in ${((performance.now() - t0) / 1000).toFixed(1)} s (not timed)`);
    const takeSet = (n) => kps.slice(0, n - 1).map((list) => {
      const kp = list.pop();
      if (!kp) throw new Error('out of key packages');
      return kp;
    });
    const extra = await open('x');

    for (const n of ADD_GROUPS) {
      const iters = addIters(n, false);
      const ch = await alice.createChannel(`bench/napi/add1-${n}`);
      if (n > 1) await ch.addMembers(takeSet(n));
      const extraKps = await extra.generateKeyPackages(iters + 4);
      await measure('napi', `add1/${n}`, partly(
        () => ch.addMembers([extraKps.pop()]),
        async (out) => {
          await ch.removeMembers(out.added);
        },
      ), { iters });
    }

    for (const n of CREATE_GROUPS) {
      let i = 0;
      await measure('napi', `create/${n}`, async () => {
        const set = takeSet(n);
        const t0 = performance.now();
        const ch = await alice.createChannel(`bench/napi/create-${n}-${i++}`);
        await ch.addMembers(set);
        return { overriddenDuration: performance.now() - t0 };
      }, { iters: createIters(n, false) });
    }
    extra.close();
    alice.close();
    bob.close();
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

// ---------------------------------------------------------------------------------------------
// ts-mls

async function runTsMls() {
  const impl = await mls.getCiphersuiteImpl(mls.getCiphersuiteFromName('MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519'));
  const enc = new TextEncoder();
  const keyPackage = (identity) =>
    mls.generateKeyPackage({ credentialType: 'basic', identity: enc.encode(identity) }, mls.defaultCapabilities(), mls.defaultLifetime, [], impl);
  const addProposal = (kp) => ({ proposalType: 'add', add: { keyPackage: kp.publicPackage } });
  const encode = (m) => mls.encodeMlsMessage(m);
  // A commit as the napi API does it: commit + Welcome serialized, ratchet tree in the Welcome.
  async function commit(state, proposals) {
    const r = await mls.createCommit({ state, cipherSuite: impl }, { extraProposals: proposals, ratchetTreeExtension: true });
    encode(r.commit);
    if (r.welcome) encode({ welcome: r.welcome, wireformat: 'mls_welcome', version: 'mls10' });
    return r;
  }
  const newGroup = async (name, creator) => mls.createGroup(enc.encode(name), creator.publicPackage, creator.privatePackage, [], impl);

  // Per message.
  const alice = await keyPackage('alice');
  const bob = await keyPackage('bob');
  let sa = await newGroup('bench/ts/msg', alice);
  const added = await commit(sa, [addProposal(bob)]);
  sa = added.newState;
  const w = mls.decodeMlsMessage(encode({ welcome: added.welcome, wireformat: 'mls_welcome', version: 'mls10' }), 0)[0];
  let sb = await mls.joinGroup(w.welcome, bob.publicPackage, bob.privatePackage, mls.emptyPskIndex, impl, sa.ratchetTree);
  for (const size of SIZES) {
    const data = new Uint8Array(size).fill(0x5a);
    await measure('ts-mls', `msg/${sizeName(size)}`, async () => {
      const m = await mls.createApplicationMessage(sa, data, impl);
      sa = m.newState;
      const wire = encode({ privateMessage: m.privateMessage, wireformat: 'mls_private_message', version: 'mls10' });
      const decoded = mls.decodeMlsMessage(wire, 0)[0];
      const r = await mls.processPrivateMessage(sb, decoded.privateMessage, mls.emptyPskIndex, impl);
      sb = r.newState;
      if (r.kind !== 'applicationMessage' || r.message.length !== size) throw new Error(`unexpected ${r.kind}`);
    }, { time: MSG_TIME_MS, iters: 10 });
  }

  const pool = Math.max(...ADD_GROUPS, ...CREATE_GROUPS) - 1;
  const t0 = performance.now();
  const members = [];
  for (let i = 0; i < pool; i++) members.push(await keyPackage(`m-${i}`));
  log(`ts-mls: ${pool} key packages generated in ${((performance.now() - t0) / 1000).toFixed(1)} s (not timed)`);

  for (const n of ADD_GROUPS) {
    const iters = addIters(n, true);
    let s = await newGroup(`bench/ts/add1-${n}`, alice);
    if (n > 1) s = (await commit(s, members.slice(0, n - 1).map(addProposal))).newState;
    const x = await keyPackage('x');
    await measure('ts-mls', `add1/${n}`, partly(
      async () => {
        const r = await commit(s, [addProposal(x)]);
        s = r.newState;
      },
      async () => {
        const leaf = s.ratchetTree.findIndex((node) => node?.nodeType === 'leaf' && enc.encode('x').every((b, i) => node.leaf.credential.identity[i] === b) && node.leaf.credential.identity.length === 1);
        s = (await commit(s, [{ proposalType: 'remove', remove: { removed: leaf / 2 } }])).newState;
      },
    ), { iters });
  }

  for (const n of CREATE_GROUPS) {
    let i = 0;
    const proposals = members.slice(0, n - 1).map(addProposal);
    await measure('ts-mls', `create/${n}`, async () => {
      const s = await newGroup(`bench/ts/create-${n}-${i++}`, alice);
      await commit(s, proposals);
    }, { iters: createIters(n, true) });
  }
}

// ---------------------------------------------------------------------------------------------

function table() {
  const cases = [...SIZES.map((s) => `msg/${sizeName(s)}`), `batch${MSG_BATCH}/64B`, ...ADD_GROUPS.map((n) => `add1/${n}`), ...CREATE_GROUPS.map((n) => `create/${n}`)];
  const get = (impl, c) => results.find((r) => r.impl === impl && r.case === c)?.median_ms;
  const ms = (v) => (v === undefined ? '–' : v >= 100 ? v.toFixed(0) : v >= 10 ? v.toFixed(1) : v >= 1 ? v.toFixed(2) : v.toFixed(3));
  const ratio = (a, b) => (a === undefined || b === undefined ? '–' : `${(a / b).toFixed(2)}×`);
  const lines = [
    '| case | napi (ms) | core, Rust (ms) | raw openmls (ms) | ts-mls (ms) | napi / openmls | core / openmls | ts-mls / napi | openmls, add w/o path (ms) |',
    '|---|---:|---:|---:|---:|---:|---:|---:|---:|',
  ];
  for (const c of cases) {
    const [n, r, o, t, np] = ['napi', 'core-rs', 'openmls', 'ts-mls', 'openmls-nopath'].map((i) => get(i, c));
    lines.push(`| ${c} | ${ms(n)} | ${ms(r)} | ${ms(o)} | ${ms(t)} | ${ratio(n, o)} | ${ratio(r, o)} | ${ratio(t, n)} | ${ms(np)} |`);
  }
  return lines.join('\n');
}

const started = new Date();
if (!skip.has('rust')) runRust();
if (!skip.has('napi')) await runNapi();
if (!skip.has('ts-mls')) await runTsMls();

const md = table();
console.log(`\nMedian per operation, ${started.toISOString()}, ${cpus().length} × ${cpus()[0]?.model ?? '?'}, Node ${process.version}${quick ? ', --quick' : ''}\n`);
console.log(md);
const out = join(root, 'target/bench/mls.json');
mkdirSync(dirname(out), { recursive: true });
writeFileSync(out, JSON.stringify({ started: started.toISOString(), node: process.version, cpu: cpus()[0]?.model, cpus: cpus().length, quick, results, table: md }, null, 2));
log(`wrote ${out}`);
