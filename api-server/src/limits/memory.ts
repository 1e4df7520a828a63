// limits/memory.ts — owns the in-process limiters: fixed-window counters in a Map and a plain
// counting semaphore (one server instance, or the embedded PGlite default).

import type { CounterStore, Lease, Semaphore, WindowCount } from "./types.js";

/** Counters in this process only: N instances allow N× the limits. */
export class MemoryCounterStore implements CounterStore {
  readonly kind = "memory" as const;
  private readonly counts = new Map<string, { n: number; resetAt: number }>();
  private readonly sweeper: NodeJS.Timeout;

  /** `now` is injectable for tests; expired windows are swept every `sweepMs`. */
  constructor(
    private readonly now: () => number = Date.now,
    sweepMs = 60_000,
  ) {
    this.sweeper = setInterval(() => this.sweep(), sweepMs);
    this.sweeper.unref();
  }

  /** Counts one event for `key` in its window of `windowMs`. */
  async incr(key: string, windowMs: number): Promise<WindowCount> {
    return this.incrSync(key, windowMs);
  }

  /** Synchronous {@link MemoryCounterStore.incr} (for the in-memory fallback path). */
  incrSync(key: string, windowMs: number): WindowCount {
    const t = this.now();
    let e = this.counts.get(key);
    if (!e || e.resetAt <= t) {
      e = { n: 0, resetAt: t + windowMs };
      this.counts.set(key, e);
    }
    e.n += 1;
    return { count: e.n, resetMs: e.resetAt - t };
  }

  /** The current window of `key` without counting. */
  async peek(key: string): Promise<WindowCount> {
    return this.peekSync(key);
  }

  /** Synchronous {@link MemoryCounterStore.peek}. */
  peekSync(key: string): WindowCount {
    const t = this.now();
    const e = this.counts.get(key);
    if (!e || e.resetAt <= t) return { count: 0, resetMs: 0 };
    return { count: e.n, resetMs: e.resetAt - t };
  }

  /** Drops expired windows. */
  sweep(): void {
    const t = this.now();
    for (const [k, e] of this.counts) if (e.resetAt <= t) this.counts.delete(k);
  }

  /** Stops the sweeper. */
  async close(): Promise<void> {
    clearInterval(this.sweeper);
  }
}

/** A semaphore in this process only (no leases needed: the process holding a slot is this one). */
export class LocalSemaphore implements Semaphore {
  readonly kind = "memory" as const;
  private held = 0;

  constructor(readonly max: number) {}

  /** Takes a slot synchronously, or null when all are held. */
  tryAcquireSync(): Lease | null {
    if (this.held >= this.max) return null;
    this.held += 1;
    let released = false;
    return {
      release: async () => {
        if (released) return;
        released = true;
        this.held -= 1;
      },
    };
  }

  /** Takes a slot, or null when all are held. */
  async tryAcquire(): Promise<Lease | null> {
    return this.tryAcquireSync();
  }

  /** Slots held now. */
  get inUse(): number {
    return this.held;
  }

  /** Nothing to stop. */
  async close(): Promise<void> {}
}
