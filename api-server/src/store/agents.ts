// store/agents.ts — owns SQL access to the agent registry (identity → MLS signature key) and its
// append-only event log; revocations also go to the revocation feed in the same transaction.

import type { Db, Queryable } from "../db/index.js";
import { recordRevocation } from "./revocations.js";

/** A registered agent. */
export interface AgentRow {
  org: string;
  identity: string;
  /** base64url (no padding) of the raw 32-byte Ed25519 public key. */
  signatureKey: string;
  status: "active" | "revoked";
  createdAt: Date;
  revokedAt: Date | null;
}

/** Who does what to which agent. */
export interface AgentChange {
  org: string;
  identity: string;
  signatureKey: string;
  /** The API key that made the change (kept in the event log). */
  apiKeyId: string;
}

/** What a registration did: only `registered` and `renewed` changed anything. */
export type RegisterOutcome = "registered" | "renewed" | "key_mismatch" | "revoked";

const COLUMNS = `org, identity, signature_key AS "signatureKey", status, created_at AS "createdAt", revoked_at AS "revokedAt"`;

async function event(tx: Queryable, c: AgentChange, kind: "registered" | "renewed" | "rotated" | "revoked"): Promise<void> {
  await tx.query("INSERT INTO agent_events (org, identity, event, signature_key, api_key_id) VALUES ($1, $2, $3, $4, $5)", [
    c.org,
    c.identity,
    kind,
    c.signatureKey,
    c.apiKeyId,
  ]);
}

/**
 * First-come registration of `c.identity` with `c.signatureKey`. Concurrent first registrations
 * are decided by the primary key (INSERT … ON CONFLICT DO NOTHING): exactly one inserts; the others
 * then see its row (locked FOR UPDATE) and get `renewed` (same key) or `key_mismatch`.
 */
export async function registerAgent(db: Db, c: AgentChange): Promise<RegisterOutcome> {
  return db.transaction(async (tx) => {
    const inserted = await tx.query(
      `INSERT INTO agents (org, identity, signature_key) VALUES ($1, $2, $3)
       ON CONFLICT (org, identity) DO NOTHING RETURNING identity`,
      [c.org, c.identity, c.signatureKey],
    );
    if (inserted.length > 0) {
      await event(tx, c, "registered");
      return "registered";
    }
    const [row] = await tx.query<AgentRow>(`SELECT ${COLUMNS} FROM agents WHERE org = $1 AND identity = $2 FOR UPDATE`, [c.org, c.identity]);
    if (!row) throw new Error("agent row vanished during registration");
    if (row.status === "revoked") return "revoked";
    if (row.signatureKey !== c.signatureKey) return "key_mismatch";
    await tx.query("UPDATE agents SET updated_at = now() WHERE org = $1 AND identity = $2", [c.org, c.identity]);
    await event(tx, c, "renewed");
    return "renewed";
  });
}

/** Sets a new key on an existing agent and re-activates it; false when the agent is unknown. */
export async function rotateAgent(db: Db, c: AgentChange): Promise<boolean> {
  return db.transaction(async (tx) => {
    const rows = await tx.query(
      `UPDATE agents SET signature_key = $3, status = 'active', revoked_at = NULL, updated_at = now()
        WHERE org = $1 AND identity = $2 RETURNING identity`,
      [c.org, c.identity, c.signatureKey],
    );
    if (rows.length === 0) return false;
    await event(tx, c, "rotated");
    return true;
  });
}

/**
 * Revokes an agent: status, event and revocation feed in one transaction. `missing` for an unknown
 * identity; `already` (nothing written) when it was revoked before.
 */
export async function revokeAgent(db: Db, org: string, identity: string, apiKeyId: string): Promise<"revoked" | "already" | "missing"> {
  return db.transaction(async (tx) => {
    const [row] = await tx.query<AgentRow>(`SELECT ${COLUMNS} FROM agents WHERE org = $1 AND identity = $2 FOR UPDATE`, [org, identity]);
    if (!row) return "missing";
    if (row.status === "revoked") return "already";
    await tx.query(
      "UPDATE agents SET status = 'revoked', revoked_at = now(), updated_at = now() WHERE org = $1 AND identity = $2",
      [org, identity],
    );
    await event(tx, { org, identity, signatureKey: row.signatureKey, apiKeyId }, "revoked");
    await recordRevocation(tx, { kind: "agent", org, identity });
    return "revoked";
  });
}

/** One agent of `org`, or null. */
export async function findAgent(db: Queryable, org: string, identity: string): Promise<AgentRow | null> {
  const rows = await db.query<AgentRow>(`SELECT ${COLUMNS} FROM agents WHERE org = $1 AND identity = $2`, [org, identity]);
  return rows[0] ?? null;
}

/** The agents of `org` (only `identity` when given), by identity. */
export async function listAgents(db: Queryable, org: string, identity?: string): Promise<AgentRow[]> {
  return identity === undefined
    ? db.query<AgentRow>(`SELECT ${COLUMNS} FROM agents WHERE org = $1 ORDER BY identity`, [org])
    : db.query<AgentRow>(`SELECT ${COLUMNS} FROM agents WHERE org = $1 AND identity = $2`, [org, identity]);
}
