// auth/keyCache.ts — owns the short-lived in-memory cache of API keys whose Argon2id check passed.

import { createHmac, randomBytes } from "node:crypto";

/**
 * Remembers, for `ttlMs`, that a given plaintext key verified against a given key row, so repeat
 * token requests skip Argon2id. Entries are keyed by HMAC-SHA256(process secret, key): the
 * plaintext is not kept. The caller still loads the key row on every request, so a revocation is
 * seen at once even by other server instances; {@link KeyCache.invalidate} also drops the entry.
 */
export class KeyCache {
  private readonly secret = randomBytes(32);
  private readonly entries = new Map<string, { keyId: string; expiresAt: number }>();

  constructor(
    readonly ttlMs: number,
    private readonly maxEntries = 100_000,
  ) {}

  private fingerprint(key: string): string {
    return createHmac("sha256", this.secret).update(key).digest("base64url");
  }

  /** True when `key` was verified for row `keyId` within the TTL. */
  has(key: string, keyId: string): boolean {
    if (this.ttlMs <= 0) return false;
    const fp = this.fingerprint(key);
    const e = this.entries.get(fp);
    if (!e) return false;
    if (e.expiresAt <= Date.now() || e.keyId !== keyId) {
      this.entries.delete(fp);
      return false;
    }
    return true;
  }

  /** Records a successful verification of `key` for row `keyId`. */
  add(key: string, keyId: string): void {
    if (this.ttlMs <= 0) return;
    if (this.entries.size >= this.maxEntries) this.entries.clear();
    this.entries.set(this.fingerprint(key), { keyId, expiresAt: Date.now() + this.ttlMs });
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
