// test/scale.test.ts — two real API server processes on one Postgres database (issue #15): a client
// hammering both, alternately and concurrently, is limited exactly as by one instance — for every
// rate limit, with the limits counted in Postgres and in Redis (and, as a control, not with the
// per-process memory backend); a key or agent revoked through one instance is refused by the other
// at once, even with the key in its verified-key cache; the Argon2id in-flight cap is shared
// (in-process instances, with one verification held open).

import { randomBytes } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { verifyApiKey } from "../src/auth/apiKey.js";
import { defaultConfig, type Config } from "../src/config.js";
import { startServer, type RunningServer } from "../src/server.js";
import { generateSigningKeyPem } from "../src/signing/keyRing.js";
import { postgresBackend, type TestDb } from "./helpers/backends.js";
import { call, newSignatureKey, registerAgent, signup, uniqueOrg, type Res } from "./helpers/http.js";
import { spawnServer, type ServerProcess } from "./helpers/server.js";
import { postgresReachable, REDIS_URL, redisReachable, shouldRun, waitFor } from "./helpers/services.js";

const PG = shouldRun("Postgres (127.0.0.1:5432)", await postgresReachable());
const REDIS = PG && shouldRun("Redis (127.0.0.1:6379)", await redisReachable());

/** The limits both instances run with (small, distinct numbers). */
const LIMITS = {
  SKYTALE_RATE_GLOBAL_PER_IP: "7",
  SKYTALE_RATE_SIGNUP_PER_IP: "4",
  SKYTALE_RATE_TOKENS_PER_IP: "9",
  SKYTALE_RATE_TOKENS_PER_KEY: "6",
  SKYTALE_RATE_AGENTS_PER_IP: "5",
  SKYTALE_RATE_REVOCATIONS_PER_IP: "8",
  SKYTALE_RATE_AUTH_FAILURES_PER_IP: "3",
  SKYTALE_RATE_AUTH_FAILURES_PER_KEY: "3",
};

let ipCounter = 0;
/** A client address never used before in this run (the servers trust X-Forwarded-For). */
function freshIp(): Record<string, string> {
  ipCounter += 1;
  return { "x-forwarded-for": `10.${(ipCounter >> 16) & 255}.${(ipCounter >> 8) & 255}.${ipCounter & 255}` };
}

/** Fires `n` requests at once, request `i` to instance `i % 2`; answers their statuses in order. */
async function hammer(bases: string[], n: number, req: (base: string, i: number) => Promise<Res>): Promise<Res[]> {
  return Promise.all(Array.from({ length: n }, (_, i) => req(bases[i % bases.length]!, i)));
}

function tally(rs: Res[]): Record<number, number> {
  const out: Record<number, number> = {};
  for (const r of rs) out[r.status] = (out[r.status] ?? 0) + 1;
  return out;
}

/** Every 429 is the API's rate-limit error with a Retry-After. */
function expectRateLimited(rs: Res[]): void {
  for (const r of rs.filter((x) => x.status === 429)) {
    expect(r.body).toEqual({ error: { code: "SKYTALE_RATE_LIMITED", message: expect.any(String) } });
    expect(Number(r.headers.get("retry-after"))).toBeGreaterThanOrEqual(1);
  }
}

/** Sum of `skytale_api_rate_limited_total` over both instances. */
async function rateLimitedTotal(bases: string[]): Promise<number> {
  let sum = 0;
  for (const b of bases) {
    const text: string = (await call(b, "GET", "/metrics", { headers: freshIp() })).body;
    for (const m of text.matchAll(/^skytale_api_rate_limited_total(?:\{[^}]*\})? (\d+)$/gm)) sum += Number(m[1]);
  }
  return sum;
}

