// app.ts — owns building the Fastify instance: logger redaction, body/JSON parsing, validation
// options, rate limiting, error handling, metrics hook and route registration.

import rateLimit from "@fastify/rate-limit";
import Fastify, { type FastifyInstance } from "fastify";
import { ApiError, installErrorHandlers } from "./errors.js";
import { rateLimitStore } from "./limits/index.js";
import { registerAccountRoutes } from "./routes/accounts.js";
import { registerAgentRoutes } from "./routes/agents.js";
import { registerKeyRoutes } from "./routes/keys.js";
import { registerOpenApi } from "./routes/openapi.js";
import { registerPublicRoutes } from "./routes/public.js";
import { registerRevocationRoutes } from "./routes/revocations.js";
import { registerTokenRoutes } from "./routes/tokens.js";
import type { Services } from "./services.js";

/** Package version reported in /openapi.json. */
export const VERSION = "0.1.0";

/** Builds (but does not start) the HTTP app around `s`. */
export async function buildApp(s: Services): Promise<FastifyInstance> {
  const app = Fastify({
    logger: {
      level: s.config.logLevel,
      redact: { paths: ["req.headers.authorization", 'req.headers["x-api-key"]', "apiKey", "key", "token"], censor: "[redacted]" },
    },
    bodyLimit: s.config.bodyLimit,
    trustProxy: s.config.trustProxy,
    return503OnClosing: true,
    ajv: { customOptions: { removeAdditional: false, coerceTypes: false, useDefaults: false, allErrors: false } },
  });

  // JSON bodies: an empty body is "no body" (clients often send Content-Type without one).
  const jsonParser = app.getDefaultJsonParser("error", "error");
  app.removeContentTypeParser("application/json");
  app.addContentTypeParser("application/json", { parseAs: "string" }, (req, body, done) => {
    if (body === "") return done(null, undefined);
    jsonParser(req, body as string, done);
  });

  installErrorHandlers(app);
  app.decorateRequest("auth", null);

  app.addHook("onResponse", async (req, reply) => {
    const route = req.routeOptions.url ?? "unmatched";
    s.metrics.httpRequests.inc({ route, method: req.method, status: String(reply.statusCode) });
    s.metrics.httpDuration.observe(reply.elapsedTime / 1000);
  });

  // Counted in the shared limits backend (Postgres / Redis), so N instances allow 1× the limits.
  await app.register(rateLimit, {
    global: true,
    store: rateLimitStore(s.limits.counters),
    max: s.config.rateLimits.globalPerIp,
    timeWindow: 60_000,
    onExceeded: () => s.metrics.rateLimited.inc({ limiter: "per_ip" }),
    errorResponseBuilder: (_req, ctx) =>
      new ApiError(429, "SKYTALE_RATE_LIMITED", "too many requests, retry later", Math.max(1, Math.ceil(ctx.ttl / 1000))),
  });

  registerOpenApi(app, VERSION);
  registerPublicRoutes(app, s);
  registerAccountRoutes(app, s);
  registerKeyRoutes(app, s);
  registerTokenRoutes(app, s);
  registerAgentRoutes(app, s);
  registerRevocationRoutes(app, s);
  return app;
}
