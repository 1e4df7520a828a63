// auth/keyCache.ts — owns the short-lived in-memory cache of API keys whose Argon2id check passed.

import { createHmac, randomBytes } from "node:crypto";

/** Role of an API key: `admin` manages the account; `agent` acts only for its bound identity. */
export type KeyRole = "admin" | "agent";

/** What a verified key was found to be (key id, role and, for agent keys, the bound identity). */
export interface VerifiedKey {
  keyId: string;
  role: KeyRole;
  /** The identity an agent key is bound to; null for admin keys. */
  identity: string | null;
}

/**
 * Remembers, for `ttlMs`, that a given plaintext key verified against a given key row, so repeat
 * token requests skip Argon2id. Entries are keyed by HMAC-SHA256(process secret, key): the
 * plaintext is not kept. The caller still loads the key row on every request, so a revocation is
 * seen at once even by other server instances; {@link KeyCache.invalidate} also drops the entry.
 */
export class KeyCache {
  private readonly secret = randomBytes(32);
  private readonly entries = new Map<string, VerifiedKey & { expiresAt: number }>();

  constructor(
    readonly ttlMs: number,
    private readonly maxEntries = 100_000,
  ) {}

  private fingerprint(key: string): string {
    return createHmac("sha256", this.secret).update(key).digest("base64url");
  }

  /**
   * The cached verification of `key` when it was made within the TTL for exactly `row` (same key
   * id, role and identity); otherwise null (and a stale or mismatched entry is dropped).
   */
  get(key: string, row: VerifiedKey): VerifiedKey | null {
    if (this.ttlMs <= 0) return null;
    const fp = this.fingerprint(key);
    const e = this.entries.get(fp);
    if (!e) return null;
    if (e.expiresAt <= Date.now() || e.keyId !== row.keyId || e.role !== row.role || e.identity !== row.identity) {
      this.entries.delete(fp);
      return null;
    }
    return { keyId: e.keyId, role: e.role, identity: e.identity };
  }

  /** Records a successful verification of `key` for row `v.keyId`. */
  add(key: string, v: VerifiedKey): void {
    if (this.ttlMs <= 0) return;
    if (this.entries.size >= this.maxEntries) this.entries.clear();
    this.entries.set(this.fingerprint(key), { keyId: v.keyId, role: v.role, identity: v.identity, expiresAt: Date.now() + this.ttlMs });
  }

  /** Forgets every entry of key row `keyId` (on revoke). */
  invalidate(keyId: string): void {
    for (const [fp, e] of this.entries) if (e.keyId === keyId) this.entries.delete(fp);
  }

  /** Number of live entries (for metrics). */
  get size(): number {
    return this.entries.size;
  }
}
