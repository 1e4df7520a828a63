// limits/redis.ts — owns the limiters shared through Redis (set by SKYTALE_REDIS_URL): fixed-window
// counters as INCR + PEXPIRE in one Lua script, and the Argon2id semaphore as a sorted set of
// leases scored by their expiry (Redis server time), trimmed on every acquire.

import { randomBytes } from "node:crypto";
import { Redis } from "ioredis";
import type { CounterStore, Lease, Semaphore, WindowCount } from "./types.js";

const INCR_LUA = `
local n = redis.call('INCR', KEYS[1])
local ttl = redis.call('PTTL', KEYS[1])
if n == 1 or ttl < 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
  ttl = tonumber(ARGV[1])
end
return {n, ttl}`;

const PEEK_LUA = `
local n = redis.call('GET', KEYS[1])
if not n then return {0, 0} end
local ttl = redis.call('PTTL', KEYS[1])
if ttl < 0 then ttl = 0 end
return {tonumber(n), ttl}`;

// KEYS[1] = the lease set; ARGV = max, lease ms, holder token. Scores are expiry times in ms of
// the Redis clock, so instances with skewed clocks agree. Answers 1 when a slot was taken.
const ACQUIRE_LUA = `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local lease = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[1]) then return 0 end
redis.call('ZADD', KEYS[1], now + lease, ARGV[3])
local ttl = redis.call('PTTL', KEYS[1])
if ttl < lease then redis.call('PEXPIRE', KEYS[1], lease) end
return 1`;

interface SkytaleCommands {
  skytaleIncr(key: string, windowMs: number): Promise<[number, number]>;
  skytalePeek(key: string): Promise<[number, number]>;
  skytaleAcquire(key: string, max: number, leaseMs: number, holder: string): Promise<number>;
}

/** A connected client with the Skytale scripts defined. */
export type SkytaleRedis = Redis & SkytaleCommands;

/**
 * Connects to `url` and checks it with PING (throws when unreachable within `timeoutMs`). Commands
 * never queue while disconnected: they fail at once, and the caller falls back (see
 * `limits/index.ts`) instead of hanging requests; the client keeps reconnecting in the background.
 */
export async function connectRedis(url: string, onError: (err: Error) => void, timeoutMs = 2_000): Promise<SkytaleRedis> {
  const redis = new Redis(url, {
    lazyConnect: true,
    enableOfflineQueue: false,
    maxRetriesPerRequest: 0,
    connectTimeout: timeoutMs,
    commandTimeout: timeoutMs,
    retryStrategy: (attempt) => Math.min(attempt * 200, 2_000),
  });
  redis.on("error", onError);
  redis.defineCommand("skytaleIncr", { numberOfKeys: 1, lua: INCR_LUA });
  redis.defineCommand("skytalePeek", { numberOfKeys: 1, lua: PEEK_LUA });
  redis.defineCommand("skytaleAcquire", { numberOfKeys: 1, lua: ACQUIRE_LUA });
  try {
    await redis.connect();
    await redis.ping();
  } catch (err) {
    redis.disconnect();
    throw err;
  }
  return redis as SkytaleRedis;
}

/** Counters as Redis keys `<prefix>rl:<key>` that expire with their window. */
export class RedisCounterStore implements CounterStore {
  readonly kind = "redis" as const;

  constructor(
    private readonly redis: SkytaleRedis,
    private readonly prefix: string,
  ) {}

  /** Counts one event for `key` (INCR, and PEXPIRE when the window opens, atomically). */
  async incr(key: string, windowMs: number): Promise<WindowCount> {
    const [count, resetMs] = await this.redis.skytaleIncr(`${this.prefix}rl:${key}`, Math.max(1, Math.trunc(windowMs)));
    return { count: Number(count), resetMs: Number(resetMs) };
  }

  /** The current window of `key` without counting. */
  async peek(key: string): Promise<WindowCount> {
    const [count, resetMs] = await this.redis.skytalePeek(`${this.prefix}rl:${key}`);
    return { count: Number(count), resetMs: Number(resetMs) };
  }

  /** The client is closed by its owner (see `openLimits`). */
  async close(): Promise<void> {}
}

/** The Argon2id semaphore as the sorted set `<prefix>argon2` (member = lease token, score = expiry). */
export class RedisSemaphore implements Semaphore {
  readonly kind = "redis" as const;
  private readonly key: string;

  constructor(
    private readonly redis: SkytaleRedis,
    prefix: string,
    readonly max: number,
    private readonly leaseMs: number,
  ) {
    this.key = `${prefix}argon2`;
  }

  /** Takes a slot (expired leases are dropped first), or null when all `max` are held. */
  async tryAcquire(): Promise<Lease | null> {
    const holder = randomBytes(16).toString("base64url");
    if (Number(await this.redis.skytaleAcquire(this.key, this.max, this.leaseMs, holder)) !== 1) return null;
    let released = false;
    return {
      release: async () => {
        if (released) return;
        released = true;
        await this.redis.zrem(this.key, holder);
      },
    };
  }

  /** The client is closed by its owner. */
  async close(): Promise<void> {}
}
