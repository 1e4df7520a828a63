// Types of lib/dev.js: the local development stack (API server + relay as child processes).

/** Options of `startDevStack`. */
export interface DevStackOptions {
  /** Root of the stack's data: `<root>/api` (PGlite), `<root>/relay` (SQLite), `<root>/logs`, `<root>/dev.json`. Default `./.skytale`. */
  root?: string
  /** Org of the dev account (default `dev`): its channels are `<org>/<namespace>/<service>`. */
  org?: string
  /** API server TCP port (default 7780; a free port is picked when it is taken; 0 = any). */
  apiPort?: number
  /** Relay UDP (iroh) port (default 7781; a free port is picked when it is taken; 0 = any). */
  relayPort?: number
  /** Relay HTTP port for /health and /metrics (default 7782; 0 = any). */
  relayHttpPort?: number
  /** Default true: child output goes only to `<root>/logs/*.log`; false also echoes it to stderr. */
  quiet?: boolean
  /** Grace period of `stop()` before SIGKILL (ms, default 5000). */
  stopTimeoutMs?: number
  /** Relay binary (default: `relayBinary()`). */
  relayBinary?: string
  /** Extra environment of the API server. */
  apiEnv?: Record<string, string>
  /** Extra environment of the relay. */
  relayEnv?: Record<string, string>
  /**
   * Relay nodes (default 1). With 2..9: as many `nats-server` nodes with JetStream, clustered on
   * 127.0.0.1 (store dirs in `<root>/nats`, `nats-server` from PATH or `$NATS_SERVER_BIN`), and as
   * many relays on them (`<root>/relay-<n>`, store `nats`, R3 streams for 3+ nodes); the API
   * server publishes every relay address.
   */
  cluster?: number
}

/** Environment for agents and the CLI (dev only: it contains the dev API key and keystore key). */
export interface DevStackEnv {
  SKYTALE_API_URL: string
  SKYTALE_API_KEY: string
  SKYTALE_RELAY: string
  SKYTALE_RELAY_HTTP: string
  SKYTALE_KEYSTORE_KEY: string
}

/** A running dev stack. */
export interface DevStack {
  /** Absolute root directory. */
  root: string
  /** API server base URL, e.g. `http://127.0.0.1:7780`. */
  apiUrl: string
  /**
   * Relay address `iroh://<endpoint-id>@127.0.0.1:<port>` (stable across restarts with the same root
   * and port); with `cluster`, every relay address, comma-separated (the SDK's `relay` accepts that).
   */
  relay: string
  /** Every relay address (one per relay node). */
  relays: string[]
  /** HTTP base URL of every relay node. */
  relayHttps: string[]
  /** Client URLs of the NATS nodes (`cluster` only; else empty). */
  natsUrls: string[]
  /** Relay HTTP base URL (`/health`, `/metrics`). */
  relayHttp: string
  /** The dev account's API key (org `dev`), kept in clear in `devFile` (mode 0600). Dev only. */
  apiKey: string
  /** A dev keystore key (64 hex chars), kept in clear in `devFile`. Dev only. */
  keystoreKey: string
  /** The dev account's org (`dev` unless `options.org`). */
  org: string
  /** `<root>/dev.json`. */
  devFile: string
  relayDataDir: string
  apiDataDir: string
  logDir: string
  pids: { api: number; relay: number; relays: number[]; nats: number[] }
  env: DevStackEnv
  /** Resolves when any child exits (also during `stop()`); `node` (1-based) in a cluster. */
  exited: Promise<{ which: 'api' | 'relay' | 'nats'; node?: number; code: number | null; signal: string | null }>
  /** SIGTERM to every child (SIGKILL after `stopTimeoutMs`); resolves when all exited. Idempotent. */
  stop(): Promise<void>
}

/**
 * Starts the API server (embedded PGlite in `<root>/api`, 127.0.0.1), then the relay (data in
 * `<root>/relay`, trusting the API server's JWKS), and creates the dev account once (org `dev`).
 * Rejects with code `SKYTALE_DEV_STACK` when something is not built, a stack already runs on
 * the same root, or a process does not start.
 */
export declare function startDevStack(options?: DevStackOptions): Promise<DevStack>

/**
 * The relay binary: `$SKYTALE_RELAY_BIN`, the installed `@skytale/relay-<platform>`, or a build of
 * this checkout (`npm/relay-<platform>/`, `$CARGO_TARGET_DIR[/<triple>]/release`, `target/…`).
 */
export declare function relayBinary(): string
/** `dist/main.js` of `$SKYTALE_API_SERVER_ENTRY`, the installed `@skytale/api-server`, or `<repo>/api-server`. */
export declare function apiServerEntry(): string
export declare const DEFAULT_PORTS: { api: number; relay: number; relayHttp: number }
/** The package root (the repository root in a checkout). */
export declare const REPO: string
