// store/apiKeys.ts — owns SQL access to the api_keys table (hashes and prefixes only, never plaintext).

import type { KeyRole } from "../auth/keyCache.js";
import type { Db, Queryable } from "../db/index.js";
import { recordRevocation } from "./revocations.js";

/** A stored key row as needed for authentication. */
export interface KeyRow {
  id: string;
  accountId: string;
  org: string;
  hash: string;
  role: KeyRole;
  identity: string | null;
  revokedAt: Date | null;
  lastUsedAt: Date | null;
}

/** A key as listed to its owner (no secret material). */
export interface KeyInfo {
  id: string;
  name: string;
  prefix: string;
  role: KeyRole;
  identity: string | null;
  createdAt: string;
  lastUsedAt: string | null;
}

/** A key row to insert: admin keys have no identity, agent keys exactly one. */
export interface NewKeyRow {
  id: string;
  accountId: string;
  name: string;
  prefix: string;
  hash: string;
  role: KeyRole;
  identity: string | null;
}

/** Inserts a key row; throws a unique violation (23505) on a prefix collision. */
export async function insertKey(db: Queryable, k: NewKeyRow): Promise<void> {
  await db.query("INSERT INTO api_keys (id, account_id, name, prefix, hash, role, identity) VALUES ($1, $2, $3, $4, $5, $6, $7)", [
    k.id,
    k.accountId,
    k.name,
    k.prefix,
    k.hash,
    k.role,
    k.identity,
  ]);
}

/** Finds the key row (revoked or not) with this lookup prefix, joined with its account's org. */
export async function findKeyByPrefix(db: Queryable, prefix: string): Promise<KeyRow | null> {
  const rows = await db.query<KeyRow>(
    `SELECT k.id, k.account_id AS "accountId", a.org, k.hash, k.role, k.identity,
            k.revoked_at AS "revokedAt", k.last_used_at AS "lastUsedAt"
       FROM api_keys k JOIN accounts a ON a.id = k.account_id
      WHERE k.prefix = $1`,
    [prefix],
  );
  return rows[0] ?? null;
}

/** Records use of a key (callers throttle this to about once a minute per key). */
export async function touchKey(db: Queryable, id: string): Promise<void> {
  await db.query("UPDATE api_keys SET last_used_at = now() WHERE id = $1", [id]);
}

/** Lists an account's active (unrevoked) keys, oldest first. */
export async function listKeys(db: Queryable, accountId: string): Promise<KeyInfo[]> {
  const rows = await db.query<Omit<KeyInfo, "createdAt" | "lastUsedAt"> & { createdAt: Date; lastUsedAt: Date | null }>(
    `SELECT id, name, prefix, role, identity, created_at AS "createdAt", last_used_at AS "lastUsedAt"
       FROM api_keys WHERE account_id = $1 AND revoked_at IS NULL ORDER BY created_at, id`,
    [accountId],
  );
  return rows.map((r) => ({
    id: r.id,
    name: r.name,
    prefix: r.prefix,
    role: r.role,
    identity: r.identity,
    createdAt: new Date(r.createdAt).toISOString(),
    lastUsedAt: r.lastUsedAt ? new Date(r.lastUsedAt).toISOString() : null,
  }));
}

/**
 * Revokes an account's active key and appends it to the revocation feed, in one transaction;
 * returns false when no such active key exists.
 */
export async function revokeKey(db: Db, accountId: string, id: string): Promise<boolean> {
  return db.transaction(async (tx) => {
    const rows = await tx.query(
      "UPDATE api_keys SET revoked_at = now() WHERE id = $1 AND account_id = $2 AND revoked_at IS NULL RETURNING id",
      [id, accountId],
    );
    if (rows.length === 0) return false;
    await recordRevocation(tx, { kind: "api_key", keyId: id });
    return true;
  });
}
