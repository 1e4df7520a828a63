// signing/jwt.ts — owns the one way this server signs a JWT: EdDSA with the ring's current key,
// `kid` in the header, `iat`/`exp` from an injectable clock, a random 128-bit `jti`.

import { randomBytes } from "node:crypto";
import { SignJWT, type JWTPayload } from "jose";
import type { KeyRing } from "./keyRing.js";

/** What every signed JWT has besides its own claims. */
export interface JwtFrame {
  typ: string;
  issuer: string;
  audience: string;
  subject: string;
  ttlSeconds: number;
  /** Clock in ms (defaults to `Date.now()`). */
  now?: number | undefined;
}

/** Signs `claims` plus `iss`, `aud`, `sub`, `jti`, `iat`, `exp = iat + ttlSeconds`. */
export async function signJwt(ring: KeyRing, frame: JwtFrame, claims: JWTPayload): Promise<{ jwt: string; jti: string; expiresAt: Date }> {
  const iat = Math.floor((frame.now ?? Date.now()) / 1000);
  const exp = iat + frame.ttlSeconds;
  const jti = randomBytes(16).toString("base64url");
  const jwt = await new SignJWT(claims)
    .setProtectedHeader({ alg: "EdDSA", typ: frame.typ, kid: ring.signer.kid })
    .setIssuer(frame.issuer)
    .setAudience(frame.audience)
    .setSubject(frame.subject)
    .setJti(jti)
    .setIssuedAt(iat)
    .setExpirationTime(exp)
    .sign(ring.signer.privateKey);
  return { jwt, jti, expiresAt: new Date(exp * 1000) };
}
