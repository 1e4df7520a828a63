// limits/index.ts — owns choosing and opening the limits backend (memory, Postgres, Redis) and
// the fallback that keeps serving with this instance's memory when a shared backend errors.

import { ConfigError, type Config } from "../config.js";
import type { Db } from "../db/index.js";
import type { Metrics } from "../metrics.js";
import { LocalSemaphore, MemoryCounterStore } from "./memory.js";
import { PostgresCounterStore, PostgresSemaphore } from "./postgres.js";
import { connectRedis, RedisCounterStore, RedisSemaphore } from "./redis.js";
import type { CounterStore, Lease, LimitsBackend, Semaphore, WindowCount } from "./types.js";

export type { CounterStore, Lease, LimitsBackend, Semaphore, WindowCount } from "./types.js";
export { WindowLimiter, retryAfterSeconds } from "./window.js";
export { rateLimitStore } from "./fastify.js";

/** The counters and the Argon2id semaphore of one server instance. */
export interface Limits {
  /** Where they live. */
  backend: LimitsBackend;
  counters: CounterStore;
  argon2: Semaphore;
  /** Stops timers and closes the Redis connection (the database belongs to the caller). */
  close(): Promise<void>;
}

/** Receives a warning (never a secret: no URLs, no keys). */
export type Warn = (fields: Record<string, unknown>, message: string) => void;

/** The backend `auto` resolves to for this configuration and database. */
export function resolveBackend(cfg: Pick<Config, "limitsBackend" | "redisUrl">, db: Pick<Db, "kind">): LimitsBackend {
  if (cfg.limitsBackend === "auto") return cfg.redisUrl ? "redis" : db.kind === "postgres" ? "postgres" : "memory";
  if (cfg.limitsBackend === "redis" && !cfg.redisUrl) throw new ConfigError("SKYTALE_LIMITS_BACKEND=redis needs SKYTALE_REDIS_URL");
  return cfg.limitsBackend;
}

const WARN_EVERY_MS = 30_000;

/**
 * Opens the limits for `cfg` on `db`: Redis when `redisUrl` is set (unreachable at start → throws),
 * else Postgres when the store is Postgres, else memory (`limitsBackend` overrides). A shared
 * backend that fails later does not fail requests: that operation is answered from this
 * instance's memory (counted in `skytale_api_limits_fallbacks_total`, warned at most every 30 s).
 */
export async function openLimits(cfg: Config, db: Db, metrics: Metrics, warn: Warn): Promise<Limits> {
  const backend = resolveBackend(cfg, db);
  const max = cfg.rateLimits.argon2MaxPending;
  const memory = new MemoryCounterStore();
  const local = new LocalSemaphore(max);
  if (backend === "memory") {
    return { backend, counters: memory, argon2: local, close: () => memory.close() };
  }

  let lastWarn = 0;
  const warnSometimes = (err: unknown, message: string) => {
    if (Date.now() - lastWarn < WARN_EVERY_MS) return;
    lastWarn = Date.now();
    warn({ backend, err: err instanceof Error ? err.message : String(err) }, message);
  };
  const onError = (err: unknown) => {
    metrics.limitsFallbacks.inc({ backend });
    warnSometimes(err, "shared limits unavailable: counting in this instance's memory meanwhile");
  };

  let counters: CounterStore;
  let argon2: Semaphore;
  let closeShared: () => Promise<void>;
  if (backend === "redis") {
    if (!cfg.redisUrl) throw new ConfigError("SKYTALE_LIMITS_BACKEND=redis needs SKYTALE_REDIS_URL");
    let redis;
    try {
      redis = await connectRedis(cfg.redisUrl, (err) => warnSometimes(err, "Redis connection error (reconnecting)"));
    } catch (err) {
      await memory.close();
      throw new ConfigError(`cannot reach Redis at SKYTALE_REDIS_URL: ${err instanceof Error ? err.message : String(err)}`);
    }
    counters = new RedisCounterStore(redis, cfg.redisPrefix);
    argon2 = new RedisSemaphore(redis, cfg.redisPrefix, max, cfg.rateLimits.argon2LeaseMs);
    closeShared = async () => {
      await redis.quit().catch(() => redis.disconnect());
    };
  } else {
    const pgCounters = new PostgresCounterStore(db);
    counters = pgCounters;
    argon2 = await PostgresSemaphore.open(db, max, cfg.rateLimits.argon2LeaseMs);
    closeShared = () => pgCounters.close();
  }

  return {
    backend,
    counters: new FallbackCounterStore(counters, memory, onError),
    argon2: new FallbackSemaphore(argon2, local, onError),
    close: async () => {
      await memory.close();
      await closeShared();
    },
  };
}

/** A shared CounterStore that answers from this instance's memory while the shared one errors. */
export class FallbackCounterStore implements CounterStore {
  readonly kind: LimitsBackend;

  constructor(
    private readonly shared: CounterStore,
    private readonly memory: MemoryCounterStore,
    private readonly onError: (err: unknown) => void,
  ) {
    this.kind = shared.kind;
  }

  /** Counts in the shared store, or in memory when it fails. */
  async incr(key: string, windowMs: number): Promise<WindowCount> {
    try {
      return await this.shared.incr(key, windowMs);
    } catch (err) {
      this.onError(err);
      return this.memory.incrSync(key, windowMs);
    }
  }

  /** Reads the shared store, or memory when it fails. */
  async peek(key: string): Promise<WindowCount> {
    try {
      return await this.shared.peek(key);
    } catch (err) {
      this.onError(err);
      return this.memory.peekSync(key);
    }
  }

  /** Closes the shared store. */
  close(): Promise<void> {
    return this.shared.close();
  }
}

/** A shared Semaphore that takes an in-process slot while the shared one errors. */
export class FallbackSemaphore implements Semaphore {
  readonly kind: LimitsBackend;
  readonly max: number;

  constructor(
    private readonly shared: Semaphore,
    private readonly local: LocalSemaphore,
    private readonly onError: (err: unknown) => void,
  ) {
    this.kind = shared.kind;
    this.max = shared.max;
  }

  /** A shared slot, or an in-process one when the shared backend fails. Release errors are ignored (the lease expires). */
  async tryAcquire(): Promise<Lease | null> {
    let lease: Lease | null;
    try {
      lease = await this.shared.tryAcquire();
    } catch (err) {
      this.onError(err);
      return this.local.tryAcquireSync();
    }
    if (!lease) return null;
    const held = lease;
    return { release: () => held.release().catch(() => undefined) };
  }

  /** Closes the shared semaphore. */
  close(): Promise<void> {
    return this.shared.close();
  }
}
