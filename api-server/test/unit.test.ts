// test/unit.test.ts — unit tests: key format and Argon2id hashing, limiter, verified-key cache,
// signing key ring (env, data dir, rotation), token claims, config parsing, migrations, startServer().

import { generateKeyPairSync } from "node:crypto";
import { mkdtempSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createLocalJWKSet, jwtVerify } from "jose";
import { afterAll, describe, expect, it } from "vitest";
import { generateApiKey, hashApiKey, isWellFormedKey, lookupPrefix, verifyApiKey } from "../src/auth/apiKey.js";
import { Authenticator, bearerKey } from "../src/auth/authenticator.js";
import { KeyCache } from "../src/auth/keyCache.js";
import { LocalSemaphore, MemoryCounterStore } from "../src/limits/memory.js";
import { WindowLimiter } from "../src/limits/window.js";
import { ConfigError, defaultConfig, loadConfig, relayList } from "../src/config.js";
import { listMigrations, migrate } from "../src/db/migrate.js";
import { openPglite } from "../src/db/pglite.js";
import { listRevocations } from "../src/store/revocations.js";
import type { Db } from "../src/db/index.js";
import { Metrics } from "../src/metrics.js";
import { startServer } from "../src/server.js";
import { generateSigningKeyPem, jwks, keyDir, loadKeyRing, rotateSigningKey } from "../src/signing/keyRing.js";
import { issueToken } from "../src/signing/tokens.js";
import { CREDENTIAL_AUDIENCE, CREDENTIAL_TYP, decodeSignatureKey, fingerprint, issueCredential } from "../src/signing/credentials.js";
import { API_ERROR_CODES } from "../src/errors.js";

