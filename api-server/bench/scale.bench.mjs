// bench/scale.bench.mjs — owns the scale-out benchmark: POST /v1/tokens throughput with 1 and 2
// API server processes on one Postgres, limits counted in memory / Postgres / Redis (limits raised
// so nothing is refused; key cache on), the extra latency of the shared limiter per request
// (1 connection, 1 instance), and the cost of one limiter operation measured in-process.
//
// The matrix runs BENCH_ROUNDS times, interleaved (so load drift on a shared machine hits every
// case alike); each cell reports the median round.
//
// Env: BENCH_DURATION (s, default 5), BENCH_CONNECTIONS (default 10), BENCH_ROUNDS (default 3),
//      BENCH_PG_URL (admin URL, default postgres://postgres@127.0.0.1:5432/postgres),
//      BENCH_REDIS_URL (default redis://127.0.0.1:6379; "off" skips Redis).

import { spawn } from "node:child_process";
import http from "node:http";
import { generateKeyPairSync, randomBytes } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { cpus, tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import autocannon from "autocannon";
import pg from "pg";
import { defaultConfig } from "../dist/config.js";
import { openPostgres } from "../dist/db/postgres.js";
import { openLimits } from "../dist/limits/index.js";
import { Metrics } from "../dist/metrics.js";
import { generateSigningKeyPem } from "../dist/signing/keyRing.js";

const MAIN = fileURLToPath(new URL("../dist/main.js", import.meta.url));
const DURATION = Number(process.env.BENCH_DURATION ?? 5);
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 3);
const CONNECTIONS = Number(process.env.BENCH_CONNECTIONS ?? 10);
const PG_URL = process.env.BENCH_PG_URL ?? "postgres://postgres@127.0.0.1:5432/postgres";
const REDIS_URL = process.env.BENCH_REDIS_URL ?? "redis://127.0.0.1:6379";
const RAISED = "100000000";

const pct = (xs, p) => xs[Math.min(xs.length - 1, Math.floor((p / 100) * xs.length))];
/** The round whose `field` is the median. */
const medianBy = (rows, field) => [...rows].sort((a, b) => a[field] - b[field])[Math.floor(rows.length / 2)];

function startServer(env) {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [MAIN], {
      env: {
        PATH: process.env.PATH,
        PORT: "0",
        LOG_LEVEL: "warn",
        SKYTALE_RATE_GLOBAL_PER_IP: RAISED,
        SKYTALE_RATE_TOKENS_PER_IP: RAISED,
        SKYTALE_RATE_TOKENS_PER_KEY: RAISED,
        SKYTALE_RATE_SIGNUP_PER_IP: RAISED,
        SKYTALE_RATE_AGENTS_PER_IP: RAISED,
        ...env,
      },
      stdio: ["ignore", "pipe", "inherit"],
    });
    let out = "";
    child.stdout.on("data", (d) => {
      out += d;
      const m = /skytale-api listening on (http:\/\/\S+)/.exec(out);
      if (m) resolve({ url: m[1], stop: () => new Promise((r) => (child.once("exit", r), child.kill("SIGTERM"))) });
    });
    child.once("exit", (code) => reject(new Error(`server exited ${code}: ${out}`)));
  });
}

async function account(url) {
  const r = await fetch(`${url}/v1/accounts`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ email: "bench@example.com", name: "bench", org: `bench-${randomBytes(4).toString("hex")}` }),
  });
  const { apiKey } = await r.json();
  const signatureKey = generateKeyPairSync("ed25519").publicKey.export({ format: "jwk" }).x;
  const reg = await fetch(`${url}/v1/agents`, {
    method: "POST",
    headers: { "content-type": "application/json", authorization: `Bearer ${apiKey}` },
    body: JSON.stringify({ identity: "bench", signatureKey }),
  });
  if (reg.status !== 201) throw new Error(`agent registration failed: ${reg.status}`);
  return apiKey;
}

