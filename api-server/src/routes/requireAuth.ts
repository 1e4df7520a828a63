// routes/requireAuth.ts — owns the hook that authenticates a request's API key before validation,
// the admin-only check and the agent-key identity check.

import type { FastifyReply, FastifyRequest } from "fastify";
import type { AuthContext } from "../auth/authenticator.js";
import { errors } from "../errors.js";
import type { Services } from "../services.js";

/**
 * Builds a preValidation hook that sets `req.auth` or answers 401/429; with `"admin"`, an agent
 * key is refused with 403 `SKYTALE_FORBIDDEN`. `beforeArgon2` runs only when the key must be
 * hashed (see `Authenticator.authenticate`).
 */
export function requireAuth(
  s: Services,
  role?: "admin",
  beforeArgon2?: (prefix: string) => Promise<void>,
): (req: FastifyRequest, reply: FastifyReply) => Promise<void> {
  return async (req) => {
    req.auth = await s.auth.authenticate(req.headers.authorization, req.ip, beforeArgon2);
    if (role === "admin" && req.auth.role !== "admin") throw errors.forbidden();
  };
}

/** The auth context of a request that passed {@link requireAuth}. */
export function authOf(req: FastifyRequest): AuthContext {
  if (!req.auth) throw new Error("route is missing requireAuth");
  return req.auth;
}

/** An agent key may act only for its bound identity (else 403 `SKYTALE_AUTH_IDENTITY_FORBIDDEN`). */
export function assertMayActAs(a: AuthContext, identity: string): void {
  if (a.role !== "admin" && a.identity !== identity) throw errors.identityForbidden();
}
