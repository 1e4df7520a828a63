// test/suites/api.ts — owns the end-to-end API suite, run once per database backend against a real
// server child process: signup → key → token → JWKS verification, revocation, bad keys, bad input,
// concurrent signups, restart persistence, plaintext-free storage, and rate limits.

import { createRemoteJWKSet, decodeProtectedHeader, jwtVerify, type JWTPayload } from "jose";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { Backend, TestDb } from "../helpers/backends.js";
import { call, signup, uniqueOrg } from "../helpers/http.js";
import { spawnServer, TEST_ENV, type ServerProcess } from "../helpers/server.js";

const ISSUER = "skytale-api";
const AUDIENCE = "skytale-relay";

/** Verifies `token` against the server's published JWKS the way the relay does. */
async function verifyAgainstJwks(base: string, token: string, currentDate?: Date) {
  const jwks = createRemoteJWKSet(new URL(`${base}/.well-known/jwks.json`));
  return jwtVerify(token, jwks, { issuer: ISSUER, audience: AUDIENCE, algorithms: ["EdDSA"], currentDate });
}

/** Declares the whole API suite for one backend. */
export function defineApiSuite(backend: Backend): void {
  describe(`api-server e2e on ${backend.name}`, () => {
    let db: TestDb;
    let server: ServerProcess;
    let base: string;
    /** Every plaintext key handed out, to search the tables and logs for later. */
    const plaintextKeys: string[] = [];
    const earlier: { key: string; token: string; kid: string; accountId: string; org: string }[] = [];

    beforeAll(async () => {
      db = await backend.create();
      server = await spawnServer(db.env);
      base = server.url;
    });

    afterAll(async () => {
      await server?.stop();
      await db?.destroy();
    });

    it("prints its URL and answers /health, /openapi.json, /metrics", async () => {
      expect(base).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
      const health = await call(base, "GET", "/health");
      expect(health.status).toBe(200);
      expect(health.body).toEqual({ status: "ok", database: backend.name });
      const openapi = await call(base, "GET", "/openapi.json");
      expect(openapi.body.openapi).toBe("3.0.3");
      expect(Object.keys(openapi.body.paths)).toEqual(
        expect.arrayContaining(["/v1/accounts", "/v1/accounts/me", "/v1/keys", "/v1/keys/{id}", "/v1/tokens", "/.well-known/jwks.json"]),
      );
      const metrics = await call(base, "GET", "/metrics");
      expect(metrics.headers.get("content-type")).toMatch(/^text\/plain/);
      expect(metrics.body).toContain("skytale_api_http_requests_total");
    });

    it("signup → key → token, and the token verifies against the JWKS with the relay's claims", async () => {
      const org = uniqueOrg("acme");
      const r = await call(base, "POST", "/v1/accounts", { body: { email: "ops@acme.example", name: "Acme Ops", org } });
      expect(r.status).toBe(201);
      expect(r.body.account).toEqual({ id: expect.stringMatching(/^acct_/), email: "ops@acme.example", name: "Acme Ops", org });
      const key: string = r.body.apiKey;
      expect(key).toMatch(/^sk_live_[A-Za-z0-9_-]{43}$/);
      plaintextKeys.push(key);

      const me = await call(base, "GET", "/v1/accounts/me", { key });
      expect(me.body.account).toEqual(r.body.account);

      const t = await call(base, "POST", "/v1/tokens", { key });
      expect(t.status).toBe(200);
      expect(t.body.relay).toBe(TEST_ENV.SKYTALE_RELAY_URL);
      const { payload, protectedHeader } = await verifyAgainstJwks(base, t.body.token);
      const jwks = (await call(base, "GET", "/.well-known/jwks.json")).body;
      expect(jwks.keys).toHaveLength(1);
      expect(jwks.keys[0]).toEqual({ kty: "OKP", crv: "Ed25519", x: expect.any(String), kid: expect.any(String), alg: "EdDSA", use: "sig" });
      expect(protectedHeader).toEqual({ alg: "EdDSA", typ: "JWT", kid: jwks.keys[0].kid });
      expect(payload).toEqual({
        iss: ISSUER,
        aud: AUDIENCE,
        sub: r.body.account.id,
        org,
        scope: "channels:rw",
        jti: expect.any(String),
        iat: expect.any(Number),
        exp: (payload.iat as number) + 3600,
      } satisfies JWTPayload);
      expect(Math.abs((payload.iat as number) - Date.now() / 1000)).toBeLessThan(60);
      expect(t.body.expiresAt).toBe(new Date((payload.exp as number) * 1000).toISOString());

      const t2 = await call(base, "POST", "/v1/tokens", { key, body: { scope: "channels:r" } });
      const p2 = (await verifyAgainstJwks(base, t2.body.token)).payload;
      expect(p2.scope).toBe("channels:r");
      expect(p2.jti).not.toBe(payload.jti);
      earlier.push({ key, token: t.body.token, kid: protectedHeader.kid!, accountId: r.body.account.id, org });
    });

    it("an expired or tampered token fails verification", async () => {
      const { token } = earlier[0]!;
      const exp = (await verifyAgainstJwks(base, token)).payload.exp as number;
      await expect(verifyAgainstJwks(base, token, new Date((exp + 1) * 1000))).rejects.toMatchObject({ code: "ERR_JWT_EXPIRED" });
      const [h, p, sig] = token.split(".");
      const forged = Buffer.from(JSON.stringify({ ...JSON.parse(Buffer.from(p!, "base64url").toString()), org: "other" })).toString("base64url");
      await expect(verifyAgainstJwks(base, `${h}.${forged}.${sig}`)).rejects.toMatchObject({ code: "ERR_JWS_SIGNATURE_VERIFICATION_FAILED" });
    });

    it("creates, lists (no secrets, lastUsedAt) and revokes keys; a revoked key fails at once", async () => {
      const { key } = await signup(base);
      plaintextKeys.push(key);
      const created = await call(base, "POST", "/v1/keys", { key, body: { name: "ci runner" } });
      expect(created.status).toBe(201);
      expect(created.body).toEqual({ id: expect.stringMatching(/^key_/), prefix: created.body.key.slice(0, 20), name: "ci runner", key: expect.stringMatching(/^sk_live_/) });
      const key2: string = created.body.key;
      plaintextKeys.push(key2);

      // Use key2 twice so the verified-key cache holds it, then revoke with the first key.
      expect((await call(base, "POST", "/v1/tokens", { key: key2 })).status).toBe(200);
      expect((await call(base, "POST", "/v1/tokens", { key: key2 })).status).toBe(200);

      const list = await call(base, "GET", "/v1/keys", { key });
      expect(list.status).toBe(200);
      expect(list.body.keys).toHaveLength(2);
      const entry = list.body.keys.find((k: { id: string }) => k.id === created.body.id);
      expect(Object.keys(entry).sort()).toEqual(["createdAt", "id", "lastUsedAt", "name", "prefix"]);
      expect(entry.lastUsedAt).not.toBeNull();
      expect(JSON.stringify(list.body)).not.toContain(key2);

      const del = await call(base, "DELETE", `/v1/keys/${created.body.id}`, { key });
      expect(del.status).toBe(204);
      const after = await call(base, "POST", "/v1/tokens", { key: key2 });
      expect(after.status).toBe(401);
      expect(after.body).toEqual({ error: { code: "auth_key_revoked", message: expect.any(String) } });
      expect((await call(base, "GET", "/v1/keys", { key: key2 })).status).toBe(401);
      expect((await call(base, "GET", "/v1/keys", { key })).body.keys).toHaveLength(1);
      expect((await call(base, "DELETE", `/v1/keys/${created.body.id}`, { key })).body.error.code).toBe("not_found");

      // Another account cannot see or revoke this account's keys.
      const other = await signup(base);
      plaintextKeys.push(other.key);
      const mine = (await call(base, "GET", "/v1/keys", { key })).body.keys[0].id;
      expect((await call(base, "DELETE", `/v1/keys/${mine}`, { key: other.key })).status).toBe(404);
      expect((await call(base, "POST", "/v1/tokens", { key })).status).toBe(200);
    });

    it("garbled, unknown, wrong and empty keys all get the same 401", async () => {
      const known = earlier[0]!.key;
      const realPrefixWrongSecret = known.slice(0, 20) + (known[20] === "A" ? "B" : "A") + known.slice(21);
      const unknownWellFormed = "sk_live_" + "Z".repeat(43);
      const headers: (Record<string, string> | undefined)[] = [
        undefined,
        { authorization: "" },
        { authorization: "Bearer " },
        { authorization: "Bearer garbage" },
        { authorization: "Basic dXNlcjpwYXNz" },
        { authorization: `Bearer ${known}x` },
        { authorization: `Bearer ${unknownWellFormed}` },
        { authorization: `Bearer ${realPrefixWrongSecret}` },
      ];
      const bodies = new Set<string>();
      for (const h of headers) {
        const r = await call(base, "POST", "/v1/tokens", { headers: h });
        expect(r.status).toBe(401);
        bodies.add(JSON.stringify(r.body));
      }
      expect([...bodies]).toEqual([JSON.stringify({ error: { code: "auth_key_invalid", message: "API key missing or invalid" } })]);
    });

    it("rejects bad input with invalid_request / not_found", async () => {
      const key = earlier[0]!.key;
      const bad = async (path: string, body: unknown, raw?: string, status = 400) => {
        const r = await call(base, "POST", path, { key, body, rawBody: raw });
        expect(r.status, `${path} ${raw ?? JSON.stringify(body)}`).toBe(status);
        expect(r.body.error.code).toBe("invalid_request");
      };
      await bad("/v1/accounts", { email: "a@b.example", name: "x", org: "ok-org", admin: true });
      await bad("/v1/accounts", { email: "a@b.example", name: "x", org: "Bad_Org" });
      await bad("/v1/accounts", { email: "a@b.example", name: "x", org: "a".repeat(65) });
      await bad("/v1/accounts", { email: "not-an-email", name: "x", org: "fine" });
      await bad("/v1/accounts", { email: "a@b.example", name: 5, org: "fine" });
      await bad("/v1/accounts", { email: "a@b.example", name: "x" });
      await bad("/v1/accounts", undefined, "{not json");
      await bad("/v1/accounts", undefined, JSON.stringify({ email: "a@b.example", name: "x".repeat(20_000), org: "big" }), 413);
      await bad("/v1/keys", { name: "" });
      await bad("/v1/keys", { name: "x", scope: "all" });
      await bad("/v1/tokens", { scope: "admin" });
      await bad("/v1/tokens", { ttl: 999999 });
      const del = await call(base, "DELETE", "/v1/keys/../../etc", { key });
      expect([400, 404]).toContain(del.status);
      expect((await call(base, "DELETE", "/v1/keys/not-a-key-id", { key })).body.error.code).toBe("invalid_request");
      expect((await call(base, "DELETE", `/v1/keys/key_${"A".repeat(22)}`, { key })).body.error.code).toBe("not_found");
      expect((await call(base, "GET", "/v1/nothing")).body).toEqual({ error: { code: "not_found", message: expect.any(String) } });
    });

    it("concurrent signups with one org: exactly one wins, the rest get 409 conflict", async () => {
      const org = uniqueOrg("race");
      const results = await Promise.all(
        Array.from({ length: 8 }, (_, i) =>
          call(base, "POST", "/v1/accounts", { body: { email: `u${i}@race.example`, name: `u${i}`, org } }),
        ),
      );
      const statuses = results.map((r) => r.status).sort();
      expect(statuses).toEqual([201, 409, 409, 409, 409, 409, 409, 409]);
      for (const r of results) {
        if (r.status === 409) expect(r.body.error.code).toBe("conflict");
        else plaintextKeys.push(r.body.apiKey);
      }
    });

    it("stores no plaintext key, logs none, and after a restart keys work and old tokens verify", async () => {
      expect(await server.stop()).toBe(0);
      const log = server.output();
      expect(log).toContain('"url":"/v1/tokens"'); // requests are logged, so the check below means something
      const rows = await db.dumpAllRows();
      expect(rows).toContain("$argon2id$v=19$m=1024,t=1,p=1$");
      for (const k of plaintextKeys) {
        const secretPart = k.slice(20); // everything after the public lookup prefix
        expect(rows).not.toContain(secretPart);
        expect(log).not.toContain(secretPart);
      }

      server = await spawnServer(db.env);
      base = server.url;
      const { key, token, kid, accountId, org } = earlier[0]!;
      const verified = await verifyAgainstJwks(base, token);
      expect(verified.protectedHeader.kid).toBe(kid);
      const t = await call(base, "POST", "/v1/tokens", { key });
      expect(t.status).toBe(200);
      const fresh = await verifyAgainstJwks(base, t.body.token);
      expect(fresh.protectedHeader.kid).toBe(kid);
      expect(fresh.payload).toMatchObject({ sub: accountId, org });
    });

    describe("rate limits", () => {
      let limited: ServerProcess;
      let ldb: TestDb;
      const ip = (n: number) => ({ "x-forwarded-for": `10.0.0.${n}` });

      beforeAll(async () => {
        ldb = await backend.create();
        limited = await spawnServer({
          ...ldb.env,
          LOG_LEVEL: "warn",
          SKYTALE_TRUST_PROXY: "1",
          SKYTALE_RATE_SIGNUP_PER_IP: "3",
          SKYTALE_RATE_TOKENS_PER_KEY: "3",
          SKYTALE_RATE_AUTH_FAILURES_PER_IP: "3",
          SKYTALE_RATE_AUTH_FAILURES_PER_KEY: "3",
        });
      });
      afterAll(async () => {
        await limited?.stop();
        await ldb?.destroy();
      });

      it("failed authentications per IP → 429 before any hashing", async () => {
        for (let i = 0; i < 3; i++) {
          expect((await call(limited.url, "POST", "/v1/tokens", { key: "sk_live_" + "q".repeat(43), headers: ip(1) })).status).toBe(401);
        }
        const r = await call(limited.url, "POST", "/v1/tokens", { key: "sk_live_" + "q".repeat(43), headers: ip(1) });
        expect(r.status).toBe(429);
        expect(r.body).toEqual({ error: { code: "rate_limited", message: expect.any(String) } });
        expect(Number(r.headers.get("retry-after"))).toBeGreaterThan(0);
        // Another IP is unaffected.
        expect((await call(limited.url, "POST", "/v1/tokens", { key: "garbage", headers: ip(2) })).status).toBe(401);
      });

      it("signups per IP and tokens per key → 429", async () => {
        const a = await signup(limited.url, uniqueOrg(), ip(3));
        await signup(limited.url, uniqueOrg(), ip(3));
        await signup(limited.url, uniqueOrg(), ip(3));
        const r = await call(limited.url, "POST", "/v1/accounts", { body: { email: "x@y.example", name: "x", org: uniqueOrg() }, headers: ip(3) });
        expect(r.status).toBe(429);
        expect(r.body.error.code).toBe("rate_limited");

        for (let i = 0; i < 3; i++) expect((await call(limited.url, "POST", "/v1/tokens", { key: a.key, headers: ip(10 + i) })).status).toBe(200);
        const over = await call(limited.url, "POST", "/v1/tokens", { key: a.key, headers: ip(20) });
        expect(over.status).toBe(429);
        expect(over.body.error.code).toBe("rate_limited");
      });

      it("failures per key prefix → 429, while the key's verified owner keeps working", async () => {
        const victim = await signup(limited.url, uniqueOrg(), ip(30));
        expect((await call(limited.url, "GET", "/v1/keys", { key: victim.key, headers: ip(30) })).status).toBe(200);
        const wrong = victim.key.slice(0, 20) + "x".repeat(victim.key.length - 20);
        for (let i = 0; i < 3; i++) expect((await call(limited.url, "GET", "/v1/keys", { key: wrong, headers: ip(40 + i) })).status).toBe(401);
        expect((await call(limited.url, "GET", "/v1/keys", { key: wrong, headers: ip(50) })).status).toBe(429);
        expect((await call(limited.url, "GET", "/v1/keys", { key: victim.key, headers: ip(51) })).status).toBe(200);
      });
    });
  });
}
