// limits/fastify.ts — owns the adapter that makes @fastify/rate-limit count in a CounterStore,
// so its per-IP limits (global, signup, tokens, agents, revocations) are shared by all instances.

import type { FastifyRateLimitStore, FastifyRateLimitStoreCtor } from "@fastify/rate-limit";
import type { CounterStore } from "./types.js";

type Callback = (error: Error | null, result?: { current: number; ttl: number }) => void;

/**
 * A `store` class for @fastify/rate-limit backed by `counters`. The global limit counts under
 * `rl:global:<ip>`, a route with its own limit under `rl:<METHOD><url>:<ip>` (as the plugin's own
 * stores do, each route with a limit has its own counter).
 */
export function rateLimitStore(counters: CounterStore): FastifyRateLimitStoreCtor {
  class SharedStore implements FastifyRateLimitStore {
    constructor(
      _options: unknown,
      private readonly ns = "rl:global:",
    ) {}

    incr(key: string, callback: Callback, timeWindow: number): void {
      counters.incr(this.ns + key, timeWindow).then(
        (w) => callback(null, { current: w.count, ttl: w.resetMs }),
        (err: Error) => callback(err),
      );
    }

    read(key: string, callback: Callback): void {
      counters.peek(this.ns + key).then(
        (w) => callback(null, { current: w.count, ttl: w.resetMs }),
        (err: Error) => callback(err),
      );
    }

    child(routeOptions: unknown): FastifyRateLimitStore {
      const info = (routeOptions as { routeInfo?: { method?: string | string[]; url?: string } }).routeInfo ?? {};
      const method = Array.isArray(info.method) ? info.method.join(",") : (info.method ?? "");
      return new SharedStore(undefined, `rl:${method}${info.url ?? ""}:`);
    }
  }
  return SharedStore;
}
