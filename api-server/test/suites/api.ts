// test/suites/api.ts — owns the end-to-end API suite, run once per database backend against a real
// server child process: signup → key → agent → token → JWKS verification, key roles, agent
// registration / rotation / revocation and credentials, the revocation feed, bad keys, bad input,
// concurrent signups and registrations, restart persistence, plaintext-free storage, rate limits.

import { createHash } from "node:crypto";
import { createRemoteJWKSet, decodeProtectedHeader, jwtVerify, type JWTPayload } from "jose";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { Backend, TestDb } from "../helpers/backends.js";
import { call, newSignatureKey, registerAgent, signup, tokenFor, uniqueOrg } from "../helpers/http.js";
import { spawnServer, TEST_ENV, type ServerProcess } from "../helpers/server.js";

const ISSUER = "skytale-api";
const AUDIENCE = "skytale-relay";
const CREDENTIAL_AUDIENCE = "skytale-agent-credential";
const CREDENTIAL_TYP = "skytale-agent+jwt";

/** Verifies `token` against the server's published JWKS the way the relay does. */
async function verifyAgainstJwks(base: string, token: string, currentDate?: Date) {
  const jwks = createRemoteJWKSet(new URL(`${base}/.well-known/jwks.json`));
  return jwtVerify(token, jwks, { issuer: ISSUER, audience: AUDIENCE, typ: "JWT", algorithms: ["EdDSA"], currentDate });
}

/** Verifies an agent credential against the JWKS the way a member does. */
async function verifyCredential(base: string, credential: string) {
  const jwks = createRemoteJWKSet(new URL(`${base}/.well-known/jwks.json`));
  return jwtVerify(credential, jwks, { issuer: ISSUER, audience: CREDENTIAL_AUDIENCE, typ: CREDENTIAL_TYP, algorithms: ["EdDSA"] });
}

/** The fingerprint the Rust core computes: first 40 hex chars of SHA-256(raw key), groups of 4. */
function expectedFingerprint(signatureKey: string): string {
  return createHash("sha256").update(Buffer.from(signatureKey, "base64url")).digest("hex").slice(0, 40).match(/.{4}/g)!.join(" ");
}

