// test/limits.test.ts — the shared limiter backends on the real Postgres and Redis, each opened
// twice (two "instances"): counters are atomic across instances and their windows end; the
// Argon2id semaphore never hands out more than `max` slots across instances, a lease is released
// only by its holder, and the slots of an instance that is killed (SIGKILL, a real child process)
// come back when their leases expire — seen through a real server's token requests. Also: the
// fallback to this instance's memory when a shared backend errors, and an unreachable Redis at start.

import { spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { pathToFileURL } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { defaultConfig, type Config } from "../src/config.js";
import { openPostgres } from "../src/db/postgres.js";
import { migrate } from "../src/db/migrate.js";
import type { Db } from "../src/db/index.js";
import { FallbackCounterStore, FallbackSemaphore, openLimits, type Limits } from "../src/limits/index.js";
import { LocalSemaphore, MemoryCounterStore } from "../src/limits/memory.js";
import { Metrics } from "../src/metrics.js";
import { startServer } from "../src/server.js";
import { generateSigningKeyPem } from "../src/signing/keyRing.js";
import { postgresBackend, type TestDb } from "./helpers/backends.js";
import { call, registerAgent, signup } from "./helpers/http.js";
import { MAIN_JS } from "./helpers/server.js";
import { postgresReachable, REDIS_URL, redisReachable, shouldRun, waitFor } from "./helpers/services.js";

const FAST = { memoryCost: 1024, timeCost: 1, parallelism: 1 };
const PG = shouldRun("Postgres (127.0.0.1:5432)", await postgresReachable());
const REDIS = PG && shouldRun("Redis (127.0.0.1:6379)", await redisReachable());
const noWarn = () => undefined;

/** Config of one instance on `testDb` with limits on `backend`. */
function configFor(testDb: TestDb, backend: "postgres" | "redis", prefix: string, over: Partial<Config["rateLimits"]> = {}): Config {
  const d = defaultConfig();
  return {
    ...d,
    port: 0,
    logLevel: "silent",
    databaseUrl: testDb.env.DATABASE_URL,
    dataDir: testDb.dataDir,
    argon2: FAST,
    limitsBackend: backend,
    redisUrl: backend === "redis" ? REDIS_URL : undefined,
    redisPrefix: prefix,
    rateLimits: { ...d.rateLimits, ...over },
  };
}

describe.runIf(PG)("shared limits backends (two instances each)", () => {
  let testDb: TestDb;
  const dbs: Db[] = [];
  const opened: Limits[] = [];

  beforeAll(async () => {
    testDb = await postgresBackend.create();
    const first = await openPostgres(testDb.env.DATABASE_URL!);
    await migrate(first);
    dbs.push(first, await openPostgres(testDb.env.DATABASE_URL!));
  });
  afterAll(async () => {
    for (const l of opened) await l.close().catch(() => undefined);
    for (const d of dbs) await d.close().catch(() => undefined);
    await testDb?.destroy();
  });

  /** Two instances' limits on `backend` (separate pools / connections), cap `max`, lease `leaseMs`. */
  async function pair(backend: "postgres" | "redis", max: number, leaseMs: number): Promise<[Limits, Limits]> {
    const prefix = `skytale-test:${randomBytes(6).toString("hex")}:`;
    const cfg = configFor(testDb, backend, prefix, { argon2MaxPending: max, argon2LeaseMs: leaseMs });
    const a = await openLimits(cfg, dbs[0]!, new Metrics(), noWarn);
    const b = await openLimits(cfg, dbs[1]!, new Metrics(), noWarn);
    opened.push(a, b);
    expect([a.backend, b.backend]).toEqual([backend, backend]);
    return [a, b];
  }

  for (const backend of ["postgres", "redis"] as const) {
    describe.runIf(backend === "postgres" || REDIS)(backend, () => {
      it("counters: atomic across instances, peek does not count, windows end", async () => {
        const [a, b] = await pair(backend, 1, 1000);
        const key = `k:${randomBytes(4).toString("hex")}`;
        expect(await a.counters.incr(key, 60_000)).toEqual({ count: 1, resetMs: expect.any(Number) });
        expect((await b.counters.incr(key, 60_000)).count).toBe(2);
        const p = await a.counters.peek(key);
        expect(p.count).toBe(2);
        expect(p.resetMs).toBeGreaterThan(50_000);
        expect(p.resetMs).toBeLessThanOrEqual(60_000);
        expect((await b.counters.peek(key)).count).toBe(2);

        // 2 × 40 concurrent increments from both instances: every count 3…82 exactly once.
        const counts = await Promise.all(Array.from({ length: 80 }, (_, i) => (i % 2 ? a : b).counters.incr(key, 60_000)));
        expect(counts.map((c) => c.count).sort((x, y) => x - y)).toEqual(Array.from({ length: 80 }, (_, i) => i + 3));

        // A short window ends, and the next event opens a new one.
        const short = `${key}:short`;
        expect((await a.counters.incr(short, 150)).count).toBe(1);
        expect((await b.counters.incr(short, 150)).count).toBe(2);
        await waitFor("the window to end", async () => ((await b.counters.peek(short)).count === 0 ? true : undefined));
        expect((await b.counters.incr(short, 150)).count).toBe(1);
        expect(await a.counters.peek(`${key}:never`)).toEqual({ count: 0, resetMs: 0 });
      });

      it("semaphore: at most `max` leases over both instances, fail fast, release frees a slot", async () => {
        const [a, b] = await pair(backend, 2, 60_000);
        const l1 = await a.argon2.tryAcquire();
        const l2 = await b.argon2.tryAcquire();
        expect(l1).not.toBeNull();
        expect(l2).not.toBeNull();
        const started = Date.now();
        expect(await a.argon2.tryAcquire()).toBeNull();
        expect(await b.argon2.tryAcquire()).toBeNull();
        expect(Date.now() - started).toBeLessThan(1_000); // never waits
        await l1!.release();
        await l1!.release(); // idempotent
        const l3 = await b.argon2.tryAcquire();
        expect(l3).not.toBeNull();
        expect(await a.argon2.tryAcquire()).toBeNull();
        await l2!.release();
        await l3!.release();
        // 20 concurrent attempts over both instances: exactly 2 win.
        const got = await Promise.all(Array.from({ length: 20 }, (_, i) => (i % 2 ? a : b).argon2.tryAcquire()));
        expect(got.filter((l) => l !== null)).toHaveLength(2);
        for (const l of got) await l?.release();
      });

      it("semaphore: an expired lease frees its slot, and its late release does not free the new holder's", async () => {
        const [a, b] = await pair(backend, 1, 300);
        const old = await a.argon2.tryAcquire();
        expect(old).not.toBeNull();
        expect(await b.argon2.tryAcquire()).toBeNull();
        const fresh = await waitFor("the lease to expire", async () => (await b.argon2.tryAcquire()) ?? undefined);
        await old!.release(); // too late: must not free `fresh`
        expect(await a.argon2.tryAcquire()).toBeNull();
        await fresh.release();
        const again = await a.argon2.tryAcquire();
        expect(again).not.toBeNull();
        await again!.release();
      });

      it("a killed instance's Argon2id slot comes back when its lease expires (real process, SIGKILL)", async () => {
        const prefix = `skytale-test:${randomBytes(6).toString("hex")}:`;
        const leaseMs = 3_000;
        const signingKeyPem = generateSigningKeyPem();
        const cfg: Config = { ...configFor(testDb, backend, prefix, { argon2MaxPending: 1, argon2LeaseMs: leaseMs }), signingKeyPem };
        // The "crashing instance": opens the same limits, takes the only slot, is killed holding it.
        const script = `
          const { openLimits } = await import(${JSON.stringify(new URL("./limits/index.js", pathToFileURL(MAIN_JS)).href)});
          const { openDatabase } = await import(${JSON.stringify(new URL("./db/index.js", pathToFileURL(MAIN_JS)).href)});
          const { Metrics } = await import(${JSON.stringify(new URL("./metrics.js", pathToFileURL(MAIN_JS)).href)});
          const cfg = JSON.parse(process.env.CFG);
          const db = await openDatabase(cfg);
          const limits = await openLimits(cfg, db, new Metrics(), () => {});
          console.log((await limits.argon2.tryAcquire()) ? "held" : "full");
          setInterval(() => {}, 1000);`;
        // The surviving instance is up (and the account exists: signup only hashes) before the crash.
        const server = await startServer(cfg);
        try {
          const acct = await signup(server.url);
          const child = spawn(process.execPath, ["--input-type=module", "-e", script], { env: { ...process.env, CFG: JSON.stringify(cfg) }, stdio: ["ignore", "pipe", "inherit"] });
          const exited = new Promise((r) => child.once("exit", r));
          const line = await new Promise<string>((resolve) => {
            child.stdout!.once("data", (d: Buffer) => resolve(d.toString().trim()));
            child.once("exit", () => resolve("exited"));
          });
          const heldAt = Date.now();
          child.kill("SIGKILL");
          expect(line).toBe("held");
          await exited;

          // Every authentication needs the slot: refused at once with the existing 429, no hang.
          const refused = await call(server.url, "GET", "/v1/accounts/me", { key: acct.key });
          expect(Date.now() - heldAt).toBeLessThan(leaseMs - 500); // else the check proves nothing
          expect(refused.status).toBe(429);
          expect(refused.body.error.code).toBe("SKYTALE_RATE_LIMITED");
          expect(refused.headers.get("retry-after")).toBe("1");
          const ok = await waitFor("the dead instance's lease to expire", async () => {
            const r = await call(server.url, "GET", "/v1/accounts/me", { key: acct.key });
            return r.status === 429 ? undefined : r;
          });
          expect(ok.status).toBe(200);
          expect(Date.now() - heldAt).toBeGreaterThanOrEqual(leaseMs - 300);
          await registerAgent(server.url, acct.key, "worker");
          expect((await call(server.url, "POST", "/v1/tokens", { key: acct.key, body: { identity: "worker" } })).status).toBe(200);
        } finally {
          await server.close();
        }
      });
    });
  }
});

describe("fallback when a shared backend fails", () => {
  it("counters and slots are answered from this instance's memory, and the errors are reported", async () => {
    const broken = {
      kind: "redis" as const,
      max: 1,
      incr: () => Promise.reject(new Error("down")),
      peek: () => Promise.reject(new Error("down")),
      tryAcquire: () => Promise.reject(new Error("down")),
      close: async () => undefined,
    };
    const errors: unknown[] = [];
    const memory = new MemoryCounterStore();
    const counters = new FallbackCounterStore(broken, memory, (e) => errors.push(e));
    expect((await counters.incr("k", 60_000)).count).toBe(1);
    expect((await counters.incr("k", 60_000)).count).toBe(2);
    expect((await counters.peek("k")).count).toBe(2);
    const sem = new FallbackSemaphore(broken, new LocalSemaphore(1), (e) => errors.push(e));
    const lease = await sem.tryAcquire();
    expect(lease).not.toBeNull();
    expect(await sem.tryAcquire()).toBeNull();
    await lease!.release();
    expect(await sem.tryAcquire()).not.toBeNull();
    expect(errors.length).toBe(6);
    await memory.close();
  });

  it("an unreachable Redis at start is a clear config error (URL not echoed)", async () => {
    const db = { kind: "postgres" } as Db;
    const cfg = { ...defaultConfig(), limitsBackend: "auto" as const, redisUrl: "redis://:hunter2@127.0.0.1:1" };
    const err = await openLimits(cfg, db, new Metrics(), noWarn).then(
      () => null,
      (e: Error) => e,
    );
    expect(err?.message).toMatch(/cannot reach Redis/);
    expect(err?.message).not.toContain("hunter2");
  });
});
