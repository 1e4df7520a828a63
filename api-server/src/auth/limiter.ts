// auth/limiter.ts — owns the in-memory fixed-window counters used for per-key and auth-failure limits.

/** A fixed one-window counter keyed by string (an IP, a key prefix…). */
export class WindowLimiter {
  private readonly counts = new Map<string, { n: number; resetAt: number }>();
  private readonly sweeper: NodeJS.Timeout;

  /** `limit` events per `windowMs` for each key. */
  constructor(
    readonly limit: number,
    readonly windowMs = 60_000,
    private readonly now: () => number = Date.now,
  ) {
    this.sweeper = setInterval(() => this.sweep(), windowMs);
    this.sweeper.unref();
  }

  /** Seconds until `key` may act again, or 0 when it is under its limit. Does not count. */
  blockedFor(key: string): number {
    const e = this.counts.get(key);
    if (!e || e.resetAt <= this.now() || e.n < this.limit) return 0;
    return Math.max(1, Math.ceil((e.resetAt - this.now()) / 1000));
  }

  /** Counts one event for `key`. */
  hit(key: string): void {
    const t = this.now();
    const e = this.counts.get(key);
    if (!e || e.resetAt <= t) this.counts.set(key, { n: 1, resetAt: t + this.windowMs });
    else e.n += 1;
  }

  /** Counts one event and returns the seconds to wait if that event is over the limit (else 0). */
  take(key: string): number {
    const wait = this.blockedFor(key);
    if (wait > 0) return wait;
    this.hit(key);
    return 0;
  }

  /** Drops expired windows. */
  sweep(): void {
    const t = this.now();
    for (const [k, e] of this.counts) if (e.resetAt <= t) this.counts.delete(k);
  }

  /** Stops the background sweeper. */
  stop(): void {
    clearInterval(this.sweeper);
  }
}
