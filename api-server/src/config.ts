// config.ts — owns the server configuration: its shape, production defaults, and parsing from env.

/** Argon2id cost parameters used when hashing new API keys. */
export interface Argon2Params {
  /** Memory cost in KiB. */
  memoryCost: number;
  /** Number of passes. */
  timeCost: number;
  /** Degree of parallelism (lanes). */
  parallelism: number;
}

/**
 * Rate-limit settings (all windows are one minute). Counted where {@link Config.limitsBackend}
 * says: shared by every instance on Postgres or Redis, per process in memory.
 */
export interface RateLimits {
  /** Requests per IP per minute over all routes. */
  globalPerIp: number;
  /** Signups per IP per minute. */
  signupPerIp: number;
  /** `POST /v1/tokens` per IP per minute. */
  tokensPerIp: number;
  /** `POST /v1/tokens` per API key prefix per minute. */
  tokensPerKey: number;
  /** `POST /v1/agents` and `POST /v1/agents/{identity}/rotate` per IP per minute. */
  agentsPerIp: number;
  /** `GET /v1/revocations` per IP per minute (public route). */
  revocationsPerIp: number;
  /** `GET /v1/revocations` per minute for each listed relay that signs its polls (its own bucket). */
  revocationsPerRelay: number;
  /** Failed authentications per IP per minute before further attempts get 429 without hashing. */
  authFailuresPerIp: number;
  /** Failed authentications per key prefix per minute before further attempts get 429. */
  authFailuresPerKey: number;
  /** Argon2id verifications allowed in flight at once (over all instances sharing the backend); beyond that requests get 429 at once. */
  argon2MaxPending: number;
  /** Lease of one Argon2id slot on a shared backend (ms): a dead instance's slots free up after this. */
  argon2LeaseMs: number;
}

/** Where rate-limit counters and the Argon2id slots live; `auto` picks redis > postgres > memory. */
export type LimitsBackendSetting = "auto" | "memory" | "postgres" | "redis";

/** Full server configuration. Build one with {@link loadConfig} or {@link defaultConfig}. */
export interface Config {
  host: string;
  /** TCP port; 0 picks a free one. */
  port: number;
  /** postgres://… URL; undefined → embedded PGlite in `dataDir`. */
  databaseUrl: string | undefined;
  /** Holds the PGlite database and, without `signingKeyPem`, the signing key ring. */
  dataDir: string;
  /** Current Ed25519 PKCS#8 PEM signing key; undefined → key ring in the data dir. */
  signingKeyPem: string | undefined;
  /** Older keys (PEM, private or public) that are still published in the JWKS but never sign. */
  previousSigningKeysPem: string | undefined;
  issuer: string;
  audience: string;
  /** Relay address handed to clients with each token (null when unset); the first of {@link relayList}. */
  relayUrl: string | null;
  /** More relay addresses (`SKYTALE_RELAY_URLS`); {@link relayList} merges them after `relayUrl`. */
  relayUrls: string[];
  /** Token lifetime in seconds (fixed at 3600 by the protocol; configurable only for tests). */
  tokenTtlSeconds: number;
  /** Agent credential lifetime in seconds (default 30 days). */
  credentialTtlSeconds: number;
  argon2: Argon2Params;
  /** How long a verified API key is remembered in memory (ms); 0 disables the cache. */
  keyCacheTtlMs: number;
  rateLimits: RateLimits;
  /** Where limits are counted (see {@link LimitsBackendSetting}). */
  limitsBackend: LimitsBackendSetting;
  /** redis://… URL of the Redis shared by the instances (limits and Argon2id slots); undefined → none. */
  redisUrl: string | undefined;
  /** Prefix of every Redis key this server writes (several deployments can share one Redis). */
  redisPrefix: string;
  /** Maximum request body in bytes. */
  bodyLimit: number;
  /** Trust X-Forwarded-For (only behind a reverse proxy you control). */
  trustProxy: boolean;
  /** Pino level, or "silent". */
  logLevel: string;
}

/** Production defaults (OWASP-recommended Argon2id: m=19 MiB, t=2, p=1). */
export function defaultConfig(): Config {
  return {
    host: "127.0.0.1",
    port: 8080,
    databaseUrl: undefined,
    dataDir: "./.skytale/api",
    signingKeyPem: undefined,
    previousSigningKeysPem: undefined,
    issuer: "skytale-api",
    audience: "skytale-relay",
    relayUrl: null,
    relayUrls: [],
    tokenTtlSeconds: 3600,
    credentialTtlSeconds: 30 * 24 * 3600,
    argon2: { memoryCost: 19456, timeCost: 2, parallelism: 1 },
    keyCacheTtlMs: 60_000,
    rateLimits: {
      globalPerIp: 1200,
      signupPerIp: 20,
      tokensPerIp: 600,
      tokensPerKey: 120,
      agentsPerIp: 120,
      revocationsPerIp: 120,
      revocationsPerRelay: 600,
      authFailuresPerIp: 20,
      authFailuresPerKey: 10,
      argon2MaxPending: 64,
      argon2LeaseMs: 30_000,
    },
    limitsBackend: "auto",
    redisUrl: undefined,
    redisPrefix: "skytale:api:",
    bodyLimit: 16 * 1024,
    trustProxy: false,
    logLevel: "info",
  };
}

/** Thrown for an unusable configuration value; the message names the variable, never its value. */
export class ConfigError extends Error {}

