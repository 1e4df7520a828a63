// store/accounts.ts — owns SQL access to the accounts table.

import type { Queryable } from "../db/index.js";

/** An account as the API shows it. */
export interface Account {
  id: string;
  email: string;
  name: string;
  org: string;
}

/** Inserts an account; throws a unique violation (23505) when `org` is taken. */
export async function insertAccount(db: Queryable, a: Account): Promise<void> {
  await db.query("INSERT INTO accounts (id, email, name, org) VALUES ($1, $2, $3, $4)", [a.id, a.email, a.name, a.org]);
}

/** Loads one account by id, or null. */
export async function findAccount(db: Queryable, id: string): Promise<Account | null> {
  const rows = await db.query<Account>("SELECT id, email, name, org FROM accounts WHERE id = $1", [id]);
  return rows[0] ?? null;
}
