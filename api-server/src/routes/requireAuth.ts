// routes/requireAuth.ts — owns the hook that authenticates a request's API key before validation.

import type { FastifyReply, FastifyRequest } from "fastify";
import type { AuthContext } from "../auth/authenticator.js";
import type { Services } from "../services.js";

/** Builds a preValidation hook that sets `req.auth` or answers 401/429. */
export function requireAuth(s: Services): (req: FastifyRequest, reply: FastifyReply) => Promise<void> {
  return async (req) => {
    req.auth = await s.auth.authenticate(req.headers.authorization, req.ip);
  };
}

/** The auth context of a request that passed {@link requireAuth}. */
export function authOf(req: FastifyRequest): AuthContext {
  if (!req.auth) throw new Error("route is missing requireAuth");
  return req.auth;
}
