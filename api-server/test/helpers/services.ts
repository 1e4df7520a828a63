// test/helpers/services.ts — owns probing the real Postgres and Redis the scale-out tests need, and
// the rule for when those tests may be skipped (only when the service is genuinely unreachable and
// not in CI).

import { Socket } from "node:net";
import pg from "pg";
import { PG_ADMIN_URL } from "./backends.js";

/** Redis for the tests (each test uses its own key prefix). */
export const REDIS_URL = process.env.SKYTALE_TEST_REDIS_URL ?? "redis://127.0.0.1:6379";

/** True when Postgres answers `SELECT 1` at {@link PG_ADMIN_URL}. */
export async function postgresReachable(): Promise<boolean> {
  const c = new pg.Client({ connectionString: PG_ADMIN_URL, connectionTimeoutMillis: 2_000 });
  try {
    await c.connect();
    await c.query("SELECT 1");
    return true;
  } catch {
    return false;
  } finally {
    await c.end().catch(() => undefined);
  }
}

/** True when Redis answers PING at {@link REDIS_URL} (raw RESP, no client needed). */
export async function redisReachable(): Promise<boolean> {
  const u = new URL(REDIS_URL);
  return new Promise((resolve) => {
    const sock = new Socket();
    const done = (ok: boolean) => {
      sock.destroy();
      resolve(ok);
    };
    sock.setTimeout(2_000, () => done(false));
    sock.once("error", () => done(false));
    sock.connect(Number(u.port || 6379), u.hostname, () => sock.write("PING\r\n"));
    sock.once("data", (d) => done(d.toString().startsWith("+PONG") || d.toString().startsWith("-NOAUTH")));
  });
}

/**
 * Whether a suite needing `service` runs. Unreachable → skipped with a message, except in CI
 * (`CI` set), where `.ci/run` starts both services and a missing one is a failure.
 */
export function shouldRun(service: string, reachable: boolean): boolean {
  if (reachable) return true;
  const msg = `${service} is unreachable: the scale-out tests that need it are skipped (start it, see .ci/run)`;
  if (process.env.CI) throw new Error(`${msg} — not allowed in CI`);
  console.warn(msg);
  return false;
}

/** Polls `check` until it returns a value other than undefined, or throws after `timeoutMs`. */
export async function waitFor<T>(what: string, check: () => Promise<T | undefined>, timeoutMs = 10_000, everyMs = 25): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await check();
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, everyMs));
  }
}
