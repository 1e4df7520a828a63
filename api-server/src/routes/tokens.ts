// routes/tokens.ts — owns POST /v1/tokens: API key in, 1-hour EdDSA relay token out.

import type { FastifyInstance } from "fastify";
import { errors } from "../errors.js";
import type { Services } from "../services.js";
import { issueToken, SCOPES, type Scope } from "../signing/tokens.js";
import { authOf, requireAuth } from "./requireAuth.js";
import { isWellFormedKey, lookupPrefix } from "../auth/apiKey.js";
import { bearerKey } from "../auth/authenticator.js";

/** Registers the token route. */
export function registerTokenRoutes(app: FastifyInstance, s: Services): void {
  const auth = requireAuth(s);
  app.post<{ Body: { scope?: Scope } | undefined }>(
    "/v1/tokens",
    {
      // Per-key quota: refused before any Argon2 work once exceeded; only successes count.
      onRequest: async (req) => {
        const key = bearerKey(req.headers.authorization);
        if (!isWellFormedKey(key)) return;
        const wait = s.tokensPerKey.blockedFor(lookupPrefix(key));
        if (wait > 0) {
          s.metrics.rateLimited.inc({ limiter: "tokens_per_key" });
          throw errors.rateLimited(wait);
        }
      },
      preValidation: auth,
      config: {
        bearer: true,
        summary: "Exchange an API key for a relay token (EdDSA JWT, 1 hour)",
        rateLimit: { max: s.config.rateLimits.tokensPerIp, timeWindow: 60_000 },
      },
      schema: {

        body: {
          type: ["object", "null"],
          additionalProperties: false,
          properties: { scope: { type: "string", enum: [...SCOPES] } },
        },
        response: {
          200: {
            type: "object",
            properties: { token: { type: "string" }, expiresAt: { type: "string" }, relay: { type: ["string", "null"] } },
            required: ["token", "expiresAt", "relay"],
          },
        },
      },
    },
    async (req) => {
      const a = authOf(req);
      s.tokensPerKey.hit(a.prefix);
      const issued = await issueToken(
        s.ring,
        { issuer: s.config.issuer, audience: s.config.audience, ttlSeconds: s.config.tokenTtlSeconds },
        { accountId: a.accountId, org: a.org, scope: req.body?.scope ?? "channels:rw" },
      );
      s.metrics.tokensIssued.inc();
      return { token: issued.token, expiresAt: issued.expiresAt.toISOString(), relay: s.config.relayUrl };
    },
  );
}
