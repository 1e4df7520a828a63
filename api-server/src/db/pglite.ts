// db/pglite.ts — owns the embedded PGlite backend (a single in-process Postgres on a data dir).

import { mkdirSync } from "node:fs";
import { PGlite } from "@electric-sql/pglite";
import type { Db, Queryable } from "./types.js";

/** Opens (creating if needed) an embedded PGlite database in `dir`; `undefined` → in memory. */
export async function openPglite(dir: string | undefined): Promise<Db> {
  if (dir !== undefined) mkdirSync(dir, { recursive: true, mode: 0o700 });
  const pg = new PGlite(dir);
  await pg.waitReady;
  const wrap = (q: { query: PGlite["query"] }): Queryable => ({
    async query<T>(sql: string, params: unknown[] = []) {
      const res = await q.query<T>(sql, params);
      return res.rows;
    },
  });
  const base = wrap(pg);
  return {
    kind: "pglite",
    query: base.query,
    transaction: (fn) => pg.transaction((tx) => fn(wrap(tx))),
    exec: async (sql) => {
      await pg.exec(sql);
    },
    close: () => pg.close(),
  };
}