/** autocannon against every url at once (`connections` split evenly); summed req/s. */
async function load(urls, key, connections, duration = DURATION) {
  const per = Math.max(1, Math.floor(connections / urls.length));
  const runs = await Promise.all(
    urls.map((url) =>
      autocannon({
        url: `${url}/v1/tokens`,
        method: "POST",
        headers: { authorization: `Bearer ${key}`, "content-type": "application/json" },
        body: JSON.stringify({ identity: "bench" }),
        connections: per,
        duration,
      }),
    ),
  );
  return {
    rps: runs.reduce((s, r) => s + r.requests.average, 0),
    mean: runs.reduce((s, r) => s + r.latency.mean, 0) / runs.length,
    p50: Math.max(...runs.map((r) => r.latency.p50)),
    p99: Math.max(...runs.map((r) => r.latency.p99)),
    non2xx: runs.reduce((s, r) => s + r.non2xx, 0),
    errors: runs.reduce((s, r) => s + r.errors, 0),
  };
}

/** `n` sequential token requests over one keep-alive connection; latency percentiles in ms. */
async function sequential(url, key, n = 3000) {
  const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
  const body = JSON.stringify({ identity: "bench" });
  const one = () =>
    new Promise((resolve, reject) => {
      const req = http.request(`${url}/v1/tokens`, { method: "POST", agent, headers: { authorization: `Bearer ${key}`, "content-type": "application/json", "content-length": Buffer.byteLength(body) } }, (res) => {
        res.resume();
        res.on("end", () => (res.statusCode === 200 ? resolve() : reject(new Error(`status ${res.statusCode}`))));
      });
      req.on("error", reject);
      req.end(body);
    });
  for (let i = 0; i < 300; i++) await one(); // warm-up
  const xs = [];
  for (let i = 0; i < n; i++) {
    const t = process.hrtime.bigint();
    await one();
    xs.push(Number(process.hrtime.bigint() - t) / 1e6);
  }
  agent.destroy();
  xs.sort((a, b) => a - b);
  return { mean: xs.reduce((a, b) => a + b) / xs.length, p50: pct(xs, 50), p99: pct(xs, 99) };
}

/** Sequential in-process cost of one counter increment and one slot acquire+release. */
async function opCost(backend, db) {
  const cfg = { ...defaultConfig(), limitsBackend: backend, redisUrl: backend === "redis" ? REDIS_URL : undefined, redisPrefix: `skytale-bench:${randomBytes(4).toString("hex")}:` };
  const limits = await openLimits(cfg, db, new Metrics(), () => undefined);
  try {
    const time = async (n, fn) => {
      for (let i = 0; i < 200; i++) await fn(i); // warm-up
      const xs = [];
      for (let i = 0; i < n; i++) {
        const t = process.hrtime.bigint();
        await fn(i);
        xs.push(Number(process.hrtime.bigint() - t) / 1e6);
      }
      xs.sort((a, b) => a - b);
      return { p50: pct(xs, 50), p99: pct(xs, 99) };
    };
    const incr = await time(3000, () => limits.counters.incr("rl:bench:127.0.0.1", 60_000));
    const slot = await time(1000, async () => (await limits.argon2.tryAcquire())?.release());
    return { backend, incr, slot };
  } finally {
    await limits.close();
  }
}

