// bench/tokens.bench.mjs — owns the token benchmark: Argon2id cost per verification, and
// POST /v1/tokens throughput/latency (autocannon, loopback) with and without the verified-key cache,
// on PGlite and (when reachable) Postgres. Production Argon2id parameters; limits lifted.
//
// Env: BENCH_DURATION (s, default 10), BENCH_CONNECTIONS (default 10),
//      BENCH_PG_URL (admin URL, default postgres://postgres@127.0.0.1:5432/postgres; "off" skips).

import { spawn } from "node:child_process";
import { generateKeyPairSync, randomBytes } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { cpus, tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { Algorithm, hash, verify } from "@node-rs/argon2";
import autocannon from "autocannon";
import pg from "pg";

const MAIN = fileURLToPath(new URL("../dist/main.js", import.meta.url));
const DURATION = Number(process.env.BENCH_DURATION ?? 10);
const CONNECTIONS = Number(process.env.BENCH_CONNECTIONS ?? 10);
const PG_URL = process.env.BENCH_PG_URL ?? "postgres://postgres@127.0.0.1:5432/postgres";
const PROD = { algorithm: Algorithm.Argon2id, memoryCost: 19456, timeCost: 2, parallelism: 1 };

const pct = (xs, p) => xs[Math.min(xs.length - 1, Math.floor((p / 100) * xs.length))];

async function argon2Cost() {
  const key = "sk_live_" + randomBytes(32).toString("base64url");
  const phc = await hash(key, PROD);
  await verify(phc, key); // warm-up
  const times = [];
  for (let i = 0; i < 30; i++) {
    const t = process.hrtime.bigint();
    await verify(phc, key);
    times.push(Number(process.hrtime.bigint() - t) / 1e6);
  }
  times.sort((a, b) => a - b);
  const n = 40;
  const t0 = process.hrtime.bigint();
  await Promise.all(Array.from({ length: n }, () => verify(phc, key)));
  const parallelPerSec = n / (Number(process.hrtime.bigint() - t0) / 1e9);
  return { p50: pct(times, 50), p99: pct(times, 99), mean: times.reduce((a, b) => a + b) / times.length, parallelPerSec };
}

function startServer(env) {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [MAIN], {
      env: {
        PATH: process.env.PATH,
        PORT: "0",
        LOG_LEVEL: "warn",
        SKYTALE_RATE_GLOBAL_PER_IP: "100000000",
        SKYTALE_RATE_TOKENS_PER_IP: "100000000",
        SKYTALE_RATE_TOKENS_PER_KEY: "100000000",
        SKYTALE_RATE_SIGNUP_PER_IP: "1000",
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

async function runTokens(url, key) {
  const res = await autocannon({
    url: `${url}/v1/tokens`,
    method: "POST",
    headers: { authorization: `Bearer ${key}`, "content-type": "application/json" },
    body: JSON.stringify({ identity: "bench" }),
    connections: CONNECTIONS,
    duration: DURATION,
  });
  return { rps: res.requests.average, p50: res.latency.p50, p99: res.latency.p99, non2xx: res.non2xx, errors: res.errors };
}

async function scenario(label, dbEnv) {
  const rows = [];
  for (const [cache, ttl] of [["off", "0"], ["on (60 s)", "60000"]]) {
    const server = await startServer({ ...dbEnv, SKYTALE_KEY_CACHE_TTL_MS: ttl });
    try {
      const r = await fetch(`${server.url}/v1/accounts`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ email: "bench@example.com", name: "bench", org: `bench-${randomBytes(4).toString("hex")}` }),
      });
      const { apiKey } = await r.json();
      // Tokens are issued for registered agent identities only.
      const signatureKey = generateKeyPairSync("ed25519").publicKey.export({ format: "jwk" }).x;
      const reg = await fetch(`${server.url}/v1/agents`, {
        method: "POST",
        headers: { "content-type": "application/json", authorization: `Bearer ${apiKey}` },
        body: JSON.stringify({ identity: "bench", signatureKey }),
      });
      if (reg.status !== 201) throw new Error(`agent registration failed: ${reg.status}`);
      const res = await runTokens(server.url, apiKey);
      rows.push({ db: label, cache, ...res });
      console.error(`${label} cache ${cache}: ${res.rps.toFixed(0)} req/s p50 ${res.p50} ms p99 ${res.p99} ms non2xx ${res.non2xx}`);
    } finally {
      await server.stop();
    }
  }
  return rows;
}

async function main() {
  console.error(`node ${process.version}, ${cpus().length} CPUs (${cpus()[0]?.model}), ${CONNECTIONS} connections, ${DURATION} s per run`);
  const a = await argon2Cost();
  console.error(`argon2id verify m=19456 t=2 p=1: p50 ${a.p50.toFixed(1)} ms, p99 ${a.p99.toFixed(1)} ms, mean ${a.mean.toFixed(1)} ms; ${a.parallelPerSec.toFixed(0)} verifications/s in parallel`);

  const rows = [];
  const dir = mkdtempSync(join(tmpdir(), "skytale-api-bench-"));
  try {
    rows.push(...(await scenario("PGlite", { SKYTALE_API_DATA_DIR: join(dir, "pglite") })));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }

  if (PG_URL !== "off") {
    const name = `skytale_bench_${randomBytes(4).toString("hex")}`;
    const admin = new pg.Client({ connectionString: PG_URL });
    let created = false;
    try {
      await admin.connect();
      await admin.query(`CREATE DATABASE ${name}`);
      created = true;
      const url = new URL(PG_URL);
      url.pathname = `/${name}`;
      const pdir = mkdtempSync(join(tmpdir(), "skytale-api-bench-"));
      try {
        rows.push(...(await scenario("Postgres", { DATABASE_URL: url.toString(), SKYTALE_API_DATA_DIR: pdir })));
      } finally {
        rmSync(pdir, { recursive: true, force: true });
      }
    } catch (err) {
      console.error(`Postgres skipped: ${err.message}`);
    } finally {
      if (created) await admin.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`).catch(() => undefined);
      await admin.end().catch(() => undefined);
    }
  }

  console.log("\n| database | key cache | req/s | p50 ms | p99 ms | non-2xx |");
  console.log("|---|---|---:|---:|---:|---:|");
  for (const r of rows) console.log(`| ${r.db} | ${r.cache} | ${r.rps.toFixed(0)} | ${r.p50} | ${r.p99} | ${r.non2xx} |`);
  console.log(`\nArgon2id verification (m=19456 KiB, t=2, p=1): p50 ${a.p50.toFixed(1)} ms, p99 ${a.p99.toFixed(1)} ms; ~${a.parallelPerSec.toFixed(0)}/s with all cores busy.`);
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