/** Declares the whole API suite for one backend. */
export function defineApiSuite(backend: Backend): void {
  describe(`api-server e2e on ${backend.name}`, () => {
    let db: TestDb;
    let server: ServerProcess;
    let base: string;
    /** Every plaintext key handed out, to search the tables and logs for later. */
    const plaintextKeys: string[] = [];
    /** Ids of API keys revoked during the run (they must be in the revocation feed). */
    const revokedKeyIds: string[] = [];
    const earlier: { key: string; token: string; kid: string; accountId: string; org: string; identity: string }[] = [];

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
        expect.arrayContaining([
          "/v1/accounts",
          "/v1/accounts/me",
          "/v1/keys",
          "/v1/keys/{id}",
          "/v1/tokens",
          "/v1/agents",
          "/v1/agents/{identity}",
          "/v1/agents/{identity}/rotate",
          "/v1/revocations",
          "/v1/relays",
          "/.well-known/jwks.json",
        ]),
      );
      expect(openapi.body.paths["/v1/revocations"].get.parameters).toEqual([{ name: "since", in: "query", required: false, schema: expect.any(Object) }]);
      expect(openapi.body.paths["/v1/agents/{identity}/rotate"].post.security).toEqual([{ apiKey: [] }]);
      expect(openapi.body.paths["/v1/agents"].post.responses["201"]).toBeTruthy();
      const metrics = await call(base, "GET", "/metrics");
      expect(metrics.headers.get("content-type")).toMatch(/^text\/plain/);
      expect(metrics.body).toContain("skytale_api_http_requests_total");
      for (const m of ["credentials_issued", "agents_registered", "agents_revoked", "limits_fallbacks"]) expect(metrics.body).toContain(`skytale_api_${m}_total`);
      // Postgres counts limits in the database (shared by instances); PGlite in memory.
      expect(metrics.body).toContain(`skytale_api_limits_backend{backend="${backend.name === "postgres" ? "postgres" : "memory"}"} 1`);
    });

    it("publishes the relay addresses: GET /v1/relays, SKYTALE_RELAY_URL first", async () => {
      const r = await call(base, "GET", "/v1/relays");
      expect(r.status).toBe(200);
      expect(r.body).toEqual({ relays: [TEST_ENV.SKYTALE_RELAY_URL, "iroh://testrelay2@127.0.0.1:7444"] });
      expect(r.headers.get("cache-control")).toBe("public, max-age=60");
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

      const keyId: string = (await call(base, "GET", "/v1/keys", { key })).body.keys[0].id;
      await registerAgent(base, key, "planner");
      const t = await call(base, "POST", "/v1/tokens", { key, body: { identity: "planner" } });
      expect(t.status).toBe(200);
      expect(t.body.relay).toBe(TEST_ENV.SKYTALE_RELAY_URL);
      expect(t.body.relays).toEqual([TEST_ENV.SKYTALE_RELAY_URL, "iroh://testrelay2@127.0.0.1:7444"]);
      expect(t.body.identity).toBe("planner");
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
        identity: "planner",
        akid: keyId,
        jti: expect.any(String),
        iat: expect.any(Number),
        exp: (payload.iat as number) + 3600,
      } satisfies JWTPayload);
      expect(Math.abs((payload.iat as number) - Date.now() / 1000)).toBeLessThan(60);
      expect(t.body.expiresAt).toBe(new Date((payload.exp as number) * 1000).toISOString());

      const t2 = await call(base, "POST", "/v1/tokens", { key, body: { scope: "channels:r", identity: "planner" } });
      const p2 = (await verifyAgainstJwks(base, t2.body.token)).payload;
      expect(p2.scope).toBe("channels:r");
      expect(p2.jti).not.toBe(payload.jti);
      earlier.push({ key, token: t.body.token, kid: protectedHeader.kid!, accountId: r.body.account.id, org, identity: "planner" });
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
      expect(created.body).toEqual({ id: expect.stringMatching(/^key_/), prefix: created.body.key.slice(0, 20), name: "ci runner", role: "admin", identity: null, key: expect.stringMatching(/^sk_live_/) });
      const key2: string = created.body.key;
      plaintextKeys.push(key2);

      // Use key2 twice so the verified-key cache holds it, then revoke with the first key.
      await registerAgent(base, key, "ci");
      expect((await tokenFor(base, key2, "ci")).status).toBe(200);
      expect((await tokenFor(base, key2, "ci")).status).toBe(200);

      const list = await call(base, "GET", "/v1/keys", { key });
      expect(list.status).toBe(200);
      expect(list.body.keys).toHaveLength(2);
      const entry = list.body.keys.find((k: { id: string }) => k.id === created.body.id);
      expect(Object.keys(entry).sort()).toEqual(["createdAt", "id", "identity", "lastUsedAt", "name", "prefix", "role"]);
      expect(entry).toMatchObject({ role: "admin", identity: null });
      expect(entry.lastUsedAt).not.toBeNull();
      expect(JSON.stringify(list.body)).not.toContain(key2);

      const del = await call(base, "DELETE", `/v1/keys/${created.body.id}`, { key });
      expect(del.status).toBe(204);
      const after = await tokenFor(base, key2, "ci");
      expect(after.status).toBe(401);
      expect(after.body).toEqual({ error: { code: "SKYTALE_AUTH_KEY_REVOKED", message: expect.any(String) } });
      expect((await call(base, "GET", "/v1/keys", { key: key2 })).status).toBe(401);
      expect((await call(base, "GET", "/v1/keys", { key })).body.keys).toHaveLength(1);
      expect((await call(base, "DELETE", `/v1/keys/${created.body.id}`, { key })).body.error.code).toBe("SKYTALE_NOT_FOUND");
      revokedKeyIds.push(created.body.id);

      // Another account cannot see or revoke this account's keys.
      const other = await signup(base);
      plaintextKeys.push(other.key);
      const mine = (await call(base, "GET", "/v1/keys", { key })).body.keys[0].id;
      expect((await call(base, "DELETE", `/v1/keys/${mine}`, { key: other.key })).status).toBe(404);
      expect((await tokenFor(base, key, "ci")).status).toBe(200);
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
      expect([...bodies]).toEqual([JSON.stringify({ error: { code: "SKYTALE_AUTH_KEY_INVALID", message: "API key missing or invalid" } })]);
    });

    it("rejects bad input with SKYTALE_INVALID_REQUEST / SKYTALE_NOT_FOUND", async () => {
      const key = earlier[0]!.key;
      const bad = async (path: string, body: unknown, raw?: string, status = 400) => {
        const r = await call(base, "POST", path, { key, body, rawBody: raw });
        expect(r.status, `${path} ${raw ?? JSON.stringify(body)}`).toBe(status);
        expect(r.body.error.code).toBe("SKYTALE_INVALID_REQUEST");
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
      await bad("/v1/tokens", {}); // an admin key must name the identity
      await bad("/v1/tokens", { identity: "has space" });
      await bad("/v1/keys", { name: "x", identity: "a/b" });
      await bad("/v1/keys", { name: "x", identity: "x".repeat(65) });
      await bad("/v1/agents", { identity: "ok", signatureKey: Buffer.alloc(31).toString("base64url") });
      await bad("/v1/agents", { identity: "ok", signatureKey: Buffer.alloc(33).toString("base64url") });
      await bad("/v1/agents", { identity: "ok", signatureKey: Buffer.alloc(32).toString("base64") }); // padded
      await bad("/v1/agents", { identity: "ok", signatureKey: "A".repeat(42) + "B" }); // non-canonical last char
      await bad("/v1/agents", { identity: "", signatureKey: newSignatureKey() });
      await bad("/v1/agents", { identity: "ok", signatureKey: newSignatureKey(), org: "other" });
      await bad("/v1/agents/ok/rotate", { signatureKey: "short" });
      expect((await call(base, "GET", "/v1/revocations?since=-1")).body.error.code).toBe("SKYTALE_INVALID_REQUEST");
      expect((await call(base, "GET", "/v1/revocations?since=abc")).body.error.code).toBe("SKYTALE_INVALID_REQUEST");
      const del = await call(base, "DELETE", "/v1/keys/../../etc", { key });
      expect([400, 404]).toContain(del.status);
      expect((await call(base, "DELETE", "/v1/keys/not-a-key-id", { key })).body.error.code).toBe("SKYTALE_INVALID_REQUEST");
      expect((await call(base, "DELETE", `/v1/keys/key_${"A".repeat(22)}`, { key })).body.error.code).toBe("SKYTALE_NOT_FOUND");
      expect((await call(base, "DELETE", "/v1/agents/nobody", { key })).body.error.code).toBe("SKYTALE_NOT_FOUND");
      expect((await call(base, "POST", "/v1/agents/nobody/rotate", { key, body: { signatureKey: newSignatureKey() } })).body.error.code).toBe("SKYTALE_NOT_FOUND");
      expect((await call(base, "GET", "/v1/nothing")).body).toEqual({ error: { code: "SKYTALE_NOT_FOUND", message: expect.any(String) } });
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
        if (r.status === 409) expect(r.body.error.code).toBe("SKYTALE_CONFLICT");
        else plaintextKeys.push(r.body.apiKey);
      }
    });

    it("key roles: agent keys are bound to one identity and refused on admin routes", async () => {
      const admin = await signup(base);
      plaintextKeys.push(admin.key);
      const created = await call(base, "POST", "/v1/keys", { key: admin.key, body: { name: "bot a", identity: "bot-a@team.x" } });
      expect(created.status).toBe(201);
      expect(created.body).toMatchObject({ role: "agent", identity: "bot-a@team.x", name: "bot a" });
      const agentKey: string = created.body.key;
      plaintextKeys.push(agentKey);
      const listed = (await call(base, "GET", "/v1/keys", { key: admin.key })).body.keys;
      expect(listed.map((k: { role: string; identity: string | null }) => [k.role, k.identity])).toEqual([
        ["admin", null],
        ["agent", "bot-a@team.x"],
      ]);

      const forbidden = [
        await call(base, "GET", "/v1/keys", { key: agentKey }),
        await call(base, "POST", "/v1/keys", { key: agentKey, body: { name: "escalate" } }),
        await call(base, "POST", "/v1/keys", { key: agentKey, body: { name: "escalate", identity: "bot-a@team.x" } }),
        await call(base, "DELETE", `/v1/keys/${listed[0].id}`, { key: agentKey }),
        await call(base, "POST", "/v1/agents/bot-a@team.x/rotate", { key: agentKey, body: { signatureKey: newSignatureKey() } }),
        await call(base, "DELETE", "/v1/agents/bot-a@team.x", { key: agentKey }),
      ];
      for (const r of forbidden) expect(r.body, JSON.stringify(r.body)).toEqual({ error: { code: "SKYTALE_FORBIDDEN", message: expect.any(String) } });
      expect(forbidden.map((r) => r.status)).toEqual([403, 403, 403, 403, 403, 403]);
      expect((await call(base, "GET", "/v1/accounts/me", { key: agentKey })).status).toBe(200);

      // Not registered yet: no token.
      const early = await call(base, "POST", "/v1/tokens", { key: agentKey });
      expect(early.status).toBe(403);
      expect(early.body.error.code).toBe("SKYTALE_AGENT_NOT_REGISTERED");
      // Another identity: neither registration nor token.
      const other = await call(base, "POST", "/v1/agents", { key: agentKey, body: { identity: "bot-b", signatureKey: newSignatureKey() } });
      expect(other.status).toBe(403);
      expect(other.body.error.code).toBe("SKYTALE_AUTH_IDENTITY_FORBIDDEN");
      await registerAgent(base, admin.key, "bot-b");
      const otherToken = await call(base, "POST", "/v1/tokens", { key: agentKey, body: { identity: "bot-b" } });
      expect(otherToken.status).toBe(403);
      expect(otherToken.body.error.code).toBe("SKYTALE_AUTH_IDENTITY_FORBIDDEN");

      // Its own identity: registration, then a token that defaults to that identity.
      const reg = await call(base, "POST", "/v1/agents", { key: agentKey, body: { identity: "bot-a@team.x", signatureKey: newSignatureKey() } });
      expect(reg.status).toBe(201);
      const t = await call(base, "POST", "/v1/tokens", { key: agentKey });
      expect(t.status).toBe(200);
      expect(t.body.identity).toBe("bot-a@team.x");
      const { payload } = await verifyAgainstJwks(base, t.body.token);
      expect(payload).toMatchObject({ identity: "bot-a@team.x", akid: created.body.id, org: admin.org, sub: admin.accountId });
      expect((await call(base, "POST", "/v1/tokens", { key: agentKey, body: { identity: "bot-a@team.x", scope: "channels:r" } })).status).toBe(200);

      // An agent key lists only its own identity; the admin sees all.
      const mine = (await call(base, "GET", "/v1/agents", { key: agentKey })).body.agents;
      expect(mine.map((a: { identity: string }) => a.identity)).toEqual(["bot-a@team.x"]);
      const all = (await call(base, "GET", "/v1/agents", { key: admin.key })).body.agents;
      expect(all.map((a: { identity: string }) => a.identity)).toEqual(["bot-a@team.x", "bot-b"]);

      // Admin keys must name a registered identity of their own org.
      expect((await call(base, "POST", "/v1/tokens", { key: admin.key, body: { identity: "ghost" } })).body.error.code).toBe("SKYTALE_AGENT_NOT_REGISTERED");
      const stranger = await signup(base);
      plaintextKeys.push(stranger.key);
      expect((await call(base, "POST", "/v1/tokens", { key: stranger.key, body: { identity: "bot-b" } })).body.error.code).toBe("SKYTALE_AGENT_NOT_REGISTERED");
      expect((await call(base, "GET", "/v1/agents", { key: stranger.key })).body.agents).toEqual([]);
    });

    it("registration is first come; same key renews, another key is refused, an admin rotates; the credential has the agreed format", async () => {
      const admin = await signup(base);
      plaintextKeys.push(admin.key);
      const k1 = newSignatureKey();
      const first = await call(base, "POST", "/v1/agents", { key: admin.key, body: { identity: "analyst", signatureKey: k1 } });
      expect(first.status).toBe(201);
      expect(first.body).toEqual({
        identity: "analyst",
        org: admin.org,
        signatureKey: k1,
        fingerprint: expectedFingerprint(k1),
        credential: expect.any(String),
        expiresAt: expect.any(String),
      });
      expect(first.body.fingerprint).toMatch(/^([0-9a-f]{4} ){9}[0-9a-f]{4}$/);

      const jwks = (await call(base, "GET", "/.well-known/jwks.json")).body;
      const { payload, protectedHeader } = await verifyCredential(base, first.body.credential);
      expect(protectedHeader).toEqual({ alg: "EdDSA", typ: "skytale-agent+jwt", kid: jwks.keys[0].kid });
      expect(payload).toEqual({
        iss: ISSUER,
        aud: "skytale-agent-credential",
        sub: "analyst",
        identity: "analyst",
        org: admin.org,
        sig_key: k1,
        jti: expect.any(String),
        iat: expect.any(Number),
        exp: (payload.iat as number) + 30 * 24 * 3600,
      } satisfies JWTPayload);
      expect(Math.abs((payload.iat as number) - Date.now() / 1000)).toBeLessThan(60);
      expect(first.body.expiresAt).toBe(new Date((payload.exp as number) * 1000).toISOString());
      expect(Buffer.from(payload.sig_key as string, "base64url")).toHaveLength(32);

      // A credential is not a relay token, and a relay token is not a credential.
      await expect(verifyAgainstJwks(base, first.body.credential)).rejects.toMatchObject({ code: "ERR_JWT_CLAIM_VALIDATION_FAILED" });
      const token = (await tokenFor(base, admin.key, "analyst")).body.token as string;
      await expect(verifyCredential(base, token)).rejects.toMatchObject({ code: "ERR_JWT_CLAIM_VALIDATION_FAILED" });
      const jwksSet = createRemoteJWKSet(new URL(`${base}/.well-known/jwks.json`));
      await expect(jwtVerify(token, jwksSet, { audience: CREDENTIAL_AUDIENCE })).rejects.toMatchObject({ code: "ERR_JWT_CLAIM_VALIDATION_FAILED" });
      await expect(jwtVerify(first.body.credential, jwksSet, { audience: CREDENTIAL_AUDIENCE, typ: "JWT" })).rejects.toMatchObject({ code: "ERR_JWT_CLAIM_VALIDATION_FAILED" });

      // Same key again: renewal (200) with a fresh credential.
      const again = await call(base, "POST", "/v1/agents", { key: admin.key, body: { identity: "analyst", signatureKey: k1 } });
      expect(again.status).toBe(200);
      expect((await verifyCredential(base, again.body.credential)).payload.jti).not.toBe(payload.jti);
      // Another key: refused, even for an admin.
      const k2 = newSignatureKey();
      const clash = await call(base, "POST", "/v1/agents", { key: admin.key, body: { identity: "analyst", signatureKey: k2 } });
      expect(clash.status).toBe(409);
      expect(clash.body.error.code).toBe("SKYTALE_AGENT_KEY_MISMATCH");
      // Rotation by the admin switches the key; the old one is now the mismatch.
      const rotated = await call(base, "POST", "/v1/agents/analyst/rotate", { key: admin.key, body: { signatureKey: k2 } });
      expect(rotated.status).toBe(200);
      expect(rotated.body).toMatchObject({ identity: "analyst", org: admin.org, signatureKey: k2, fingerprint: expectedFingerprint(k2) });
      expect((await verifyCredential(base, rotated.body.credential)).payload.sig_key).toBe(k2);
      expect((await call(base, "POST", "/v1/agents", { key: admin.key, body: { identity: "analyst", signatureKey: k1 } })).body.error.code).toBe("SKYTALE_AGENT_KEY_MISMATCH");
      expect((await call(base, "POST", "/v1/agents", { key: admin.key, body: { identity: "analyst", signatureKey: k2 } })).status).toBe(200);

      const listed = (await call(base, "GET", "/v1/agents", { key: admin.key })).body.agents;
      expect(listed).toEqual([
        { identity: "analyst", signatureKey: k2, fingerprint: expectedFingerprint(k2), status: "active", createdAt: expect.any(String), revokedAt: null },
      ]);
      // The same identity in another org is a different agent.
      const other = await signup(base);
      plaintextKeys.push(other.key);
      expect((await registerAgent(base, other.key, "analyst", k1)).status).toBe(201);
    });

    it("revocation: agent and key revocations reach the public feed, with a cursor; rotate restores an agent", async () => {
      const admin = await signup(base);
      plaintextKeys.push(admin.key);
      const start = await call(base, "GET", "/v1/revocations");
      expect(start.status).toBe(200);
      expect(start.body).toEqual({ cursor: expect.any(Number), apiKeys: expect.any(Array), agents: expect.any(Array) });
      const cursor0: number = start.body.cursor;
      expect(await call(base, "GET", `/v1/revocations?since=${cursor0}`)).toMatchObject({ status: 200, body: { cursor: cursor0, apiKeys: [], agents: [] } });

      const agentKey = (await call(base, "POST", "/v1/keys", { key: admin.key, body: { name: "w", identity: "writer" } })).body;
      plaintextKeys.push(agentKey.key);
      await registerAgent(base, agentKey.key, "writer");
      expect((await call(base, "POST", "/v1/tokens", { key: agentKey.key })).status).toBe(200);

      const before = Math.floor(Date.now() / 1000);
      expect((await call(base, "DELETE", "/v1/agents/writer", { key: admin.key })).status).toBe(204);
      expect((await call(base, "DELETE", "/v1/agents/writer", { key: admin.key })).status).toBe(204); // idempotent, no second entry
      const denied = await call(base, "POST", "/v1/tokens", { key: agentKey.key });
      expect(denied.status).toBe(403);
      expect(denied.body.error.code).toBe("SKYTALE_AGENT_REVOKED");
      const reReg = await call(base, "POST", "/v1/agents", { key: agentKey.key, body: { identity: "writer", signatureKey: newSignatureKey() } });
      expect(reReg.status).toBe(409);
      expect(reReg.body.error.code).toBe("SKYTALE_AGENT_REVOKED");
      const listed = (await call(base, "GET", "/v1/agents", { key: admin.key })).body.agents[0];
      expect(listed).toMatchObject({ identity: "writer", status: "revoked", revokedAt: expect.any(String) });

      const feed1 = await call(base, "GET", `/v1/revocations?since=${cursor0}`);
      expect(feed1.body.apiKeys).toEqual([]);
      expect(feed1.body.agents).toEqual([{ org: admin.org, identity: "writer", revokedAt: expect.any(Number) }]);
      expect(feed1.body.agents[0].revokedAt).toBeGreaterThanOrEqual(before - 1);
      expect(feed1.body.agents[0].revokedAt).toBeLessThanOrEqual(Math.ceil(Date.now() / 1000));
      expect(feed1.body.cursor).toBeGreaterThan(cursor0);

      expect((await call(base, "DELETE", `/v1/keys/${agentKey.id}`, { key: admin.key })).status).toBe(204);
      revokedKeyIds.push(agentKey.id);
      const feed2 = await call(base, "GET", `/v1/revocations?since=${feed1.body.cursor}`);
      expect(feed2.body).toEqual({ cursor: feed1.body.cursor + 1, apiKeys: [{ id: agentKey.id, revokedAt: expect.any(Number) }], agents: [] });
      const whole = await call(base, "GET", "/v1/revocations?since=0");
      expect(whole.body.cursor).toBe(feed2.body.cursor);
      expect(whole.body.apiKeys.map((k: { id: string }) => k.id)).toEqual(expect.arrayContaining([...revokedKeyIds]));
      // A cursor from the future (another or a reset database) comes back lower.
      expect((await call(base, "GET", "/v1/revocations?since=999999999")).body.cursor).toBe(feed2.body.cursor);

      // Only an admin rotate brings the identity back.
      const rotated = await call(base, "POST", "/v1/agents/writer/rotate", { key: admin.key, body: { signatureKey: newSignatureKey() } });
      expect(rotated.status).toBe(200);
      expect((await call(base, "GET", "/v1/agents", { key: admin.key })).body.agents[0]).toMatchObject({ status: "active", revokedAt: null });
      expect((await tokenFor(base, admin.key, "writer")).status).toBe(200);
    });

    it("concurrent first registrations of one identity: exactly one wins", async () => {
      const admin = await signup(base);
      plaintextKeys.push(admin.key);
      const different = await Promise.all(
        Array.from({ length: 8 }, () => call(base, "POST", "/v1/agents", { key: admin.key, body: { identity: "race", signatureKey: newSignatureKey() } })),
      );
      expect(different.map((r) => r.status).sort()).toEqual([201, 409, 409, 409, 409, 409, 409, 409]);
      for (const r of different) if (r.status === 409) expect(r.body.error.code).toBe("SKYTALE_AGENT_KEY_MISMATCH");
      const winner = different.find((r) => r.status === 201)!.body.signatureKey;
      expect((await call(base, "GET", "/v1/agents", { key: admin.key })).body.agents).toMatchObject([{ identity: "race", signatureKey: winner }]);

      const k = newSignatureKey();
      const same = await Promise.all(
        Array.from({ length: 8 }, () => call(base, "POST", "/v1/agents", { key: admin.key, body: { identity: "race-2", signatureKey: k } })),
      );
      expect(same.map((r) => r.status).sort()).toEqual([200, 200, 200, 200, 200, 200, 200, 201]);
    });

    it("stores no plaintext key, logs none, and after a restart keys, agents and old tokens work", async () => {
      expect(await server.stop()).toBe(0);
      const log = server.output();
      expect(log).toContain('"url":"/v1/tokens"'); // requests are logged, so the check below means something
      const rows = await db.dumpAllRows();
      expect(rows).toContain("$argon2id$v=19$m=1024,t=1,p=1$");
      // The agent event log is append-only and records every kind of change.
      for (const e of ["registered", "renewed", "rotated", "revoked"]) expect(rows).toContain(`"event":"${e}"`);
      for (const k of plaintextKeys) {
        const secretPart = k.slice(20); // everything after the public lookup prefix
        expect(rows).not.toContain(secretPart);
        expect(log).not.toContain(secretPart);
      }

      server = await spawnServer(db.env);
      base = server.url;
      const { key, token, kid, accountId, org, identity } = earlier[0]!;
      const verified = await verifyAgainstJwks(base, token);
      expect(verified.protectedHeader.kid).toBe(kid);
      const t = await tokenFor(base, key, identity);
      expect(t.status).toBe(200);
      const fresh = await verifyAgainstJwks(base, t.body.token);
      expect(fresh.protectedHeader.kid).toBe(kid);
      expect(fresh.payload).toMatchObject({ sub: accountId, org, identity });
      // The registry and the revocation feed survived the restart too.
      expect((await call(base, "GET", "/v1/agents", { key })).body.agents.map((a: { identity: string }) => a.identity)).toContain(identity);
      const feed = await call(base, "GET", "/v1/revocations");
      expect(feed.body.apiKeys.map((k: { id: string }) => k.id)).toEqual(expect.arrayContaining(revokedKeyIds));
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
        expect(r.body).toEqual({ error: { code: "SKYTALE_RATE_LIMITED", message: expect.any(String) } });
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
        expect(r.body.error.code).toBe("SKYTALE_RATE_LIMITED");

        await registerAgent(limited.url, a.key, "worker");
        for (let i = 0; i < 3; i++) expect((await tokenFor(limited.url, a.key, "worker", { headers: ip(10 + i) })).status).toBe(200);
        const over = await tokenFor(limited.url, a.key, "worker", { headers: ip(20) });
        expect(over.status).toBe(429);
        expect(over.body.error.code).toBe("SKYTALE_RATE_LIMITED");
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
