// signing/tokens.ts — owns relay token issuance: EdDSA JWTs with the claims the relay checks.

import { signJwt } from "./jwt.js";
import type { KeyRing } from "./keyRing.js";

/** Scopes a token can carry. */
export const SCOPES = ["channels:rw", "channels:r"] as const;
export type Scope = (typeof SCOPES)[number];

/** What the token says about its holder. */
export interface TokenSubject {
  accountId: string;
  org: string;
  scope: Scope;
  /** The registered agent identity the token acts as. */
  identity: string;
  /** Id of the API key the token was issued to (so the relay can honour key revocations). */
  apiKeyId: string;
}

/** A signed token and its expiry. */
export interface IssuedToken {
  token: string;
  jti: string;
  expiresAt: Date;
}

/**
 * Signs a relay token: header `{alg:"EdDSA", typ:"JWT", kid}`, claims `iss`, `aud`, `sub`, `org`,
 * `scope`, `identity`, `akid` (API key id), `jti`, `iat`, `exp = iat + ttlSeconds`.
 */
export async function issueToken(
  ring: KeyRing,
  opts: { issuer: string; audience: string; ttlSeconds: number; now?: number },
  subject: TokenSubject,
): Promise<IssuedToken> {
  const { jwt, jti, expiresAt } = await signJwt(
    ring,
    { typ: "JWT", issuer: opts.issuer, audience: opts.audience, subject: subject.accountId, ttlSeconds: opts.ttlSeconds, now: opts.now },
    { org: subject.org, scope: subject.scope, identity: subject.identity, akid: subject.apiKeyId },
  );
  return { token: jwt, jti, expiresAt };
}
