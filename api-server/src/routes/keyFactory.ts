// routes/keyFactory.ts — owns creating an API key row (hash outside the transaction, prefix retry).

import { generateApiKey, hashApiKey } from "../auth/apiKey.js";
import type { KeyRole } from "../auth/keyCache.js";
import { isUniqueViolation, type Queryable } from "../db/index.js";
import type { Services } from "../services.js";
import { insertKey } from "../store/apiKeys.js";
import { newId } from "../store/ids.js";

/** A created key: its plaintext is returned to the caller once and never stored. */
export interface CreatedKey {
  id: string;
  prefix: string;
  name: string;
  role: KeyRole;
  identity: string | null;
  key: string;
}

/**
 * Generates a key, hashes it with Argon2id, and inserts it for `accountId` in a transaction that
 * first runs `before` (e.g. the account insert at signup). Retries on the (72-bit) prefix colliding.
 * Without `identity` the key is an admin key; with one, an agent key bound to that identity.
 */
export async function createKey(
  s: Services,
  name: string,
  accountId: string,
  opts: { identity?: string | undefined; before?: (tx: Queryable) => Promise<void> } = {},
): Promise<CreatedKey> {
  const identity = opts.identity ?? null;
  const role: KeyRole = identity === null ? "admin" : "agent";
  for (let attempt = 0; ; attempt++) {
    const { key, prefix } = generateApiKey();
    const hash = await hashApiKey(key, s.config.argon2);
    const id = newId("key");
    try {
      await s.db.transaction(async (tx) => {
        if (opts.before) await opts.before(tx);
        await insertKey(tx, { id, accountId, name, prefix, hash, role, identity });
      });
      return { id, prefix, name, role, identity, key };
    } catch (err) {
      const onPrefix = isUniqueViolation(err) && /prefix/.test(String((err as { constraint?: string; message?: string }).constraint ?? (err as Error).message));
      if (!onPrefix || attempt >= 2) throw err;
    }
  }
}
