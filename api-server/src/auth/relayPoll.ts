// auth/relayPoll.ts — owns how a relay proves that a poll of the revocation feed is its own: it
// signs context, cursor and its clock with its iroh endpoint key (Ed25519), and the relays this
// server hands out (`SKYTALE_RELAY_URL(S)`, `iroh://<endpoint-id>@host:port`) are the public keys.
// A valid poll is rate-limited in the relay's own bucket instead of its IP address's, so agents
// sharing the relay's address cannot starve it (and delay revocations). The feed stays public:
// a missing, stale, forged or unknown signature only means the poll counts against its IP.

import { createPublicKey, verify, type KeyObject } from "node:crypto";

/** Domain separation of the poll signature (the relay's `revocations::POLL_CONTEXT`). */
export const RELAY_POLL_CONTEXT = "skytale-revocations-poll/v1";

/** How far a poll's time may be from this server's clock. */
export const RELAY_POLL_SKEW_MS = 60_000;

/** The Ed25519 public keys of the given relay addresses, by hex endpoint id (others are skipped). */
export function relayPollKeys(relays: readonly string[]): Map<string, KeyObject> {
  const keys = new Map<string, KeyObject>();
  for (const relay of relays) {
    const id = /^iroh:\/\/([0-9a-f]{64})@/.exec(relay.trim())?.[1];
    if (!id || keys.has(id)) continue;
    try {
      const x = Buffer.from(id, "hex").toString("base64url");
      keys.set(id, createPublicKey({ key: { kty: "OKP", crv: "Ed25519", x }, format: "jwk" }));
    } catch {
      // Not a key node accepts: this relay's polls count against its IP.
    }
  }
  return keys;
}

type Headers = Record<string, string | string[] | undefined>;

function one(headers: Headers, name: string): string | undefined {
  const v = headers[name];
  return typeof v === "string" ? v : undefined;
}

/**
 * The endpoint id of the listed relay whose valid signature the poll carries (over
 * `${RELAY_POLL_CONTEXT}\n${since}\n${time}` with `time` within {@link RELAY_POLL_SKEW_MS} of
 * `nowMs`), or null.
 */
export function pollingRelay(headers: Headers, since: string, keys: ReadonlyMap<string, KeyObject>, nowMs: number): string | null {
  const id = one(headers, "x-skytale-relay-id");
  const time = one(headers, "x-skytale-relay-time");
  const sig = one(headers, "x-skytale-relay-sig");
  if (!id || !time || !sig || !/^[0-9]{1,15}$/.test(time) || !/^[0-9a-f]{128}$/.test(sig)) return null;
  const key = keys.get(id);
  if (!key || Math.abs(nowMs - Number(time)) > RELAY_POLL_SKEW_MS) return null;
  const message = Buffer.from(`${RELAY_POLL_CONTEXT}\n${since}\n${time}`);
  try {
    return verify(null, message, key, Buffer.from(sig, "hex")) ? id : null;
  } catch {
    return null;
  }
}
