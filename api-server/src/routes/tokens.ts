// routes/tokens.ts — owns POST /v1/tokens: API key + registered identity in, 1-hour EdDSA relay
// token and the relay addresses out.

import type { FastifyInstance } from "fastify";
import { ApiError, errors } from "../errors.js";
import type { Services } from "../services.js";
import { issueToken, SCOPES, type Scope } from "../signing/tokens.js";
import { assertMayActAs, authOf, requireAuth } from "./requireAuth.js";
import { findAgent } from "../store/agents.js";
import { identitySchema } from "./schemas.js";
import { relayList } from "../config.js";

/** Registers the token route. */
export function registerTokenRoutes(app: FastifyInstance, s: Services): void {
  // Per-key quota: once exceeded, a key that would need Argon2id is refused before hashing; only
  // successes count, taken atomically just before issuing (so racing instances cannot exceed it).
  const auth = requireAuth(s, undefined, async (prefix) => {
    const wait = await s.tokensPerKey.blockedFor(prefix);
    if (wait > 0) {
      s.metrics.rateLimited.inc({ limiter: "tokens_per_key" });
      throw errors.rateLimited(wait);
    }
  });
  const relays = relayList(s.config);
  app.post<{ Body: { scope?: Scope; identity?: string } | undefined }>(
    "/v1/tokens",
    {
      preValidation: auth,
      config: {
        bearer: true,
        summary: "Exchange an API key for a relay token (EdDSA JWT, 1 hour) for a registered agent identity",
        rateLimit: { max: s.config.rateLimits.tokensPerIp, timeWindow: 60_000 },
      },
      schema: {
        body: {
          type: ["object", "null"],
          additionalProperties: false,
          properties: { scope: { type: "string", enum: [...SCOPES] }, identity: identitySchema },
        },
        response: {
          200: {
            type: "object",
            properties: {
              token: { type: "string" },
              expiresAt: { type: "string" },
              relay: { type: ["string", "null"] },
              relays: { type: "array", items: { type: "string" } },
              identity: { type: "string" },
            },
            required: ["token", "expiresAt", "relay", "relays", "identity"],
          },
        },
      },
    },
    async (req) => {
      const a = authOf(req);
      // Agent keys default to (and may only use) their bound identity; admin keys must name one.
      const identity = req.body?.identity ?? a.identity;
      if (!identity) throw errors.invalid("identity is required with an admin API key");
      assertMayActAs(a, identity);
      const agent = await findAgent(s.db, a.org, identity);
      if (!agent) throw new ApiError(403, "SKYTALE_AGENT_NOT_REGISTERED", "identity is not a registered agent of this org");
      if (agent.status !== "active") throw new ApiError(403, "SKYTALE_AGENT_REVOKED", "identity has been revoked");
      const wait = await s.tokensPerKey.take(a.prefix);
      if (wait > 0) {
        s.metrics.rateLimited.inc({ limiter: "tokens_per_key" });
        throw errors.rateLimited(wait);
      }
      const issued = await issueToken(
        s.ring,
        { issuer: s.config.issuer, audience: s.config.audience, ttlSeconds: s.config.tokenTtlSeconds },
        { accountId: a.accountId, org: a.org, scope: req.body?.scope ?? "channels:rw", identity, apiKeyId: a.keyId },
      );
      s.metrics.tokensIssued.inc();
      return { token: issued.token, expiresAt: issued.expiresAt.toISOString(), relay: relays[0] ?? null, relays, identity };
    },
  );
}
