// limits/postgres.ts — owns the limiters shared through Postgres: fixed-window counters in the
// `rate_limits` table (one atomic upsert per event, expired windows pruned) and the Argon2id
// semaphore as `argon2_slots` rows with expiring leases. Time is the database's clock, so
// instances with skewed clocks still agree.

import { randomBytes } from "node:crypto";
import type { Queryable } from "../db/index.js";
import type { CounterStore, Lease, Semaphore, WindowCount } from "./types.js";

const INCR_SQL = `
  INSERT INTO rate_limits AS r (key, count, reset_at)
       VALUES ($1, 1, now() + $2::bigint * interval '1 millisecond')
  ON CONFLICT (key) DO UPDATE SET
       count    = CASE WHEN r.reset_at <= now() THEN 1 ELSE r.count + 1 END,
       reset_at = CASE WHEN r.reset_at <= now() THEN excluded.reset_at ELSE r.reset_at END
  RETURNING count, GREATEST(0, ceil(extract(epoch FROM (reset_at - now())) * 1000))::bigint AS reset_ms`;

const PEEK_SQL = `
  SELECT count, GREATEST(0, ceil(extract(epoch FROM (reset_at - now())) * 1000))::bigint AS reset_ms
    FROM rate_limits WHERE key = $1 AND reset_at > now()`;

type Row = { count: string | number; reset_ms: string | number };

function windowOf(row: Row | undefined): WindowCount {
  return row ? { count: Number(row.count), resetMs: Number(row.reset_ms) } : { count: 0, resetMs: 0 };
}

/** Counters in the `rate_limits` table of the shared database. */
export class PostgresCounterStore implements CounterStore {
  readonly kind = "postgres" as const;
  private readonly pruner: NodeJS.Timeout;

  /** Prunes ended windows every `pruneMs` (each instance does; the deletes are idempotent). */
  constructor(
    private readonly db: Queryable,
    pruneMs = 60_000,
  ) {
    this.pruner = setInterval(() => void this.prune().catch(() => undefined), pruneMs);
    this.pruner.unref();
  }

  /** Counts one event for `key` (one `INSERT … ON CONFLICT DO UPDATE … RETURNING`). */
  async incr(key: string, windowMs: number): Promise<WindowCount> {
    return windowOf((await this.db.query<Row>(INCR_SQL, [key, Math.max(1, Math.trunc(windowMs))]))[0]);
  }

  /** The current window of `key` without counting. */
  async peek(key: string): Promise<WindowCount> {
    return windowOf((await this.db.query<Row>(PEEK_SQL, [key]))[0]);
  }

  /** Deletes the rows of ended windows; returns how many. */
  async prune(): Promise<number> {
    return (await this.db.query("DELETE FROM rate_limits WHERE reset_at <= now() RETURNING 1")).length;
  }

  /** Stops the pruner (the pool belongs to the caller). */
  async close(): Promise<void> {
    clearInterval(this.pruner);
  }
}

const ACQUIRE_SQL = `
  UPDATE argon2_slots SET holder = $1, expires_at = now() + $2::bigint * interval '1 millisecond'
   WHERE slot = (SELECT slot FROM argon2_slots
                  WHERE slot < $3 AND (holder IS NULL OR expires_at <= now())
                  ORDER BY slot LIMIT 1 FOR UPDATE SKIP LOCKED)
  RETURNING slot`;

/**
 * The Argon2id semaphore as rows `argon2_slots (slot, holder, expires_at)`: a slot is free when it
 * has no holder or its lease has expired. Acquiring is one `UPDATE … WHERE slot = (SELECT … FOR
 * UPDATE SKIP LOCKED)`, so concurrent instances never take the same slot and never wait on each
 * other; an instance that dies leaves its slots to expire after `leaseMs`.
 */
export class PostgresSemaphore implements Semaphore {
  readonly kind = "postgres" as const;

  private constructor(
    private readonly db: Queryable,
    readonly max: number,
    private readonly leaseMs: number,
  ) {}

  /** Makes sure slots `0 … max-1` exist, then returns the semaphore. */
  static async open(db: Queryable, max: number, leaseMs: number): Promise<PostgresSemaphore> {
    await db.query("INSERT INTO argon2_slots (slot) SELECT generate_series(0, $1::int - 1) ON CONFLICT DO NOTHING", [max]);
    return new PostgresSemaphore(db, max, leaseMs);
  }

  /** Takes a free or expired slot, or null when all `max` are held. */
  async tryAcquire(): Promise<Lease | null> {
    const holder = randomBytes(16).toString("base64url");
    const [row] = await this.db.query<{ slot: number }>(ACQUIRE_SQL, [holder, this.leaseMs, this.max]);
    if (!row) return null;
    let released = false;
    return {
      release: async () => {
        if (released) return;
        released = true;
        // Only our own lease: after an expiry the slot may belong to someone else.
        await this.db.query("UPDATE argon2_slots SET holder = NULL, expires_at = NULL WHERE slot = $1 AND holder = $2", [row.slot, holder]);
      },
    };
  }

  /** Nothing to stop; held leases expire on their own. */
  async close(): Promise<void> {}
}
