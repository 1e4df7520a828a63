// test/helpers/backends.ts — owns test databases: a fresh PGlite data dir or a fresh Postgres database.

import { randomBytes } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { PGlite } from "@electric-sql/pglite";
import pg from "pg";

/** Admin URL of the test Postgres (trust auth); each run creates and drops its own database. */
export const PG_ADMIN_URL = process.env.SKYTALE_TEST_PG_URL ?? "postgres://postgres@127.0.0.1:5432/postgres";

/** One fresh database for one server. */
export interface TestDb {
  /** Env to start the server on this database (DATABASE_URL and/or SKYTALE_API_DATA_DIR). */
  env: Record<string, string>;
  /** Data dir (signing keys; PGlite data). */
  dataDir: string;
  /** Every row of every table, as JSON text. PGlite: only while no server holds the data dir. */
  dumpAllRows(): Promise<string>;
  /** Drops the database and removes the data dir. */
  destroy(): Promise<void>;
}

/** A kind of database the suite runs against. */
export interface Backend {
  name: "pglite" | "postgres";
  create(): Promise<TestDb>;
}

const DUMP_SQL = `SELECT table_name FROM information_schema.tables WHERE table_schema = 'public' ORDER BY 1`;

async function dump(query: (sql: string) => Promise<Record<string, unknown>[]>): Promise<string> {
  const out: Record<string, unknown> = {};
  for (const t of await query(DUMP_SQL)) {
    const name = String(t.table_name);
    out[name] = await query(`SELECT * FROM "${name}"`);
  }
  return JSON.stringify(out);
}

function tempDir(): string {
  return mkdtempSync(join(tmpdir(), "skytale-api-test-"));
}

export const pgliteBackend: Backend = {
  name: "pglite",
  async create() {
    const dataDir = tempDir();
    return {
      env: { SKYTALE_API_DATA_DIR: dataDir },
      dataDir,
      async dumpAllRows() {
        const db = new PGlite(join(dataDir, "pgdata"));
        try {
          return await dump(async (sql) => (await db.query<Record<string, unknown>>(sql)).rows);
        } finally {
          await db.close();
        }
      },
      async destroy() {
        rmSync(dataDir, { recursive: true, force: true });
      },
    };
  },
};

export const postgresBackend: Backend = {
  name: "postgres",
  async create() {
    const dataDir = tempDir();
    const dbName = `skytale_test_${randomBytes(6).toString("hex")}`;
    const admin = new pg.Client({ connectionString: PG_ADMIN_URL });
    await admin.connect();
    try {
      await admin.query(`CREATE DATABASE ${dbName}`);
    } finally {
      await admin.end();
    }
    const url = new URL(PG_ADMIN_URL);
    url.pathname = `/${dbName}`;
    return {
      env: { DATABASE_URL: url.toString(), SKYTALE_API_DATA_DIR: dataDir },
      dataDir,
      async dumpAllRows() {
        const c = new pg.Client({ connectionString: url.toString() });
        await c.connect();
        try {
          return await dump(async (sql) => (await c.query(sql)).rows);
        } finally {
          await c.end();
        }
      },
      async destroy() {
        const c = new pg.Client({ connectionString: PG_ADMIN_URL });
        await c.connect();
        try {
          await c.query(`DROP DATABASE IF EXISTS ${dbName} WITH (FORCE)`);
        } finally {
          await c.end();
        }
        rmSync(dataDir, { recursive: true, force: true });
      },
    };
  },
};