describe.runIf(PG)("two API server processes on one Postgres", () => {
  for (const backend of ["postgres", "redis"] as const) {
    describe.runIf(backend === "postgres" || REDIS)(`limits in ${backend}`, () => {
      let db: TestDb;
      let a: ServerProcess;
      let b: ServerProcess;
      let bases: string[];

      beforeAll(async () => {
        db = await postgresBackend.create();
        const env = {
          ...db.env,
          ...LIMITS,
          LOG_LEVEL: "warn",
          SKYTALE_TRUST_PROXY: "1",
          SKYTALE_SIGNING_KEY: generateSigningKeyPem(),
          SKYTALE_LIMITS_BACKEND: backend,
          ...(backend === "redis" ? { SKYTALE_REDIS_URL: REDIS_URL, SKYTALE_REDIS_PREFIX: `skytale-test:${randomBytes(6).toString("hex")}:` } : {}),
        };
        [a, b] = await Promise.all([spawnServer(env), spawnServer(env)]);
        bases = [a.url, b.url];
      });
      afterAll(async () => {
        await Promise.all([a?.stop(), b?.stop()]);
        await db?.destroy();
      });

      it("both instances report the shared backend", async () => {
        for (const base of bases) {
          const text: string = (await call(base, "GET", "/metrics", { headers: freshIp() })).body;
          expect(text).toContain(`skytale_api_limits_backend{backend="${backend}"} 1`);
        }
      });

      it("global per IP, signups, revocation feed and agent writes per IP: exactly the limit over both", async () => {
        const before = await rateLimitedTotal(bases);
        const ip = freshIp();
        const global = await hammer(bases, 20, (base) => call(base, "GET", "/v1/relays", { headers: ip }));
        expect(tally(global)).toEqual({ 200: 7, 429: 13 });
        expectRateLimited(global);

        const sip = freshIp();
        const signups = await hammer(bases, 12, (base) =>
          call(base, "POST", "/v1/accounts", { body: { email: "x@y.example", name: "x", org: uniqueOrg("ham") }, headers: sip }),
        );
        expect(tally(signups)).toEqual({ 201: 4, 429: 8 });
        expectRateLimited(signups);

        const rip = freshIp();
        const feed = await hammer(bases, 20, (base) => call(base, "GET", "/v1/revocations", { headers: rip }));
        expect(tally(feed)).toEqual({ 200: 8, 429: 12 });

        const acct = await signup(a.url, uniqueOrg(), freshIp());
        const aip = freshIp();
        const agents = await hammer(bases, 15, (base, i) =>
          call(base, "POST", "/v1/agents", { key: acct.key, body: { identity: `bot-${i}`, signatureKey: newSignatureKey() }, headers: aip }),
        );
        expect(tally(agents)).toEqual({ 201: 5, 429: 10 });
        // The metrics counter still counts every refusal (over both instances).
        expect((await rateLimitedTotal(bases)) - before).toBe(13 + 8 + 12 + 10);
      });

      it("tokens per IP and per key: exactly the limit over both", async () => {
        const acct = await signup(b.url, uniqueOrg(), freshIp());
        await registerAgent(a.url, acct.key, "worker");
        const second = await call(b.url, "POST", "/v1/keys", { key: acct.key, body: { name: "second" }, headers: freshIp() });
        expect(second.status).toBe(201);
        const keys = [acct.key, second.body.key as string];

        // 12 requests from one IP, 6 per key (so the per-key limit of 6 is never what stops them).
        const ip = freshIp();
        const perIp = await hammer(bases, 12, (base, i) =>
          call(base, "POST", "/v1/tokens", { key: keys[Math.floor(i / 2) % 2], body: { identity: "worker" }, headers: ip }),
        );
        expect(tally(perIp)).toEqual({ 200: 9, 429: 3 });
        expectRateLimited(perIp);

        // A third key, 20 requests each from a fresh IP: only the per-key limit applies.
        const third = await call(a.url, "POST", "/v1/keys", { key: acct.key, body: { name: "third" }, headers: freshIp() });
        const perKey = await hammer(bases, 20, (base) => call(base, "POST", "/v1/tokens", { key: third.body.key, body: { identity: "worker" }, headers: freshIp() }));
        expect(tally(perKey)).toEqual({ 200: 6, 429: 14 });
        expectRateLimited(perKey);
      });

      it("failed authentications per IP and per key prefix: counted over both, then 429 on both", async () => {
        const ip = freshIp();
        const wrong = "sk_live_" + "q".repeat(43);
        const seq: number[] = [];
        for (let i = 0; i < 6; i++) seq.push((await call(bases[i % 2]!, "GET", "/v1/keys", { key: wrong, headers: ip })).status);
        expect(seq).toEqual([401, 401, 401, 429, 429, 429]);

        const victim = await signup(a.url, uniqueOrg(), freshIp());
        const guess = victim.key.slice(0, 20) + "x".repeat(victim.key.length - 20);
        const perKey: number[] = [];
        for (let i = 0; i < 6; i++) perKey.push((await call(bases[i % 2]!, "GET", "/v1/keys", { key: guess, headers: freshIp() })).status);
        expect(perKey).toEqual([401, 401, 401, 429, 429, 429]);
      });

      it("a key revoked through A is refused by B at once (also from B's verified-key cache); so is an agent", async () => {
        const admin = await signup(a.url, uniqueOrg(), freshIp());
        await registerAgent(a.url, admin.key, "worker");
        await registerAgent(b.url, admin.key, "helper");
        const agentKey = await call(a.url, "POST", "/v1/keys", { key: admin.key, body: { name: "w", identity: "worker" }, headers: freshIp() });
        expect(agentKey.status).toBe(201);
        const key: string = agentKey.body.key;
        // Both instances have verified the key (B twice: the second answer came from its cache).
        for (const base of [b.url, b.url, a.url]) expect((await call(base, "POST", "/v1/tokens", { key, body: {}, headers: freshIp() })).status).toBe(200);

        expect((await call(a.url, "DELETE", `/v1/keys/${agentKey.body.id}`, { key: admin.key, headers: freshIp() })).status).toBe(204);
        const onB = await call(b.url, "POST", "/v1/tokens", { key, body: {}, headers: freshIp() });
        expect(onB.status).toBe(401);
        expect(onB.body.error.code).toBe("SKYTALE_AUTH_KEY_REVOKED");
        expect((await call(a.url, "POST", "/v1/tokens", { key, body: {}, headers: freshIp() })).body.error.code).toBe("SKYTALE_AUTH_KEY_REVOKED");
        const feed = await call(b.url, "GET", "/v1/revocations", { headers: freshIp() });
        expect(feed.body.apiKeys.map((k: { id: string }) => k.id)).toContain(agentKey.body.id);

        // An agent revoked through B: A refuses tokens for it at once.
        expect((await call(a.url, "POST", "/v1/tokens", { key: admin.key, body: { identity: "helper" }, headers: freshIp() })).status).toBe(200);
        expect((await call(b.url, "DELETE", "/v1/agents/helper", { key: admin.key, headers: freshIp() })).status).toBe(204);
        const agentOnA = await call(a.url, "POST", "/v1/tokens", { key: admin.key, body: { identity: "helper" }, headers: freshIp() });
        expect(agentOnA.status).toBe(403);
        expect(agentOnA.body.error.code).toBe("SKYTALE_AGENT_REVOKED");
      });
    });
  }

  describe("control: the per-process memory backend", () => {
    let db: TestDb;
    let servers: ServerProcess[] = [];
    beforeAll(async () => {
      db = await postgresBackend.create();
      const env = { ...db.env, ...LIMITS, LOG_LEVEL: "warn", SKYTALE_TRUST_PROXY: "1", SKYTALE_LIMITS_BACKEND: "memory" };
      servers = await Promise.all([spawnServer(env), spawnServer(env)]);
    });
    afterAll(async () => {
      await Promise.all(servers.map((s) => s.stop()));
      await db?.destroy();
    });

    it("allows N× the limit over N instances (what the shared backends prevent)", async () => {
      const ip = freshIp();
      const rs = await hammer(
        servers.map((s) => s.url),
        20,
        (base) => call(base, "GET", "/v1/relays", { headers: ip }),
      );
      expect(tally(rs)).toEqual({ 200: 14, 429: 6 });
    });
  });
});

