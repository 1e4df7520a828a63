// main.ts — owns the command line: `node dist/main.js` starts the server from env;
// `node dist/main.js rotate-signing-key` adds a new key to the data-dir key ring.

import { ConfigError, loadConfig } from "./config.js";
import { startServer } from "./server.js";
import { rotateSigningKey } from "./signing/keyRing.js";

async function main(): Promise<void> {
  const config = loadConfig();
  const cmd = process.argv[2];
  if (cmd === "rotate-signing-key") {
    if (config.signingKeyPem) {
      throw new ConfigError("SKYTALE_SIGNING_KEY is set: rotate by moving it to SKYTALE_PREVIOUS_SIGNING_KEYS and setting a new one");
    }
    const path = rotateSigningKey(config.dataDir);
    console.log(`new signing key written to ${path}; restart the server to sign with it`);
    return;
  }
  if (cmd !== undefined) throw new ConfigError(`unknown command: ${cmd}`);

  const server = await startServer(config);
  console.log(`skytale-api listening on ${server.url}`);
  let stopping = false;
  const stop = (signal: string) => {
    if (stopping) return;
    stopping = true;
    server.app.log.info({ signal }, "shutting down");
    server.close().then(
      () => process.exit(0),
      () => process.exit(1),
    );
  };
  process.on("SIGINT", () => stop("SIGINT"));
  process.on("SIGTERM", () => stop("SIGTERM"));
}

main().catch((err: unknown) => {
  const msg = err instanceof ConfigError ? `config error: ${err.message}` : `fatal: ${err instanceof Error ? err.message : String(err)}`;
  console.error(`skytale-api ${msg}`);
  process.exit(1);
});
