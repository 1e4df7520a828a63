// store/revocations.ts — owns the append-only revocation feed (revoked API keys and agents) that
// the relay and members poll with a cursor.

import type { Queryable } from "../db/index.js";

/** Advisory lock taken before every append, so feed sequence numbers commit in order. */
const FEED_LOCK = 742032;

/** One revocation to append. */
export type Revocation = { kind: "api_key"; keyId: string } | { kind: "agent"; org: string; identity: string };

/** One page of the feed. `revokedAt` is in unix seconds. */
export interface RevocationPage {
  /** Pass as `since` next time: the last sequence number returned (or the newest one). */
  cursor: number;
  apiKeys: { id: string; revokedAt: number }[];
  agents: { org: string; identity: string; revokedAt: number }[];
}

/** Most entries one page returns; a full page means "poll again with the new cursor". */
export const REVOCATION_PAGE_SIZE = 1000;

/**
 * Appends a revocation. Call inside the transaction that performs the revocation: the advisory
 * lock (held until commit) makes sequence numbers become visible in order, so a reader that has
 * seen `seq = n` never later finds a new entry below `n`.
 */
export async function recordRevocation(tx: Queryable, r: Revocation): Promise<void> {
  await tx.query("SELECT pg_advisory_xact_lock($1)", [FEED_LOCK]);
  if (r.kind === "api_key") {
    await tx.query("INSERT INTO revocations (kind, key_id) VALUES ('api_key', $1)", [r.keyId]);
  } else {
    await tx.query("INSERT INTO revocations (kind, org, identity) VALUES ('agent', $1, $2)", [r.org, r.identity]);
  }
}

/** Everything revoked after sequence number `since` (oldest first, at most one page). */
export async function listRevocations(db: Queryable, since: number, limit = REVOCATION_PAGE_SIZE): Promise<RevocationPage> {
  const rows = await db.query<{ seq: string | number; kind: string; key_id: string | null; org: string | null; identity: string | null; at: string | number }>(
    `SELECT seq, kind, key_id, org, identity, floor(extract(epoch FROM revoked_at))::bigint AS at
       FROM revocations WHERE seq > $1 ORDER BY seq LIMIT $2`,
    [since, limit],
  );
  const page: RevocationPage = { cursor: since, apiKeys: [], agents: [] };
  for (const r of rows) {
    const revokedAt = Number(r.at);
    if (r.kind === "api_key") page.apiKeys.push({ id: r.key_id!, revokedAt });
    else page.agents.push({ org: r.org!, identity: r.identity!, revokedAt });
    page.cursor = Number(r.seq);
  }
  if (rows.length === 0) {
    // Nothing new: answer the newest sequence number, so a cursor from another database (or a
    // reset one) comes back lower than `since` and the client can start over.
    const [max] = await db.query<{ max: string | number | null }>("SELECT max(seq) AS max FROM revocations");
    page.cursor = Math.min(since, Number(max?.max ?? 0));
  }
  return page;
}
