// server.ts — owns the server lifecycle: open the database, load keys, build the app, listen, close.

import { Authenticator } from "./auth/authenticator.js";
import { KeyCache } from "./auth/keyCache.js";
import { WindowLimiter } from "./auth/limiter.js";
import { buildApp } from "./app.js";
import { defaultConfig, type Config } from "./config.js";
import { openDatabase } from "./db/index.js";
import { Metrics } from "./metrics.js";
import type { Services } from "./services.js";
import { loadKeyRing } from "./signing/keyRing.js";
import type { FastifyInstance } from "fastify";

export { defaultConfig, loadConfig, type Config } from "./config.js";

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
}

/**
 * Starts the API server with `config` (fields not given take the production defaults of
 * {@link defaultConfig}). Runs migrations, loads or creates the signing key, and listens.
 */
export async function startServer(config: Partial<Config> = {}): Promise<RunningServer> {
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
  const failuresPerIp = new WindowLimiter(cfg.rateLimits.authFailuresPerIp);
  const failuresPerKey = new WindowLimiter(cfg.rateLimits.authFailuresPerKey);
  const tokensPerKey = new WindowLimiter(cfg.rateLimits.tokensPerKey);
  const auth = new Authenticator({ db, cache, failuresPerIp, failuresPerKey, metrics, argon2: cfg.argon2, maxPending: cfg.rateLimits.argon2MaxPending });
  const stopAll = async (): Promise<void> => {
    for (const l of [failuresPerIp, failuresPerKey, tokensPerKey]) l.stop();
    await db.close();
  };

  let app: FastifyInstance;
  try {
    await auth.init();
    const services: Services = { config: cfg, db, ring, metrics, auth, cache, tokensPerKey };
    app = await buildApp(services);
    await app.listen({ host: cfg.host, port: cfg.port });
  } catch (err) {
    await stopAll().catch(() => undefined);
    throw err;
  }
  const addr = app.server.address();
  const port = typeof addr === "object" && addr ? addr.port : cfg.port;
  const host = cfg.host.includes(":") ? `[${cfg.host}]` : cfg.host;
  app.log.info({ database: db.kind, signingKeys: ring.publicKeys.length, keySource: ring.source, kid: ring.signer.kid }, "started");

  let closing: Promise<void> | undefined;
  return {
    url: `http://${host}:${port}`,
    app,
    signingKid: ring.signer.kid,
    close: () =>
      (closing ??= (async () => {
        await app.close();
        await stopAll();
      })()),
  };
}
