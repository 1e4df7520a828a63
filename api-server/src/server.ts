// server.ts — owns the server lifecycle: open the database, load keys, build the app, listen, close.

import { Authenticator } from "./auth/authenticator.js";
import { KeyCache } from "./auth/keyCache.js";
import { buildApp } from "./app.js";
import { defaultConfig, type Config } from "./config.js";
import { openDatabase } from "./db/index.js";
import { openLimits, WindowLimiter, type Limits, type LimitsBackend } from "./limits/index.js";
import { Metrics } from "./metrics.js";
import type { Services } from "./services.js";
import { loadKeyRing } from "./signing/keyRing.js";
import type { FastifyInstance } from "fastify";

export { defaultConfig, loadConfig, relayList, type Config } from "./config.js";

/** Hooks for tests and embedding (not configuration). */
export interface ServerHooks {
  /** Replaces the Argon2id verification, e.g. to hold one open while observing the in-flight cap. */
  verifyApiKey?: (phc: string, key: string) => Promise<boolean>;
}

/** A running server. */
export interface RunningServer {
  /** Base URL, e.g. `http://127.0.0.1:41234` (the real port when 0 was asked for). */
  url: string;
  /** Stops listening, closes the database and timers. Idempotent. */
  close: () => Promise<void>;
  /** The Fastify instance (for `inject` in tests and embedding). */
  app: FastifyInstance;
  /** Key id (`kid`) that signs new tokens. */
  signingKid: string;
  /** Where rate limits and Argon2id slots are counted. */
  limitsBackend: LimitsBackend;
}

/**
 * Starts the API server with `config` (fields not given take the production defaults of
 * {@link defaultConfig}). Runs migrations, loads or creates the signing key, and listens.
 */
export async function startServer(config: Partial<Config> = {}, hooks: ServerHooks = {}): Promise<RunningServer> {
  const d = defaultConfig();
  const cfg: Config = {
    ...d,
    ...config,
    argon2: { ...d.argon2, ...config.argon2 },
    rateLimits: { ...d.rateLimits, ...config.rateLimits },
  };
  const ring = await loadKeyRing(cfg);
  const db = await openDatabase(cfg);
  const metrics = new Metrics();
  const cache = new KeyCache(cfg.keyCacheTtlMs);
  let app: FastifyInstance | undefined;
  const warn = (fields: Record<string, unknown>, msg: string) => {
    if (app) app.log.warn(fields, msg);
    else console.error(`skytale-api warning: ${msg}`);
  };
  let limits: Limits;
  try {
    limits = await openLimits(cfg, db, metrics, warn);
  } catch (err) {
    await db.close().catch(() => undefined);
    throw err;
  }
  const r = cfg.rateLimits;
  const failuresPerIp = new WindowLimiter(limits.counters, "auth_fail_ip", r.authFailuresPerIp);
  const failuresPerKey = new WindowLimiter(limits.counters, "auth_fail_key", r.authFailuresPerKey);
  const tokensPerKey = new WindowLimiter(limits.counters, "tokens_key", r.tokensPerKey);
  const auth = new Authenticator({
    db,
    cache,
    failuresPerIp,
    failuresPerKey,
    metrics,
    argon2: cfg.argon2,
    argon2Slots: limits.argon2,
    ...(hooks.verifyApiKey ? { verify: hooks.verifyApiKey } : {}),
  });
  const stopAll = async (): Promise<void> => {
    await limits.close();
    await db.close();
  };

  let started: FastifyInstance;
  try {
    await auth.init();
    const services: Services = { config: cfg, db, ring, metrics, auth, cache, tokensPerKey, limits };
    started = app = await buildApp(services);
    await app.listen({ host: cfg.host, port: cfg.port });
  } catch (err) {
    await app?.close().catch(() => undefined);
    await stopAll().catch(() => undefined);
    throw err;
  }
  const addr = started.server.address();
  const port = typeof addr === "object" && addr ? addr.port : cfg.port;
  const host = cfg.host.includes(":") ? `[${cfg.host}]` : cfg.host;
  started.log.info({ database: db.kind, limits: limits.backend, signingKeys: ring.publicKeys.length, keySource: ring.source, kid: ring.signer.kid }, "started");

  let closing: Promise<void> | undefined;
  return {
    url: `http://${host}:${port}`,
    app: started,
    signingKid: ring.signer.kid,
    limitsBackend: limits.backend,
    close: () =>
      (closing ??= (async () => {
        await started.close();
        await stopAll();
      })()),
  };
}
