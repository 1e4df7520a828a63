// services.ts — owns the bundle of per-server collaborators handed to every route module.

import type { Authenticator, AuthContext } from "./auth/authenticator.js";
import type { KeyCache } from "./auth/keyCache.js";
import type { Limits, WindowLimiter } from "./limits/index.js";
import type { Config } from "./config.js";
import type { Db } from "./db/index.js";
import type { Metrics } from "./metrics.js";
import type { KeyRing } from "./signing/keyRing.js";

/** Everything a route needs; one per running server. */
export interface Services {
  config: Config;
  db: Db;
  ring: KeyRing;
  metrics: Metrics;
  auth: Authenticator;
  cache: KeyCache;
  /** Successful `POST /v1/tokens` per key prefix. */
  tokensPerKey: WindowLimiter;
  /** The counters (shared or not) behind every rate limit, and the Argon2id slots. */
  limits: Limits;
}

declare module "fastify" {
  interface FastifyRequest {
    /** Set by the `requireAuth` hook on authenticated routes. */
    auth: AuthContext | null;
  }
  interface FastifyContextConfig {
    /** Short summary for the OpenAPI document. */
    summary?: string;
    /** True when the route needs `Authorization: Bearer sk_live_…` (OpenAPI security). */
    bearer?: boolean;
  }
}
