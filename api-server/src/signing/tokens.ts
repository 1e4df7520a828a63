// signing/tokens.ts — owns relay token issuance: EdDSA JWTs with the claims the relay checks.

import { randomBytes } from "node:crypto";
import { SignJWT } from "jose";
import type { KeyRing } from "./keyRing.js";

/** Scopes a token can carry. */
export const SCOPES = ["channels:rw", "channels:r"] as const;
export type Scope = (typeof SCOPES)[number];

/** What the token says about its holder. */
export interface TokenSubject {
  accountId: string;
  org: string;
  scope: Scope;
}

/** A signed token and its expiry. */
export interface IssuedToken {
  token: string;
  jti: string;
  expiresAt: Date;
}

/**
 * Signs a relay token: header `{alg:"EdDSA", typ:"JWT", kid}`, claims `iss`, `aud`, `sub`, `org`,
 * `scope`, `jti`, `iat`, `exp = iat + ttlSeconds`.
 */
export async function issueToken(
  ring: KeyRing,
  opts: { issuer: string; audience: string; ttlSeconds: number; now?: number },
  subject: TokenSubject,
): Promise<IssuedToken> {
  const iat = Math.floor((opts.now ?? Date.now()) / 1000);
  const exp = iat + opts.ttlSeconds;
  const jti = randomBytes(16).toString("base64url");
  const token = await new SignJWT({ org: subject.org, scope: subject.scope })
    .setProtectedHeader({ alg: "EdDSA", typ: "JWT", kid: ring.signer.kid })
    .setIssuer(opts.issuer)
    .setAudience(opts.audience)
    .setSubject(subject.accountId)
    .setJti(jti)
    .setIssuedAt(iat)
    .setExpirationTime(exp)
    .sign(ring.signer.privateKey);
  return { token, jti, expiresAt: new Date(exp * 1000) };
}
