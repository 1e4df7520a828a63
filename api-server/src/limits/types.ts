// limits/types.ts — owns the contracts of the shared limiters: fixed-window counters and the
// cluster-wide semaphore (leases that expire), implemented in memory, on Postgres and on Redis.

/** Where the counters and the semaphore live. */
export type LimitsBackend = "memory" | "postgres" | "redis";

/** One window of one counter after an operation. */
export interface WindowCount {
  /** Events counted in the current window (0 when no window is open). */
  count: number;
  /** Milliseconds until the current window ends (0 when no window is open). */
  resetMs: number;
}

/**
 * Fixed-window counters keyed by string. A window opens at the first event of a key and lasts
 * `windowMs`; the next event after it ends opens a new one. Every operation is atomic in the
 * backend, so N server instances sharing a backend count as one.
 */
export interface CounterStore {
  readonly kind: LimitsBackend;
  /** Counts one event for `key` and returns the window after it. */
  incr(key: string, windowMs: number): Promise<WindowCount>;
  /** The current window of `key` without counting. */
  peek(key: string): Promise<WindowCount>;
  /** Stops timers and releases connections the store owns. */
  close(): Promise<void>;
}

/** A held slot of a {@link Semaphore}. */
export interface Lease {
  /** Gives the slot back (idempotent; a lease that already expired is left alone). */
  release(): Promise<void>;
}

/**
 * A counting semaphore that never waits: {@link Semaphore.tryAcquire} takes a free slot or answers
 * null at once. Shared backends give each slot a lease that expires, so an instance that dies
 * while holding slots does not leak them.
 */
export interface Semaphore {
  readonly kind: LimitsBackend;
  /** Maximum slots held at once. */
  readonly max: number;
  /** Takes a slot, or null when all `max` are held. */
  tryAcquire(): Promise<Lease | null>;
  /** Stops timers; held leases expire on their own. */
  close(): Promise<void>;
}
