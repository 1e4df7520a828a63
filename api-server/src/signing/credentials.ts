// signing/credentials.ts — owns agent credentials: compact EdDSA JWS binding org, identity and MLS
// signature key, signed by the current key of the token key ring (so they verify with the JWKS);
// also the identity syntax, signature key encoding and fingerprint shared with the Rust core.

import { createHash } from "node:crypto";
import { signJwt } from "./jwt.js";
import type { KeyRing } from "./keyRing.js";

/** JWS `typ` of an agent credential (a relay token has `JWT`). */
export const CREDENTIAL_TYP = "skytale-agent+jwt";
/** `aud` of an agent credential (a relay token has `skytale-relay`). */
export const CREDENTIAL_AUDIENCE = "skytale-agent-credential";
/** Agent identity: 1–64 of `[A-Za-z0-9._@-]` (the relay's rule). */
export const IDENTITY_PATTERN = "^[A-Za-z0-9._@-]{1,64}$";
/** base64url without padding of 32 bytes (the shape; {@link decodeSignatureKey} checks it fully). */
export const SIGNATURE_KEY_PATTERN = "^[A-Za-z0-9_-]{43}$";

/**
 * The raw 32-byte Ed25519 public key in `b64` (base64url, no padding), or null when `b64` is not
 * the canonical encoding of exactly 32 bytes.
 */
export function decodeSignatureKey(b64: string): Buffer | null {
  if (!new RegExp(SIGNATURE_KEY_PATTERN).test(b64)) return null;
  const raw = Buffer.from(b64, "base64url");
  return raw.length === 32 && raw.toString("base64url") === b64 ? raw : null;
}

/**
 * Human-comparable fingerprint of a signature key: lowercase hex SHA-256 of the raw 32 bytes, the
 * first 40 hex characters in 10 groups of 4 joined by single spaces ("a1b2 c3d4 …").
 */
export function fingerprint(raw: Uint8Array): string {
  const hex = createHash("sha256").update(raw).digest("hex").slice(0, 40);
  return hex.match(/.{4}/g)!.join(" ");
}

/** What a credential vouches for. */
export interface CredentialSubject {
  org: string;
  identity: string;
  /** base64url (no padding) of the raw 32-byte Ed25519 MLS signature public key. */
  signatureKey: string;
}

/** A signed credential and its expiry. */
export interface IssuedCredential {
  credential: string;
  jti: string;
  expiresAt: Date;
}

/**
 * Signs an agent credential: header `{alg:"EdDSA", typ:"skytale-agent+jwt", kid}`, claims `iss`,
 * `aud:"skytale-agent-credential"`, `sub` = `identity` = the identity, `org`, `sig_key`, `iat`,
 * `exp = iat + ttlSeconds`, `jti` (random 128 bits).
 */
export async function issueCredential(
  ring: KeyRing,
  opts: { issuer: string; ttlSeconds: number; now?: number },
  subject: CredentialSubject,
): Promise<IssuedCredential> {
  const { jwt, jti, expiresAt } = await signJwt(
    ring,
    { typ: CREDENTIAL_TYP, issuer: opts.issuer, audience: CREDENTIAL_AUDIENCE, subject: subject.identity, ttlSeconds: opts.ttlSeconds, now: opts.now },
    { identity: subject.identity, org: subject.org, sig_key: subject.signatureKey },
  );
  return { credential: jwt, jti, expiresAt };
}