describe.runIf(PG)("the Argon2id in-flight cap is shared (two in-process instances, cap 1)", () => {
  for (const backend of ["postgres", "redis"] as const) {
    describe.runIf(backend === "postgres" || REDIS)(backend, () => {
      let db: TestDb;
      let a: RunningServer;
      let b: RunningServer;
      /** A's verifications wait for this gate (B verifies normally). */
      let openGate: () => void = () => undefined;
      let gate = Promise.resolve();
      let entered: () => void = () => undefined;

      beforeAll(async () => {
        db = await postgresBackend.create();
        const d = defaultConfig();
        const cfg: Config = {
          ...d,
          port: 0,
          logLevel: "silent",
          databaseUrl: db.env.DATABASE_URL,
          dataDir: db.dataDir,
          signingKeyPem: generateSigningKeyPem(),
          argon2: { memoryCost: 1024, timeCost: 1, parallelism: 1 },
          limitsBackend: backend,
          redisUrl: backend === "redis" ? REDIS_URL : undefined,
          redisPrefix: `skytale-test:${randomBytes(6).toString("hex")}:`,
          rateLimits: { ...d.rateLimits, argon2MaxPending: 1 },
        };
        a = await startServer(cfg, {
          verifyApiKey: async (phc, key) => {
            entered();
            await gate;
            return verifyApiKey(phc, key);
          },
        });
        b = await startServer(cfg);
      });
      afterAll(async () => {
        openGate();
        await Promise.all([a?.close(), b?.close()]);
        await db?.destroy();
      });

      it("while A verifies, B's verification is refused at once with SKYTALE_RATE_LIMITED; after, B works", async () => {
        const acct = await signup(b.url);
        const inA = new Promise<void>((r) => (entered = r));
        gate = new Promise<void>((r) => (openGate = r));
        const slow = call(a.url, "GET", "/v1/accounts/me", { key: acct.key });
        await inA; // A holds the only slot, cluster-wide

        const started = Date.now();
        const refused = await call(b.url, "GET", "/v1/accounts/me", { key: acct.key });
        expect(refused.status).toBe(429);
        expect(refused.body.error.code).toBe("SKYTALE_RATE_LIMITED");
        expect(refused.headers.get("retry-after")).toBe("1");
        expect(Date.now() - started).toBeLessThan(2_000); // failed fast, did not wait for A
        const bad = await call(b.url, "GET", "/v1/accounts/me", { key: "sk_live_" + "z".repeat(43) });
        expect(bad.status).toBe(429); // an unknown key needs a (dummy) verification too
        const metrics: string = (await call(b.url, "GET", "/metrics")).body;
        expect(metrics).toContain('skytale_api_rate_limited_total{limiter="argon2_pending"} 2');

        openGate();
        expect((await slow).status).toBe(200);
        const after = await waitFor("B to get the slot", async () => {
          const r = await call(b.url, "GET", "/v1/accounts/me", { key: acct.key });
          return r.status === 429 ? undefined : r;
        });
        expect(after.status).toBe(200);
      });
    });
  }
});
