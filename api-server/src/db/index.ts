// db/index.ts — owns backend selection: Postgres when DATABASE_URL is set, else embedded PGlite.

import { join } from "node:path";
import type { Config } from "../config.js";
import { migrate } from "./migrate.js";
import { openPglite } from "./pglite.js";
import { openPostgres } from "./postgres.js";
import type { Db } from "./types.js";

export type { Db, Queryable } from "./types.js";
export { isUniqueViolation } from "./types.js";

/** Opens the configured database and brings its schema up to date. */
export async function openDatabase(config: Config): Promise<Db> {
  const db = config.databaseUrl
    ? await openPostgres(config.databaseUrl)
    : await openPglite(join(config.dataDir, "pgdata"));
  try {
    await migrate(db);
  } catch (err) {
    await db.close().catch(() => undefined);
    throw err;
  }
  return db;
}