const dirs: string[] = [];
function tmp(): string {
  const d = mkdtempSync(join(tmpdir(), "skytale-api-unit-"));
  dirs.push(d);
  return d;
}
afterAll(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

const FAST = { memoryCost: 1024, timeCost: 1, parallelism: 1 };

describe("API keys", () => {
  it("are sk_live_ + base64url(32 random bytes) with a 20-char lookup prefix", () => {
    const { key, prefix } = generateApiKey();
    expect(key).toMatch(/^sk_live_[A-Za-z0-9_-]{43}$/);
    expect(Buffer.from(key.slice(8), "base64url")).toHaveLength(32);
    expect(prefix).toBe(key.slice(0, 20));
    expect(lookupPrefix(key)).toBe(prefix);
    expect(isWellFormedKey(key)).toBe(true);
    expect(isWellFormedKey(key + "a")).toBe(false);
    expect(isWellFormedKey("sk_test_" + key.slice(8))).toBe(false);
    expect(generateApiKey().key).not.toBe(key);
  });

  it("hash with Argon2id using the given parameters, production defaults m=19456 t=2 p=1", async () => {
    const { key } = generateApiKey();
    const h = await hashApiKey(key, FAST);
    expect(h).toMatch(/^\$argon2id\$v=19\$m=1024,t=1,p=1\$/);
    expect(h).not.toContain(key.slice(8));
    expect(await verifyApiKey(h, key)).toBe(true);
    expect(await verifyApiKey(h, generateApiKey().key)).toBe(false);
    expect(await verifyApiKey("not a hash", key)).toBe(false);
    expect(defaultConfig().argon2).toEqual({ memoryCost: 19456, timeCost: 2, parallelism: 1 });
    expect(await hashApiKey(key, defaultConfig().argon2)).toMatch(/^\$argon2id\$v=19\$m=19456,t=2,p=1\$/);
  });

  it("bearer parsing accepts only `Bearer <token>`", () => {
    expect(bearerKey("Bearer abc")).toBe("abc");
    expect(bearerKey("bearer abc")).toBe("abc");
    expect(bearerKey("Bearer")).toBe("");
    expect(bearerKey("Basic abc")).toBe("");
    expect(bearerKey("Bearer a b")).toBe("");
    expect(bearerKey(undefined)).toBe("");
  });
});

describe("Authenticator", () => {
  it("caps Argon2id verifications in flight: the overflow gets rate_limited without hashing", async () => {
    const db = { kind: "pglite", query: async () => [] } as unknown as Db;
    const store = new MemoryCounterStore();
    const auth = new Authenticator({
      db,
      cache: new KeyCache(0),
      failuresPerIp: new WindowLimiter(store, "ip", 1000),
      failuresPerKey: new WindowLimiter(store, "key", 1000),
      metrics: new Metrics(),
      argon2: FAST,
      argon2Slots: new LocalSemaphore(1),
    });
    await auth.init();
    const results = await Promise.allSettled(
      [1, 2].map(() => auth.authenticate(`Bearer ${generateApiKey().key}`, "10.1.1.1")),
    );
    const codes = results.map((r) => (r.status === "rejected" ? (r.reason as { code: string }).code : "ok")).sort();
    expect(codes).toEqual(["SKYTALE_AUTH_KEY_INVALID", "SKYTALE_RATE_LIMITED"]);
  });
});

describe("WindowLimiter (memory)", () => {
  it("blocks after `limit` hits per window and resets after it; take() counts atomically", async () => {
    let now = 1_000_000;
    const store = new MemoryCounterStore(() => now);
    const l = new WindowLimiter(store, "t", 2, 60_000);
    expect(await l.take("a")).toBe(0);
    expect(await l.take("a")).toBe(0);
    expect(await l.take("a")).toBe(60);
    expect(await l.blockedFor("b")).toBe(0);
    now += 30_000;
    expect(await l.blockedFor("a")).toBe(30);
    now += 30_001;
    expect(await l.blockedFor("a")).toBe(0);
    expect(await l.take("a")).toBe(0);
    await l.hit("b");
    expect(await store.peek("t:b")).toEqual({ count: 1, resetMs: 60_000 });
    // Another limiter on the same store has its own namespace.
    expect(await new WindowLimiter(store, "u", 1).blockedFor("b")).toBe(0);
    now += 60_000;
    store.sweep();
    expect(await store.peek("t:a")).toEqual({ count: 0, resetMs: 0 });
    await store.close();
  });

  it("LocalSemaphore: at most `max` leases, release is idempotent", async () => {
    const s = new LocalSemaphore(2);
    const a = await s.tryAcquire();
    const b = await s.tryAcquire();
    expect(a && b).toBeTruthy();
    expect(await s.tryAcquire()).toBeNull();
    await a!.release();
    await a!.release();
    expect(s.inUse).toBe(1);
    expect(await s.tryAcquire()).not.toBeNull();
    expect(await s.tryAcquire()).toBeNull();
  });
});

describe("KeyCache", () => {
  const v = (keyId: string, role: "admin" | "agent" = "admin", identity: string | null = null) => ({ keyId, role, identity });
  it("remembers a verified key per row (id, role, identity), forgets on invalidate and expiry, is off at ttl 0", async () => {
    const c = new KeyCache(50);
    c.add("sk_live_a", v("key_1"));
    expect(c.get("sk_live_a", v("key_1"))).toEqual(v("key_1"));
    expect(c.get("sk_live_a", v("key_2"))).toBeNull();
    c.add("sk_live_g", v("key_9", "agent", "bot-1"));
    expect(c.get("sk_live_g", v("key_9", "agent", "bot-1"))).toEqual(v("key_9", "agent", "bot-1"));
    expect(c.get("sk_live_g", v("key_9", "agent", "bot-2"))).toBeNull();
    expect(c.get("sk_live_g", v("key_9", "agent", "bot-1"))).toBeNull(); // the mismatch dropped it
    c.add("sk_live_b", v("key_2"));
    c.invalidate("key_2");
    expect(c.get("sk_live_b", v("key_2"))).toBeNull();
    c.add("sk_live_c", v("key_3"));
    await new Promise((r) => setTimeout(r, 80));
    expect(c.get("sk_live_c", v("key_3"))).toBeNull();
    const off = new KeyCache(0);
    off.add("k", v("key_1"));
    expect(off.get("k", v("key_1"))).toBeNull();
  });
});

describe("agent credentials", () => {
  it("signature keys must be canonical base64url of 32 bytes; fingerprint = first 40 hex of SHA-256 in groups of 4", () => {
    const raw = Buffer.alloc(32, 7);
    const b64 = raw.toString("base64url");
    expect(decodeSignatureKey(b64)).toEqual(raw);
    expect(decodeSignatureKey(b64 + "=")).toBeNull();
    expect(decodeSignatureKey(Buffer.alloc(31).toString("base64url"))).toBeNull();
    expect(decodeSignatureKey(Buffer.alloc(33).toString("base64url"))).toBeNull();
    expect(decodeSignatureKey(Buffer.alloc(32, 0xff).toString("base64").replace(/=+$/, ""))).toBeNull(); // "/" is not base64url
    // A non-canonical last character (low bits set) is refused.
    const last = b64[42]!;
    const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    const bumped = b64.slice(0, 42) + alphabet[alphabet.indexOf(last) + 1];
    expect(decodeSignatureKey(bumped)).toBeNull();

    const zero = Buffer.alloc(32);
    // sha256(32 zero bytes) = 66687aadf862bd776c8fc18b8e9f8e20089714856ee233b3902a591d0d5f2925
    expect(fingerprint(zero)).toBe("6668 7aad f862 bd77 6c8f c18b 8e9f 8e20 0897 1485");
    expect(fingerprint(raw)).toMatch(/^([0-9a-f]{4} ){9}[0-9a-f]{4}$/);
  });

  it("carry exactly the agreed header and claims, exp = iat + ttl, and verify with the JWKS", async () => {
    const ring = await loadKeyRing({ dataDir: tmp(), signingKeyPem: undefined, previousSigningKeysPem: undefined });
    const sigKey = generateKeyPairSync("ed25519").publicKey.export({ format: "jwk" }).x!;
    const c = await issueCredential(ring, { issuer: "skytale-api", ttlSeconds: 2_592_000, now: 1_700_000_000_000 }, { org: "acme", identity: "bot-1", signatureKey: sigKey });
    const { payload, protectedHeader } = await jwtVerify(c.credential, createLocalJWKSet(jwks(ring)), {
      currentDate: new Date(1_700_000_100_000),
      issuer: "skytale-api",
      audience: CREDENTIAL_AUDIENCE,
      typ: CREDENTIAL_TYP,
      algorithms: ["EdDSA"],
    });
    expect(protectedHeader).toEqual({ alg: "EdDSA", typ: "skytale-agent+jwt", kid: ring.signer.kid });
    expect(payload).toEqual({
      iss: "skytale-api",
      aud: "skytale-agent-credential",
      sub: "bot-1",
      identity: "bot-1",
      org: "acme",
      sig_key: sigKey,
      jti: c.jti,
      iat: 1_700_000_000,
      exp: 1_702_592_000,
    });
    expect(c.expiresAt.toISOString()).toBe(new Date(1_702_592_000_000).toISOString());
    // Not a relay token: the relay's audience check refuses it.
    await expect(jwtVerify(c.credential, createLocalJWKSet(jwks(ring)), { audience: "skytale-relay", currentDate: new Date(1_700_000_100_000) })).rejects.toMatchObject({ code: "ERR_JWT_CLAIM_VALIDATION_FAILED" });
  });

  it("the error codes are all SKYTALE_* and unique", () => {
    expect(API_ERROR_CODES.every((c) => /^SKYTALE_[A-Z_]+$/.test(c))).toBe(true);
    expect(new Set(API_ERROR_CODES).size).toBe(API_ERROR_CODES.length);
  });
});

describe("signing key ring", () => {
  const opts = { issuer: "skytale-api", audience: "skytale-relay", ttlSeconds: 3600 };
  const subject = { accountId: "acct_x", org: "acme", scope: "channels:rw" as const, identity: "bot-1", apiKeyId: "key_x" };

  it("generates a key once in the data dir (mode 0600) and reuses it", async () => {
    const dataDir = tmp();
    const a = await loadKeyRing({ dataDir, signingKeyPem: undefined, previousSigningKeysPem: undefined });
    const b = await loadKeyRing({ dataDir, signingKeyPem: undefined, previousSigningKeysPem: undefined });
    expect(a.signer.kid).toBe(b.signer.kid);
    expect(a.publicKeys).toHaveLength(1);
    const { readdirSync } = await import("node:fs");
    const files = readdirSync(keyDir(dataDir));
    expect(files).toHaveLength(1);
    expect(statSync(join(keyDir(dataDir), files[0]!)).mode & 0o777).toBe(0o600);
  });

  it("rotation in the data dir: the newest signs, old and new are published, old tokens still verify", async () => {
    const dataDir = tmp();
    const before = await loadKeyRing({ dataDir, signingKeyPem: undefined, previousSigningKeysPem: undefined });
    const old = await issueToken(before, opts, subject);
    rotateSigningKey(dataDir);
    const after = await loadKeyRing({ dataDir, signingKeyPem: undefined, previousSigningKeysPem: undefined });
    expect(after.signer.kid).not.toBe(before.signer.kid);
    expect(after.publicKeys.map((k) => k.kid)).toEqual([after.signer.kid, before.signer.kid]);
    const set = createLocalJWKSet(jwks(after));
    await expect(jwtVerify(old.token, set, { algorithms: ["EdDSA"] })).resolves.toBeTruthy();
    const fresh = await issueToken(after, opts, subject);
    expect((await jwtVerify(fresh.token, set)).protectedHeader.kid).toBe(after.signer.kid);
  });

  it("env keys: SKYTALE_SIGNING_KEY signs, SKYTALE_PREVIOUS_SIGNING_KEYS are published", async () => {
    const current = generateSigningKeyPem();
    const prevPrivate = generateSigningKeyPem();
    const prevPublic = generateKeyPairSync("ed25519").publicKey.export({ type: "spki", format: "pem" }).toString();
    const ring = await loadKeyRing({
      dataDir: tmp(),
      signingKeyPem: current.replace(/\n/g, "\\n"), // one-line env form
      previousSigningKeysPem: prevPrivate + prevPublic,
    });
    expect(ring.source).toBe("env");
    expect(ring.publicKeys).toHaveLength(3);
    expect(ring.publicKeys[0]!.kid).toBe(ring.signer.kid);
    const prevRing = await loadKeyRing({ dataDir: tmp(), signingKeyPem: prevPrivate, previousSigningKeysPem: undefined });
    const old = await issueToken(prevRing, opts, subject);
    await expect(jwtVerify(old.token, createLocalJWKSet(jwks(ring)))).resolves.toBeTruthy();
  });

  it("rejects a non-Ed25519 or unreadable key with a ConfigError that does not echo it", async () => {
    const rsa = generateKeyPairSync("rsa", { modulusLength: 1024 }).privateKey.export({ type: "pkcs8", format: "pem" }).toString();
    await expect(loadKeyRing({ dataDir: tmp(), signingKeyPem: rsa, previousSigningKeysPem: undefined })).rejects.toBeInstanceOf(ConfigError);
    const err = await loadKeyRing({ dataDir: tmp(), signingKeyPem: "-----BEGIN PRIVATE KEY-----\nsecretstuff\n-----END PRIVATE KEY-----", previousSigningKeysPem: undefined }).catch((e: Error) => e);
    expect(err).toBeInstanceOf(ConfigError);
    expect((err as Error).message).not.toContain("secretstuff");
  });

  it("tokens carry exactly the relay's claims with exp = iat + 3600", async () => {
    const ring = await loadKeyRing({ dataDir: tmp(), signingKeyPem: undefined, previousSigningKeysPem: undefined });
    const t = await issueToken(ring, { ...opts, now: 1_700_000_000_000 }, subject);
    const { payload, protectedHeader } = await jwtVerify(t.token, createLocalJWKSet(jwks(ring)), {
      currentDate: new Date(1_700_000_100_000),
      issuer: "skytale-api",
      audience: "skytale-relay",
    });
    expect(protectedHeader).toEqual({ alg: "EdDSA", typ: "JWT", kid: ring.signer.kid });
    expect(payload).toEqual({ iss: "skytale-api", aud: "skytale-relay", sub: "acct_x", org: "acme", scope: "channels:rw", identity: "bot-1", akid: "key_x", jti: t.jti, iat: 1_700_000_000, exp: 1_700_003_600 });
    expect(t.expiresAt.toISOString()).toBe("2023-11-14T23:13:20.000Z");
  });
});

describe("config", () => {
  it("has documented defaults and reads env", () => {
    const c = loadConfig({});
    expect(c).toMatchObject({ host: "127.0.0.1", port: 8080, dataDir: "./.skytale/api", issuer: "skytale-api", audience: "skytale-relay", relayUrl: null, tokenTtlSeconds: 3600 });
    const e = loadConfig({ PORT: "0", HOST: "0.0.0.0", SKYTALE_ISSUER: "iss", SKYTALE_RELAY_URL: "iroh://x@h:1", SKYTALE_ARGON2_MEMORY_KIB: "4096", DATABASE_URL: "postgres://x/y" });
    expect(e).toMatchObject({ port: 0, host: "0.0.0.0", issuer: "iss", relayUrl: "iroh://x@h:1", databaseUrl: "postgres://x/y", argon2: { memoryCost: 4096 } });
    expect(() => loadConfig({ PORT: "eighty" })).toThrow(ConfigError);
    expect(c.credentialTtlSeconds).toBe(30 * 24 * 3600);
    expect(loadConfig({ SKYTALE_CREDENTIAL_TTL_SECONDS: "60" }).credentialTtlSeconds).toBe(60);
  });

  it("relay lists: SKYTALE_RELAY_URL first, then SKYTALE_RELAY_URLS without duplicates", () => {
    expect(relayList(loadConfig({}))).toEqual([]);
    expect(relayList(loadConfig({ SKYTALE_RELAY_URL: "iroh://a@h:1" }))).toEqual(["iroh://a@h:1"]);
    const both = loadConfig({ SKYTALE_RELAY_URL: "iroh://a@h:1", SKYTALE_RELAY_URLS: " iroh://b@h:2, iroh://a@h:1,,iroh://c@h:3 " });
    expect(relayList(both)).toEqual(["iroh://a@h:1", "iroh://b@h:2", "iroh://c@h:3"]);
    const only = loadConfig({ SKYTALE_RELAY_URLS: "iroh://b@h:2,iroh://c@h:3" });
    expect(only.relayUrl).toBe("iroh://b@h:2");
    expect(relayList(only)).toEqual(["iroh://b@h:2", "iroh://c@h:3"]);
  });

  it("limits backend: auto by default, redis settings, validation", () => {
    const c = loadConfig({});
    expect(c).toMatchObject({ limitsBackend: "auto", redisUrl: undefined, redisPrefix: "skytale:api:" });
    expect(c.rateLimits.argon2LeaseMs).toBe(30_000);
    const r = loadConfig({ SKYTALE_REDIS_URL: "redis://127.0.0.1:6379", SKYTALE_REDIS_PREFIX: "x:", SKYTALE_LIMITS_BACKEND: "redis", SKYTALE_ARGON2_LEASE_MS: "500" });
    expect(r).toMatchObject({ redisUrl: "redis://127.0.0.1:6379", redisPrefix: "x:", limitsBackend: "redis" });
    expect(r.rateLimits.argon2LeaseMs).toBe(500);
    expect(() => loadConfig({ SKYTALE_LIMITS_BACKEND: "etcd" })).toThrow(ConfigError);
  });

  it("migrations are versioned files", () => {
    const m = listMigrations();
    expect(m[0]).toMatchObject({ version: 1, name: "init" });
    expect(m[1]).toMatchObject({ version: 2, name: "agents" });
    expect(m[2]).toMatchObject({ version: 3, name: "limits" });
    expect(m.map((x) => x.version)).toEqual([...m.map((x) => x.version)].sort((a, b) => a - b));
  });
});

describe("migration 0002_agents", () => {
  it("makes existing keys admin keys and puts already revoked keys into the revocation feed", async () => {
    const db = await openPglite(undefined);
    try {
      const all = listMigrations();
      expect(await migrate(db, all.slice(0, 1))).toEqual([1]);
      await db.query("INSERT INTO accounts (id, email, name, org) VALUES ('acct_1', 'a@b.c', 'A', 'acme')");
      await db.query("INSERT INTO api_keys (id, account_id, name, prefix, hash) VALUES ('key_live', 'acct_1', 'k', 'p1', 'h'), ('key_gone', 'acct_1', 'k', 'p2', 'h')");
      await db.query("UPDATE api_keys SET revoked_at = now() WHERE id = 'key_gone'");
      expect(await migrate(db, all.slice(0, 2))).toEqual([2]);
      expect(await db.query("SELECT id, role, identity FROM api_keys ORDER BY id")).toEqual([
        { id: "key_gone", role: "admin", identity: null },
        { id: "key_live", role: "admin", identity: null },
      ]);
      expect(await listRevocations(db, 0)).toEqual({ cursor: 1, apiKeys: [{ id: "key_gone", revokedAt: expect.any(Number) }], agents: [] });
      // An agent key must name its identity, an admin key must not.
      await expect(db.query("INSERT INTO api_keys (id, account_id, name, prefix, hash, role) VALUES ('k3', 'acct_1', 'k', 'p3', 'h', 'agent')")).rejects.toThrow();
      await expect(db.query("INSERT INTO api_keys (id, account_id, name, prefix, hash, identity) VALUES ('k4', 'acct_1', 'k', 'p4', 'h', 'bot')")).rejects.toThrow();
      expect(await migrate(db, all)).toEqual([3]);
      expect(await migrate(db, all)).toEqual([]);
    } finally {
      await db.close();
    }
  });
});

describe("startServer (embedded)", () => {
  it("starts on a free port with PGlite, serves, and closes", async () => {
    const server = await startServer({ port: 0, dataDir: tmp(), logLevel: "silent", argon2: FAST });
    try {
      expect(server.url).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
      expect(server.url).not.toMatch(/:0$/);
      expect(server.limitsBackend).toBe("memory");
      const r = await fetch(`${server.url}/health`);
      expect(await r.json()).toEqual({ status: "ok", database: "pglite" });
      const k = await fetch(`${server.url}/.well-known/jwks.json`);
      expect(((await k.json()) as { keys: { kid: string }[] }).keys[0]!.kid).toBe(server.signingKid);
    } finally {
      await server.close();
      await server.close();
    }
  });
});
