// limits/window.ts — owns WindowLimiter: a named limit (events per window per key) over a
// CounterStore, used for the per-key token quota and the auth-failure limits.

import type { CounterStore } from "./types.js";

/** Seconds a client is told to wait for a window that ends in `ms` (at least 1). */
export function retryAfterSeconds(ms: number): number {
  return Math.max(1, Math.ceil(ms / 1000));
}

/** `limit` events per `windowMs` for each key, counted in `store` under the namespace `name`. */
export class WindowLimiter {
  constructor(
    private readonly store: CounterStore,
    readonly name: string,
    readonly limit: number,
    readonly windowMs = 60_000,
  ) {}

  private k(key: string): string {
    return `${this.name}:${key}`;
  }

  /** Seconds until `key` may act again, or 0 when it is under its limit. Does not count. */
  async blockedFor(key: string): Promise<number> {
    const w = await this.store.peek(this.k(key));
    return w.count >= this.limit ? retryAfterSeconds(w.resetMs) : 0;
  }

  /** Counts one event for `key`. */
  async hit(key: string): Promise<void> {
    await this.store.incr(this.k(key), this.windowMs);
  }

  /**
   * Counts one event and returns the seconds to wait if that event is over the limit (else 0).
   * Atomic in the store: however many instances race, at most `limit` events per window get 0.
   */
  async take(key: string): Promise<number> {
    const w = await this.store.incr(this.k(key), this.windowMs);
    return w.count > this.limit ? retryAfterSeconds(w.resetMs) : 0;
  }
}