async function main() {
  console.error(`node ${process.version}, ${cpus().length} CPUs (${cpus()[0]?.model}), ${CONNECTIONS} connections, ${DURATION} s per run, ${ROUNDS} rounds`);
  const backends = ["memory", "postgres", ...(REDIS_URL === "off" ? [] : ["redis"])];
  const name = `skytale_bench_${randomBytes(4).toString("hex")}`;
  const admin = new pg.Client({ connectionString: PG_URL });
  await admin.connect();
  await admin.query(`CREATE DATABASE ${name}`);
  const url = new URL(PG_URL);
  url.pathname = `/${name}`;
  const dir = mkdtempSync(join(tmpdir(), "skytale-api-bench-"));
  const base = { DATABASE_URL: url.toString(), SKYTALE_API_DATA_DIR: dir, SKYTALE_SIGNING_KEY: generateSigningKeyPem(), SKYTALE_REDIS_URL: REDIS_URL === "off" ? "" : REDIS_URL };
  const throughput = [];
  const latency = [];
  const ops = [];
  try {
    for (let round = 1; round <= ROUNDS; round++) {
      for (const backend of backends) {
        for (const n of [1, 2]) {
          const servers = await Promise.all(Array.from({ length: n }, () => startServer({ ...base, SKYTALE_LIMITS_BACKEND: backend })));
          try {
            const key = await account(servers[0].url);
            const urls = servers.map((s) => s.url);
            await load(urls, key, CONNECTIONS, 2); // warm-up: key caches, JIT
            const r = await load(urls, key, CONNECTIONS);
            throughput.push({ backend, n, ...r });
            console.error(`round ${round}: ${n} × ${backend}: ${r.rps.toFixed(0)} req/s, p50 ${r.p50} ms, p99 ${r.p99} ms, non-2xx ${r.non2xx}, errors ${r.errors}`);
            if (n === 1) {
              const l = await sequential(urls[0], key);
              latency.push({ backend, ...l });
              console.error(`round ${round}: 1 × ${backend}, sequential: mean ${l.mean.toFixed(3)} ms, p50 ${l.p50.toFixed(3)} ms, p99 ${l.p99.toFixed(3)} ms`);
            }
          } finally {
            await Promise.all(servers.map((s) => s.stop()));
          }
        }
      }
    }
    const db = await openPostgres(url.toString(), 2);
    try {
      for (const b of backends) ops.push(await opCost(b, db));
    } finally {
      await db.close();
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
    await admin.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`).catch(() => undefined);
    await admin.end().catch(() => undefined);
  }

  console.log(`\nPOST /v1/tokens, key cache on, ${CONNECTIONS} connections in all, ${DURATION} s, median of ${ROUNDS} rounds (all rounds' req/s in brackets):`);
  console.log("| limits in | instances | req/s | p50 ms | p99 ms | non-2xx | rounds |");
  console.log("|---|---:|---:|---:|---:|---:|---|");
  for (const backend of backends) {
    for (const n of [1, 2]) {
      const rows = throughput.filter((r) => r.backend === backend && r.n === n);
      const r = medianBy(rows, "rps");
      console.log(`| ${backend} | ${n} | ${r.rps.toFixed(0)} | ${r.p50} | ${r.p99} | ${rows.reduce((x, y) => x + y.non2xx, 0)} | ${rows.map((x) => x.rps.toFixed(0)).join(", ")} |`);
    }
  }
  const med = backends.map((b) => medianBy(latency.filter((r) => r.backend === b), "p50"));
  latency.length = 0;
  latency.push(...med);
  const mem = latency.find((r) => r.backend === "memory");
  console.log("\nOne instance, sequential requests on one keep-alive connection (latency per request):");
  console.log("| limits in | mean ms | p50 ms | p99 ms | extra p50 vs memory ms |");
  console.log("|---|---:|---:|---:|---:|");
  for (const r of latency) console.log(`| ${r.backend} | ${r.mean.toFixed(3)} | ${r.p50.toFixed(3)} | ${r.p99.toFixed(3)} | ${mem ? (r.p50 - mem.p50).toFixed(3) : "–"} |`);
  console.log("\nOne limiter operation, in-process, sequential:");
  console.log("| backend | counter incr p50 ms | p99 ms | slot acquire+release p50 ms | p99 ms |");
  console.log("|---|---:|---:|---:|---:|");
  for (const o of ops) console.log(`| ${o.backend} | ${o.incr.p50.toFixed(3)} | ${o.incr.p99.toFixed(3)} | ${o.slot.p50.toFixed(3)} | ${o.slot.p99.toFixed(3)} |`);
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
