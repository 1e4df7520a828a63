// db/types.ts — owns the database abstraction shared by the PGlite and Postgres backends.

/** Something that runs parameterised SQL ($1, $2, …) and returns rows. */
export interface Queryable {
  /** Runs one statement with parameters and returns its rows. */
  query<T = Record<string, unknown>>(sql: string, params?: unknown[]): Promise<T[]>;
}

/** A database handle: queries, transactions and shutdown. */
export interface Db extends Queryable {
  /** "pglite" or "postgres". */
  readonly kind: "pglite" | "postgres";
  /** Runs `fn` inside BEGIN/COMMIT (ROLLBACK on throw). */
  transaction<T>(fn: (tx: Queryable) => Promise<T>): Promise<T>;
  /** Runs a script of several statements without parameters (migrations). */
  exec(sql: string): Promise<void>;
  /** Closes connections / flushes the embedded database. */
  close(): Promise<void>;
}

/** True when `err` is a Postgres unique-constraint violation (SQLSTATE 23505). */
export function isUniqueViolation(err: unknown): boolean {
  return typeof err === "object" && err !== null && (err as { code?: unknown }).code === "23505";
}
