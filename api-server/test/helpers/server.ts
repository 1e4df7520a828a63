// test/helpers/server.ts — owns running the real server as a child process (`node dist/main.js`).

import { spawn, type ChildProcess } from "node:child_process";
import { existsSync } from "node:fs";
import { fileURLToPath } from "node:url";

/** The built entry point; `npm test` builds it first. */
export const MAIN_JS = fileURLToPath(new URL("../../dist/main.js", import.meta.url));

/** Fast Argon2id parameters and generous limits for tests (production defaults are in README). */
export const TEST_ENV: Record<string, string> = {
  LOG_LEVEL: "info",
  SKYTALE_ARGON2_MEMORY_KIB: "1024",
  SKYTALE_ARGON2_TIME_COST: "1",
  SKYTALE_RELAY_URL: "iroh://testrelay@127.0.0.1:7443",
  SKYTALE_RELAY_URLS: "iroh://testrelay2@127.0.0.1:7444,iroh://testrelay@127.0.0.1:7443",
  SKYTALE_RATE_GLOBAL_PER_IP: "100000",
  SKYTALE_RATE_SIGNUP_PER_IP: "100000",
  SKYTALE_RATE_TOKENS_PER_IP: "100000",
  SKYTALE_RATE_TOKENS_PER_KEY: "100000",
  SKYTALE_RATE_AGENTS_PER_IP: "100000",
  SKYTALE_RATE_REVOCATIONS_PER_IP: "100000",
  SKYTALE_RATE_AUTH_FAILURES_PER_IP: "100000",
  SKYTALE_RATE_AUTH_FAILURES_PER_KEY: "100000",
};

/** A server child process. */
export interface ServerProcess {
  url: string;
  /** Everything the process wrote to stdout and stderr so far. */
  output(): string;
  /** SIGTERM, then SIGKILL after 5 s; resolves with the exit code. */
  stop(): Promise<number | null>;
}

const children = new Set<ChildProcess>();
process.on("exit", () => {
  for (const c of children) c.kill("SIGKILL");
});

/** Environment with the server's own variables removed, so the caller's shell cannot leak in. */
function cleanEnv(): Record<string, string> {
  const env: Record<string, string> = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (v === undefined || k.startsWith("SKYTALE_") || k === "DATABASE_URL" || k === "PORT" || k === "HOST") continue;
    env[k] = v;
  }
  return env;
}

/** Starts `node dist/main.js` with `env` on a free port and waits for its "listening" line. */
export async function spawnServer(env: Record<string, string>, timeoutMs = 60_000): Promise<ServerProcess> {
  if (!existsSync(MAIN_JS)) throw new Error(`${MAIN_JS} is missing: run "npm run build -w api-server" first`);
  const child = spawn(process.execPath, [MAIN_JS], {
    env: { ...cleanEnv(), ...TEST_ENV, PORT: "0", ...env },
    stdio: ["ignore", "pipe", "pipe"],
  });
  children.add(child);
  let out = "";
  child.stdout!.on("data", (d: Buffer) => (out += d.toString()));
  child.stderr!.on("data", (d: Buffer) => (out += d.toString()));
  const exited = new Promise<number | null>((resolve) =>
    child.once("exit", (code) => {
      children.delete(child);
      resolve(code);
    }),
  );

  const url = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`server did not start in ${timeoutMs} ms:\n${out}`)), timeoutMs);
    const check = () => {
      const m = /skytale-api listening on (http:\/\/\S+)/.exec(out);
      if (m) {
        clearTimeout(timer);
        resolve(m[1]!);
      }
    };
    child.stdout!.on("data", check);
    void exited.then((code) => {
      clearTimeout(timer);
      reject(new Error(`server exited with ${code} before listening:\n${out}`));
    });
  });

  return {
    url,
    output: () => out,
    async stop() {
      if (child.exitCode !== null || child.signalCode !== null) return child.exitCode;
      child.kill("SIGTERM");
      const timer = setTimeout(() => child.kill("SIGKILL"), 5_000);
      const code = await exited;
      clearTimeout(timer);
      return code;
    },
  };
}
