// test/relayPoll.test.ts — a relay's signed poll of the revocation feed: the signature check
// (the same vector as the relay's `revocations::tests`, so both sides sign the same bytes) and,
// on the real server, that a listed relay's poll has its own rate-limit bucket while unsigned,
// forged, stale or unlisted polls from the same address are limited together.

import { createPrivateKey, createPublicKey, sign, type KeyObject } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { pollingRelay, relayPollKeys, RELAY_POLL_CONTEXT, RELAY_POLL_SKEW_MS } from "../src/auth/relayPoll.js";
import { pgliteBackend, type TestDb } from "./helpers/backends.js";
import { call } from "./helpers/http.js";
import { spawnServer, type ServerProcess } from "./helpers/server.js";

/** The Ed25519 key whose 32-byte seed is all 7s (the relay test's key). */
function keyFromSeed(byte: number): KeyObject {
  const der = Buffer.concat([Buffer.from("302e020100300506032b657004220420", "hex"), Buffer.alloc(32, byte)]);
  return createPrivateKey({ key: der, format: "der", type: "pkcs8" });
}

function endpointId(key: KeyObject): string {
  const jwk = createPublicKey(key).export({ format: "jwk" });
  return Buffer.from(jwk.x!, "base64url").toString("hex");
}

function signedHeaders(key: KeyObject, since: string, time: number): Record<string, string> {
  const sig = sign(null, Buffer.from(`${RELAY_POLL_CONTEXT}\n${since}\n${time}`), key).toString("hex");
  return { "x-skytale-relay-id": endpointId(key), "x-skytale-relay-time": String(time), "x-skytale-relay-sig": sig };
}

const RELAY_ID = "ea4a6c63e29c520abef5507b132ec5f9954776aebebe7b92421eea691446d22c";
const VECTOR = {
  "x-skytale-relay-id": RELAY_ID,
  "x-skytale-relay-time": "1700000000000",
  "x-skytale-relay-sig":
    "43c45b66c5861969506ea1c68a7b8a1750df4033420e46ff6e1bb366b6ff18399dccdc3aa0a440013741dc01194082abeec66b63d2ae77e9ca263f2ff9f6900d",
};

describe("relay poll signatures", () => {
  const keys = relayPollKeys([`iroh://${RELAY_ID}@127.0.0.1:7443`, "iroh://testrelay@127.0.0.1:7444"]);
  const t = 1_700_000_000_000;

  it("accepts the relay's own vector and nothing changed from it", () => {
    expect(endpointId(keyFromSeed(7))).toBe(RELAY_ID);
    expect(keys.size).toBe(1);
    expect(pollingRelay(VECTOR, "42", keys, t)).toBe(RELAY_ID);
    expect(pollingRelay(VECTOR, "42", keys, t + RELAY_POLL_SKEW_MS)).toBe(RELAY_ID);
    expect(pollingRelay(VECTOR, "43", keys, t), "another cursor").toBeNull();
    expect(pollingRelay(VECTOR, "42", keys, t + RELAY_POLL_SKEW_MS + 1), "stale").toBeNull();
    expect(pollingRelay(VECTOR, "42", keys, t - RELAY_POLL_SKEW_MS - 1), "from the future").toBeNull();
    expect(pollingRelay({ ...VECTOR, "x-skytale-relay-time": "1700000000001" }, "42", keys, t), "re-dated").toBeNull();
    const flipped = VECTOR["x-skytale-relay-sig"].replace(/^4/, "5");
    expect(pollingRelay({ ...VECTOR, "x-skytale-relay-sig": flipped }, "42", keys, t), "forged").toBeNull();
    expect(pollingRelay(VECTOR, "42", new Map(), t), "unlisted relay").toBeNull();
    expect(pollingRelay(signedHeaders(keyFromSeed(8), "42", t), "42", keys, t), "another key").toBeNull();
    for (const bad of [{}, { ...VECTOR, "x-skytale-relay-sig": "zz" }, { ...VECTOR, "x-skytale-relay-time": "-1" }, { ...VECTOR, "x-skytale-relay-id": ["a", "b"] }]) {
      expect(pollingRelay(bad, "42", keys, t)).toBeNull();
    }
  });
});

describe("the revocation feed's rate limit on the real server", () => {
  let db: TestDb;
  let server: ServerProcess;
  const relayKey = keyFromSeed(7);

  beforeAll(async () => {
    db = await pgliteBackend.create();
    server = await spawnServer({
      ...db.env,
      LOG_LEVEL: "warn",
      SKYTALE_LIMITS_BACKEND: "memory",
      SKYTALE_RATE_REVOCATIONS_PER_IP: "2",
      SKYTALE_RATE_REVOCATIONS_PER_RELAY: "2",
      SKYTALE_RELAY_URL: `iroh://${RELAY_ID}@127.0.0.1:7443`,
      SKYTALE_RELAY_URLS: "",
    });
  });
  afterAll(async () => {
    await server?.stop();
    await db?.destroy();
  });

  it("a listed relay's signed poll has its own bucket; agents on its address cannot starve it", async () => {
    const poll = (headers?: Record<string, string>) => call(server.url, "GET", "/v1/revocations?since=0", { headers });
    // Agents on the relay's address use up the per-IP allowance...
    expect((await poll()).status).toBe(200);
    expect((await poll()).status).toBe(200);
    expect((await poll()).status).toBe(429);
    // ...and whatever does not carry the listed relay's valid signature is limited with them.
    const now = Date.now();
    const forged = { ...signedHeaders(relayKey, "0", now), "x-skytale-relay-sig": signedHeaders(relayKey, "1", now)["x-skytale-relay-sig"]! };
    expect((await poll(forged)).status).toBe(429);
    expect((await poll(signedHeaders(relayKey, "0", now - 2 * RELAY_POLL_SKEW_MS))).status).toBe(429);
    expect((await poll(signedHeaders(keyFromSeed(8), "0", now))).status).toBe(429);
    // The relay's own polls still get through (its own bucket, here of the same size).
    const first = await poll(signedHeaders(relayKey, "0", Date.now()));
    expect(first.status).toBe(200);
    expect(first.body).toMatchObject({ apiKeys: [], agents: [] });
    expect((await poll(signedHeaders(relayKey, "0", Date.now()))).status).toBe(200);
    expect((await poll(signedHeaders(relayKey, "0", Date.now()))).status).toBe(429);
  });
});
