// routes/public.ts — owns the unauthenticated routes: JWKS, relay addresses, health, metrics.

import type { FastifyInstance } from "fastify";
import { relayList } from "../config.js";
import type { Services } from "../services.js";
import { jwks } from "../signing/keyRing.js";

/** Registers /.well-known/jwks.json, /v1/relays, /health and /metrics. */
export function registerPublicRoutes(app: FastifyInstance, s: Services): void {
  const relays = relayList(s.config);
  app.get(
    "/v1/relays",
    {
      config: { summary: "Relay addresses clients may connect to, preferred first (the token answer carries the same list)" },
      schema: {
        response: {
          200: { type: "object", required: ["relays"], properties: { relays: { type: "array", items: { type: "string" } } } },
        },
      },
    },
    async (_req, reply) => {
      void reply.header("cache-control", "public, max-age=60");
      return { relays };
    },
  );

  app.get(
    "/.well-known/jwks.json",
    {
      config: { summary: "Public Ed25519 keys that verify relay tokens (newest first)" },
      schema: {
        response: {
          200: {
            type: "object",
            required: ["keys"],
            properties: {
              keys: {
                type: "array",
                items: {
                  type: "object",
                  properties: {
                    kty: { type: "string" },
                    crv: { type: "string" },
                    x: { type: "string" },
                    kid: { type: "string" },
                    alg: { type: "string" },
                    use: { type: "string" },
                  },
                  required: ["kty", "crv", "x", "kid", "alg", "use"],
                },
              },
            },
          },
        },
      },
    },
    async (_req, reply) => {
      void reply.header("cache-control", "public, max-age=300");
      return jwks(s.ring);
    },
  );

  app.get("/health", { config: { summary: "Liveness and database check" } }, async (_req, reply) => {
    try {
      await s.db.query("SELECT 1");
      return { status: "ok", database: s.db.kind };
    } catch {
      return reply.code(503).send({ status: "unavailable", database: s.db.kind });
    }
  });

  app.get("/metrics", { config: { summary: "Prometheus metrics (text format)" } }, async (_req, reply) => {
    void reply.type("text/plain; version=0.0.4; charset=utf-8");
    return s.metrics.render([
      "# HELP skytale_api_key_cache_entries Entries in the verified-key cache.",
      "# TYPE skytale_api_key_cache_entries gauge",
      `skytale_api_key_cache_entries ${s.cache.size}`,
      "# HELP skytale_api_limits_backend Where rate limits and Argon2id slots are counted (1 = this backend).",
      "# TYPE skytale_api_limits_backend gauge",
      `skytale_api_limits_backend{backend="${s.limits.backend}"} 1`,
      "# HELP skytale_api_signing_keys Published signing keys.",
      "# TYPE skytale_api_signing_keys gauge",
      `skytale_api_signing_keys ${s.ring.publicKeys.length}`,
    ]);
  });
}