function int(env: NodeJS.ProcessEnv, name: string, fallback: number, min = 0): number {
  const raw = env[name];
  if (raw === undefined || raw === "") return fallback;
  if (!/^\d+$/.test(raw) || Number(raw) < min) {
    throw new ConfigError(`${name} must be an integer >= ${min}`);
  }
  return Number(raw);
}

function str(env: NodeJS.ProcessEnv, name: string): string | undefined {
  const raw = env[name];
  return raw === undefined || raw === "" ? undefined : raw;
}

/** Splits a comma-separated list, trimming entries and dropping empty ones. */
function list(raw: string | undefined): string[] {
  return (raw ?? "")
    .split(",")
    .map((x) => x.trim())
    .filter((x) => x.length > 0);
}

/**
 * The relay addresses clients are given, in order: `relayUrl` first, then `relayUrls` without
 * duplicates. Empty when none is configured.
 */
export function relayList(c: Pick<Config, "relayUrl" | "relayUrls">): string[] {
  const out: string[] = [];
  for (const u of [c.relayUrl, ...(c.relayUrls ?? [])]) if (u && !out.includes(u)) out.push(u);
  return out;
}

const BACKENDS: readonly LimitsBackendSetting[] = ["auto", "memory", "postgres", "redis"];

function limitsBackend(raw: string | undefined): LimitsBackendSetting {
  const v = (raw ?? "auto") as LimitsBackendSetting;
  if (!BACKENDS.includes(v)) throw new ConfigError(`SKYTALE_LIMITS_BACKEND must be one of ${BACKENDS.join(", ")}`);
  return v;
}

/** Reads the configuration from environment variables (see README.md for the list). */
export function loadConfig(env: NodeJS.ProcessEnv = process.env): Config {
  const d = defaultConfig();
  const r = d.rateLimits;
  return {
    host: str(env, "HOST") ?? d.host,
    port: int(env, "PORT", d.port),
    databaseUrl: str(env, "DATABASE_URL"),
    dataDir: str(env, "SKYTALE_API_DATA_DIR") ?? d.dataDir,
    signingKeyPem: str(env, "SKYTALE_SIGNING_KEY"),
    previousSigningKeysPem: str(env, "SKYTALE_PREVIOUS_SIGNING_KEYS"),
    issuer: str(env, "SKYTALE_ISSUER") ?? d.issuer,
    audience: d.audience,
    relayUrl: str(env, "SKYTALE_RELAY_URL") ?? list(env.SKYTALE_RELAY_URLS)[0] ?? null,
    relayUrls: list(env.SKYTALE_RELAY_URLS),
    tokenTtlSeconds: int(env, "SKYTALE_TOKEN_TTL_SECONDS", d.tokenTtlSeconds, 1),
    credentialTtlSeconds: int(env, "SKYTALE_CREDENTIAL_TTL_SECONDS", d.credentialTtlSeconds, 1),
    argon2: {
      memoryCost: int(env, "SKYTALE_ARGON2_MEMORY_KIB", d.argon2.memoryCost, 8),
      timeCost: int(env, "SKYTALE_ARGON2_TIME_COST", d.argon2.timeCost, 1),
      parallelism: int(env, "SKYTALE_ARGON2_PARALLELISM", d.argon2.parallelism, 1),
    },
    keyCacheTtlMs: int(env, "SKYTALE_KEY_CACHE_TTL_MS", d.keyCacheTtlMs),
    rateLimits: {
      globalPerIp: int(env, "SKYTALE_RATE_GLOBAL_PER_IP", r.globalPerIp, 1),
      signupPerIp: int(env, "SKYTALE_RATE_SIGNUP_PER_IP", r.signupPerIp, 1),
      tokensPerIp: int(env, "SKYTALE_RATE_TOKENS_PER_IP", r.tokensPerIp, 1),
      tokensPerKey: int(env, "SKYTALE_RATE_TOKENS_PER_KEY", r.tokensPerKey, 1),
      agentsPerIp: int(env, "SKYTALE_RATE_AGENTS_PER_IP", r.agentsPerIp, 1),
      revocationsPerIp: int(env, "SKYTALE_RATE_REVOCATIONS_PER_IP", r.revocationsPerIp, 1),
      revocationsPerRelay: int(env, "SKYTALE_RATE_REVOCATIONS_PER_RELAY", r.revocationsPerRelay, 1),
      authFailuresPerIp: int(env, "SKYTALE_RATE_AUTH_FAILURES_PER_IP", r.authFailuresPerIp, 1),
      authFailuresPerKey: int(env, "SKYTALE_RATE_AUTH_FAILURES_PER_KEY", r.authFailuresPerKey, 1),
      argon2MaxPending: int(env, "SKYTALE_ARGON2_MAX_PENDING", r.argon2MaxPending, 1),
      argon2LeaseMs: int(env, "SKYTALE_ARGON2_LEASE_MS", r.argon2LeaseMs, 10),
    },
    limitsBackend: limitsBackend(str(env, "SKYTALE_LIMITS_BACKEND")),
    redisUrl: str(env, "SKYTALE_REDIS_URL"),
    redisPrefix: str(env, "SKYTALE_REDIS_PREFIX") ?? d.redisPrefix,
    bodyLimit: int(env, "SKYTALE_BODY_LIMIT", d.bodyLimit, 256),
    trustProxy: env.SKYTALE_TRUST_PROXY === "1" || env.SKYTALE_TRUST_PROXY === "true",
    logLevel: str(env, "LOG_LEVEL") ?? d.logLevel,
  };
}
