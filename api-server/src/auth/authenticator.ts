// auth/authenticator.ts — owns API key authentication: bearer parsing, lookup by prefix, Argon2id
// verification (with a dummy hash for unknown prefixes), failure limits, the verified-key cache.

import type { Argon2Params } from "../config.js";
import type { Db } from "../db/index.js";
import { errors } from "../errors.js";
import type { Metrics } from "../metrics.js";
import { findKeyByPrefix, touchKey } from "../store/apiKeys.js";
import { generateApiKey, hashApiKey, isWellFormedKey, lookupPrefix, verifyApiKey } from "./apiKey.js";
import type { KeyCache } from "./keyCache.js";
import type { WindowLimiter } from "./limiter.js";

/** Who an authenticated request acts for. */
export interface AuthContext {
  keyId: string;
  accountId: string;
  org: string;
  /** Lookup prefix of the key used (not secret). */
  prefix: string;
}

/** Collaborators of the authenticator. */
export interface AuthenticatorDeps {
  db: Db;
  cache: KeyCache;
  failuresPerIp: WindowLimiter;
  failuresPerKey: WindowLimiter;
  metrics: Metrics;
  argon2: Argon2Params;
  /** Verifications allowed in flight; more answer 429 without hashing (bounds CPU and memory). */
  maxPending: number;
}

const TOUCH_INTERVAL_MS = 60_000;

/** Extracts the key from an `Authorization: Bearer …` header ("" when absent or malformed). */
export function bearerKey(header: string | undefined): string {
  if (!header) return "";
  const m = /^Bearer[ ]+(\S+)\s*$/i.exec(header);
  return m?.[1] ?? "";
}

/** Checks API keys. One instance per server. */
export class Authenticator {
  private dummyHash = "";
  private pending = 0;

  constructor(private readonly deps: AuthenticatorDeps) {}

  /** Prepares the dummy hash that unknown prefixes are verified against (equal timing). */
  async init(): Promise<void> {
    this.dummyHash = await hashApiKey(generateApiKey().key, this.deps.argon2);
  }

  /**
   * Authenticates the bearer key in `header` for a request from `ip`. Throws `auth_key_invalid`
   * (same answer whether or not the prefix exists), `auth_key_revoked` (only after the full key
   * verified), or `rate_limited` (before any hashing) when the IP or prefix failed too often.
   */
  async authenticate(header: string | undefined, ip: string): Promise<AuthContext> {
    const { db, cache, failuresPerIp, failuresPerKey, metrics } = this.deps;
    const key = bearerKey(header);
    const wellFormed = isWellFormedKey(key);
    const prefix = wellFormed ? lookupPrefix(key) : "";
    const row = wellFormed ? await findKeyByPrefix(db, prefix) : null;

    // A cache hit proves possession of the exact key without Argon2; the row was just read, so a
    // revocation (from any instance) is still seen at once.
    if (row && cache.has(key, row.id)) {
      metrics.keyCacheHits.inc();
      if (row.revokedAt) {
        cache.invalidate(row.id);
        return this.fail("auth_key_revoked", ip, prefix);
      }
      return this.success(row, prefix);
    }

    const wait = Math.max(failuresPerIp.blockedFor(ip), prefix ? failuresPerKey.blockedFor(prefix) : 0);
    if (wait > 0) {
      metrics.rateLimited.inc({ limiter: "auth_failures" });
      throw errors.rateLimited(wait);
    }
    if (!wellFormed) return this.fail("auth_key_invalid", ip, prefix);

    if (this.pending >= this.deps.maxPending) {
      metrics.rateLimited.inc({ limiter: "argon2_pending" });
      throw errors.rateLimited(1);
    }
    this.pending += 1;
    const started = process.hrtime.bigint();
    let ok: boolean;
    try {
      ok = await verifyApiKey(row?.hash ?? this.dummyHash, key);
    } finally {
      this.pending -= 1;
    }
    metrics.argon2Verify.observe(Number(process.hrtime.bigint() - started) / 1e9);
    if (!row || !ok) return this.fail("auth_key_invalid", ip, prefix);
    if (row.revokedAt) return this.fail("auth_key_revoked", ip, prefix);
    cache.add(key, row.id);
    return this.success(row, prefix);
  }

  private async success(
    row: { id: string; accountId: string; org: string; lastUsedAt: Date | null },
    prefix: string,
  ): Promise<AuthContext> {
    if (!row.lastUsedAt || Date.now() - new Date(row.lastUsedAt).getTime() > TOUCH_INTERVAL_MS) {
      await touchKey(this.deps.db, row.id);
    }
    return { keyId: row.id, accountId: row.accountId, org: row.org, prefix };
  }

  private fail(code: "auth_key_invalid" | "auth_key_revoked", ip: string, prefix: string): never {
    this.deps.metrics.authFailures.inc({ code });
    this.deps.failuresPerIp.hit(ip);
    if (prefix) this.deps.failuresPerKey.hit(prefix);
    throw code === "auth_key_revoked" ? errors.keyRevoked() : errors.keyInvalid();
  }
}
