// auth/authenticator.ts — owns API key authentication: bearer parsing, lookup by prefix, Argon2id
// verification (with a dummy hash for unknown prefixes), failure limits, the verified-key cache.

import type { Argon2Params } from "../config.js";
import type { Db } from "../db/index.js";
import { errors } from "../errors.js";
import type { Metrics } from "../metrics.js";
import { findKeyByPrefix, touchKey, type KeyRow } from "../store/apiKeys.js";
import { generateApiKey, hashApiKey, isWellFormedKey, lookupPrefix, verifyApiKey } from "./apiKey.js";
import type { KeyCache, KeyRole, VerifiedKey } from "./keyCache.js";
import type { Semaphore, WindowLimiter } from "../limits/index.js";

/** Who an authenticated request acts for. */
export interface AuthContext {
  keyId: string;
  accountId: string;
  org: string;
  /** Lookup prefix of the key used (not secret). */
  prefix: string;
  /** `admin` manages the account; `agent` acts only for {@link AuthContext.identity}. */
  role: KeyRole;
  /** The identity an agent key is bound to; null for admin keys. */
  identity: string | null;
}

/** Collaborators of the authenticator. */
export interface AuthenticatorDeps {
  db: Db;
  cache: KeyCache;
  failuresPerIp: WindowLimiter;
  failuresPerKey: WindowLimiter;
  metrics: Metrics;
  argon2: Argon2Params;
  /**
   * Slots for Argon2id verifications in flight (shared by the instances on a shared backend);
   * with none free the request answers 429 without hashing (bounds CPU and memory).
   */
  argon2Slots: Semaphore;
  /** Verifies a key against a PHC hash; injectable for tests (default {@link verifyApiKey}). */
  verify?: (phc: string, key: string) => Promise<boolean>;
}

const TOUCH_INTERVAL_MS = 60_000;

function verifiedOf(row: KeyRow): VerifiedKey {
  return { keyId: row.id, role: row.role, identity: row.identity };
}

/** Extracts the key from an `Authorization: Bearer …` header ("" when absent or malformed). */
export function bearerKey(header: string | undefined): string {
  if (!header) return "";
  const m = /^Bearer[ ]+(\S+)\s*$/i.exec(header);
  return m?.[1] ?? "";
}

/** Checks API keys. One instance per server. */
export class Authenticator {
  private dummyHash = "";

  constructor(private readonly deps: AuthenticatorDeps) {}

  /** Prepares the dummy hash that unknown prefixes are verified against (equal timing). */
  async init(): Promise<void> {
    this.dummyHash = await hashApiKey(generateApiKey().key, this.deps.argon2);
  }

  /**
   * Authenticates the bearer key in `header` for a request from `ip`. Throws
   * `SKYTALE_AUTH_KEY_INVALID` (same answer whether or not the prefix exists),
   * `SKYTALE_AUTH_KEY_REVOKED` (only after the full key verified), or `SKYTALE_RATE_LIMITED`
   * (before any hashing) when the IP or prefix failed too often or no Argon2id slot is free.
   * `beforeArgon2(prefix)` runs only when the key has to be hashed (not on a cache hit), after
   * the failure limits and before a slot is taken: a route's own pre-hash check (it may throw).
   */
  async authenticate(header: string | undefined, ip: string, beforeArgon2?: (prefix: string) => Promise<void>): Promise<AuthContext> {
    const { db, cache, failuresPerIp, failuresPerKey, metrics } = this.deps;
    const key = bearerKey(header);
    const wellFormed = isWellFormedKey(key);
    const prefix = wellFormed ? lookupPrefix(key) : "";
    const row = wellFormed ? await findKeyByPrefix(db, prefix) : null;

    // A cache hit proves possession of the exact key without Argon2; the row was just read, so a
    // revocation (from any instance) is still seen at once.
    if (row && cache.get(key, verifiedOf(row))) {
      metrics.keyCacheHits.inc();
      if (row.revokedAt) {
        cache.invalidate(row.id);
        return this.fail("SKYTALE_AUTH_KEY_REVOKED", ip, prefix);
      }
      return this.success(row, prefix);
    }

    const [byIp, byKey] = await Promise.all([failuresPerIp.blockedFor(ip), prefix ? failuresPerKey.blockedFor(prefix) : 0]);
    const wait = Math.max(byIp, byKey);
    if (wait > 0) {
      metrics.rateLimited.inc({ limiter: "auth_failures" });
      throw errors.rateLimited(wait);
    }
    if (!wellFormed) return this.fail("SKYTALE_AUTH_KEY_INVALID", ip, prefix);
    if (beforeArgon2) await beforeArgon2(prefix);

    const lease = await this.deps.argon2Slots.tryAcquire();
    if (!lease) {
      metrics.rateLimited.inc({ limiter: "argon2_pending" });
      throw errors.rateLimited(1);
    }
    const started = process.hrtime.bigint();
    let ok: boolean;
    try {
      ok = await (this.deps.verify ?? verifyApiKey)(row?.hash ?? this.dummyHash, key);
    } finally {
      await lease.release().catch(() => undefined);
    }
    metrics.argon2Verify.observe(Number(process.hrtime.bigint() - started) / 1e9);
    if (!row || !ok) return this.fail("SKYTALE_AUTH_KEY_INVALID", ip, prefix);
    if (row.revokedAt) return this.fail("SKYTALE_AUTH_KEY_REVOKED", ip, prefix);
    cache.add(key, verifiedOf(row));
    return this.success(row, prefix);
  }

  private async success(row: KeyRow, prefix: string): Promise<AuthContext> {
    if (!row.lastUsedAt || Date.now() - new Date(row.lastUsedAt).getTime() > TOUCH_INTERVAL_MS) {
      await touchKey(this.deps.db, row.id);
    }
    return { keyId: row.id, accountId: row.accountId, org: row.org, prefix, role: row.role, identity: row.identity };
  }

  private async fail(code: "SKYTALE_AUTH_KEY_INVALID" | "SKYTALE_AUTH_KEY_REVOKED", ip: string, prefix: string): Promise<never> {
    this.deps.metrics.authFailures.inc({ code });
    await Promise.all([this.deps.failuresPerIp.hit(ip), prefix ? this.deps.failuresPerKey.hit(prefix) : undefined]);
    throw code === "SKYTALE_AUTH_KEY_REVOKED" ? errors.keyRevoked() : errors.keyInvalid();
  }
}
