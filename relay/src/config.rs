//! Relay configuration: a TOML file (`--config relay.toml`) with `SKYTALE_RELAY_*` env overrides.
//!
//! ```toml
//! data_dir = "./relay-data"          # iroh secret key + SQLite store
//! listen = "127.0.0.1:0"             # iroh UDP socket (port 0 = any)
//! http_listen = "127.0.0.1:0"        # /health and /metrics
//! public_host = "127.0.0.1"          # host printed in iroh://<id>@host:port (default: listen ip)
//! [auth]
//! jwks_url = "http://127.0.0.1:3000/.well-known/jwks.json"
//! public_key = "<PEM or base64url Ed25519 x>"   # alternative/addition to jwks_url
//! issuer = "skytale-api"             # default; "" = only require that iss is present
//! audience = "skytale-relay"
//! [limits]
//! max_frame_bytes = 262144
//! max_connections_per_ip = 256
//! max_channels_per_org = 100000
//! [store]
//! kind = "sqlite"                    # or "nats": a relay cluster on NATS JetStream
//! nats_url = "nats://127.0.0.1:4222" # comma-separated servers of the NATS cluster
//! ```
//! Env overrides: `SKYTALE_RELAY_DATA_DIR`, `_LISTEN`, `_HTTP_LISTEN`, `_PUBLIC_HOST`,
//! `_JWKS_URL`, `_PUBLIC_KEY`, `_ISSUER`, `_AUDIENCE`, `_LEEWAY_SECS`, and every `[limits]` key
//! upper-cased (e.g. `SKYTALE_RELAY_MAX_FRAME_BYTES`, `SKYTALE_RELAY_AUTH_TIMEOUT_MS`,
//! `SKYTALE_RELAY_MAX_ARCHIVE_BYTES_PER_ORG`), and `SKYTALE_RELAY_STORE` (`sqlite`|`nats`),
//! `SKYTALE_RELAY_NATS_URL`, `_NATS_PREFIX`, `_NATS_REPLICAS`, `_NATS_CACHED_CHANNELS`.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;

use crate::error::{RelayError, Result};

/// Full relay configuration.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Directory for the iroh secret key (`iroh.key`) and the store (`relay.sqlite3`).
    pub data_dir: PathBuf,
    /// iroh UDP bind address.
    pub listen: SocketAddr,
    /// HTTP bind address for `/health` and `/metrics`.
    pub http_listen: SocketAddr,
    /// Host shown in the printed relay address (default: the listen IP, or 127.0.0.1 if unspecified).
    pub public_host: Option<String>,
    /// Token verification.
    pub auth: AuthConfig,
    /// Limits.
    pub limits: Limits,
    /// Where the relay keeps its state.
    pub store: StoreConfig,
}

/// Which store backend, and its settings.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum StoreKind {
    /// Embedded SQLite in `data_dir` (one relay node).
    #[default]
    Sqlite,
    /// NATS JetStream: several relay nodes share the cluster.
    Nats,
}

impl std::str::FromStr for StoreKind {
    type Err = RelayError;
    fn from_str(s: &str) -> Result<StoreKind> {
        match s {
            "sqlite" => Ok(StoreKind::Sqlite),
            "nats" => Ok(StoreKind::Nats),
            _ => Err(RelayError::Config(format!("store must be sqlite or nats, not {s:?}"))),
        }
    }
}

/// Store settings.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// Backend.
    pub kind: StoreKind,
    /// NATS servers, comma-separated.
    pub nats_url: String,
    /// Prefix of the JetStream streams, subjects and KV buckets.
    pub nats_prefix: String,
    /// Replicas of the streams and buckets; 0 = the cluster's size, up to 3.
    pub nats_replicas: usize,
    /// Channels each node keeps in memory.
    pub nats_cached_channels: usize,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            kind: StoreKind::Sqlite,
            nats_url: "nats://127.0.0.1:4222".to_string(),
            nats_prefix: "skytale".to_string(),
            nats_replicas: 0,
            nats_cached_channels: 10_000,
        }
    }
}

/// Token verification settings.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// JWKS URL of the API server.
    pub jwks_url: Option<String>,
    /// A fixed Ed25519 public key: PEM (`-----BEGIN PUBLIC KEY-----`) or base64url raw `x`.
    pub public_key: Option<String>,
    /// Expected `iss` (default `skytale-api`, the API server's default); empty = only require presence.
    pub issuer: Option<String>,
    /// Expected `aud`.
    pub audience: String,
    /// Clock leeway for `exp` (seconds).
    pub leeway_secs: u64,
    /// Minimum interval between JWKS refetches on unknown `kid` (seconds).
    pub jwks_min_refetch_secs: u64,
    /// The JWKS is refetched on this interval (seconds), so a key removed from it stops
    /// verifying within this time.
    pub jwks_refresh_secs: u64,
    /// The API server's revocation feed (`GET /v1/revocations`); default: derived from
    /// `jwks_url` (same origin). Revoked API keys and agents lose their sessions.
    pub revocations_url: Option<String>,
    /// How often the revocation feed is polled (seconds).
    pub revocation_poll_secs: u64,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            jwks_url: None,
            public_key: None,
            issuer: Some("skytale-api".to_string()),
            audience: skytale_proto::AUDIENCE.to_string(),
            leeway_secs: 30,
            jwks_min_refetch_secs: 10,
            jwks_refresh_secs: 300,
            revocations_url: None,
            revocation_poll_secs: 10,
        }
    }
}

/// Limits; each has a default and a clear error code when hit.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Max client frame size (bytes) → `SKYTALE_FRAME_TOO_LARGE`.
    pub max_frame_bytes: usize,
    /// Max concurrent connections → `SKYTALE_TOO_MANY_CONNECTIONS`.
    pub max_connections: usize,
    /// Max concurrent connections from one IP address → `SKYTALE_TOO_MANY_CONNECTIONS`.
    pub max_connections_per_ip: usize,
    /// Max concurrent authenticated connections of one org → `SKYTALE_TOO_MANY_CONNECTIONS`.
    pub max_connections_per_org: usize,
    /// Max concurrent connections that have not authenticated yet (each has `auth_timeout_ms`)
    /// → `SKYTALE_TOO_MANY_CONNECTIONS`.
    pub max_unauthenticated: usize,
    /// Token-bucket refill rate per identity (frames/s) → `SKYTALE_RATE_LIMITED`.
    pub frames_per_second: f64,
    /// Token-bucket size per identity.
    pub burst: f64,
    /// Max queued welcomes per recipient → `SKYTALE_RECIPIENT_QUEUE_FULL`.
    pub max_pending_welcomes: u64,
    /// Max stored key packages per identity → `SKYTALE_KEY_PACKAGE_LIMIT`.
    pub max_key_packages: u64,
    /// Time to receive `Auth` (ms) → `SKYTALE_AUTH_TIMEOUT`.
    pub auth_timeout_ms: u64,
    /// Max time without a client frame (ms) → `SKYTALE_IDLE_TIMEOUT`.
    pub idle_timeout_ms: u64,
    /// Max queued pushes per connection → `SKYTALE_SLOW_CONSUMER`.
    pub outbound_queue: usize,
    /// Archive TTL (seconds) for messages and welcomes.
    pub archive_ttl_secs: u64,
    /// Max items per `Fetch`.
    pub max_fetch: u32,
    /// Max payload bytes per `Fetch` reply (one larger item is still sent alone); `Done.more`
    /// tells the client to resume from `Done.last_seq`.
    pub max_fetch_bytes: usize,
    /// Max identities in a commit's `added` (and `removed`) list → `SKYTALE_INVALID_REQUEST`.
    pub max_commit_added: usize,
    /// Queued welcomes older than this are deleted (seconds).
    pub welcome_ttl_secs: u64,
    /// Stored key packages older than this are deleted (seconds).
    pub key_package_ttl_secs: u64,
    /// Channels per org → `SKYTALE_QUOTA_EXCEEDED`.
    pub max_channels_per_org: u64,
    /// Stored invites (incl. revoked ones until pruned) per org → `SKYTALE_QUOTA_EXCEEDED`.
    pub max_invites_per_org: u64,
    /// Stored key packages per org → `SKYTALE_QUOTA_EXCEEDED`.
    pub max_key_packages_per_org: u64,
    /// Archived payload bytes (items and queued welcomes) per org → `SKYTALE_QUOTA_EXCEEDED`.
    pub max_archive_bytes_per_org: u64,
    /// Longest invite lifetime (seconds); a later `CreateInvite.expires_at` is capped to it.
    pub max_invite_ttl_secs: u64,
    /// Largest `CreateInvite.max_uses`; larger values are capped to it.
    pub max_invite_uses: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_frame_bytes: skytale_proto::DEFAULT_MAX_FRAME_SIZE,
            max_connections: 1024,
            max_connections_per_ip: 256,
            max_connections_per_org: 1024,
            max_unauthenticated: 128,
            frames_per_second: 100.0,
            burst: 200.0,
            max_pending_welcomes: 100,
            max_key_packages: 100,
            auth_timeout_ms: 5_000,
            idle_timeout_ms: 120_000,
            outbound_queue: 8192,
            archive_ttl_secs: 7 * 24 * 3600,
            max_fetch: 1000,
            max_fetch_bytes: 4 * 1024 * 1024,
            max_commit_added: 1000,
            welcome_ttl_secs: 7 * 24 * 3600,
            key_package_ttl_secs: 30 * 24 * 3600,
            max_channels_per_org: 100_000,
            max_invites_per_org: 100_000,
            max_key_packages_per_org: 1_000_000,
            max_archive_bytes_per_org: 10 * 1024 * 1024 * 1024,
            max_invite_ttl_secs: 30 * 24 * 3600,
            max_invite_uses: 10_000,
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            data_dir: PathBuf::from("./relay-data"),
            listen: SocketAddr::from(([0, 0, 0, 0], 4433)),
            http_listen: SocketAddr::from(([127, 0, 0, 1], 8787)),
            public_host: None,
            auth: AuthConfig::default(),
            limits: Limits::default(),
            store: StoreConfig::default(),
        }
    }
}

fn env(name: &str) -> Option<String> {
    std::env::var(format!("SKYTALE_RELAY_{name}")).ok().filter(|v| !v.is_empty())
}

fn parse_env<T: std::str::FromStr>(name: &str, target: &mut T) -> Result<()> {
    if let Some(v) = env(name) {
        *target = v.parse().map_err(|_| RelayError::Config(format!("SKYTALE_RELAY_{name}: invalid value")))?;
    }
    Ok(())
}

impl Config {
    /// Settings of the JetStream store (used when `store.kind` is `nats`).
    pub fn nats(&self) -> crate::store::NatsConfig {
        crate::store::NatsConfig {
            servers: self.store.nats_url.clone(),
            prefix: self.store.nats_prefix.clone(),
            replicas: self.store.nats_replicas,
            archive_ttl: std::time::Duration::from_secs(self.limits.archive_ttl_secs),
            welcome_ttl: std::time::Duration::from_secs(self.limits.welcome_ttl_secs),
            key_package_ttl: std::time::Duration::from_secs(self.limits.key_package_ttl_secs),
            invite_ttl: std::time::Duration::from_secs(self.limits.max_invite_ttl_secs),
            max_cached_channels: self.store.nats_cached_channels,
        }
    }

    /// Loads the TOML file (if given) and applies env overrides.
    pub fn load(path: Option<&std::path::Path>) -> Result<Config> {
        let mut cfg = match path {
            Some(p) => {
                let text =
                    std::fs::read_to_string(p).map_err(|e| RelayError::Config(format!("{}: {e}", p.display())))?;
                toml::from_str(&text).map_err(|e| RelayError::Config(e.to_string()))?
            }
            None => Config::default(),
        };
        cfg.apply_env()?;
        cfg.validate()?;
        Ok(cfg)
    }

    fn apply_env(&mut self) -> Result<()> {
        if let Some(v) = env("DATA_DIR") {
            self.data_dir = PathBuf::from(v);
        }
        parse_env("LISTEN", &mut self.listen)?;
        parse_env("HTTP_LISTEN", &mut self.http_listen)?;
        if let Some(v) = env("PUBLIC_HOST") {
            self.public_host = Some(v);
        }
        if let Some(v) = env("JWKS_URL") {
            self.auth.jwks_url = Some(v);
        }
        if let Some(v) = env("PUBLIC_KEY") {
            self.auth.public_key = Some(v);
        }
        if let Some(v) = env("ISSUER") {
            self.auth.issuer = Some(v);
        }
        if let Some(v) = env("AUDIENCE") {
            self.auth.audience = v;
        }
        parse_env("LEEWAY_SECS", &mut self.auth.leeway_secs)?;
        parse_env("JWKS_MIN_REFETCH_SECS", &mut self.auth.jwks_min_refetch_secs)?;
        parse_env("JWKS_REFRESH_SECS", &mut self.auth.jwks_refresh_secs)?;
        parse_env("REVOCATION_POLL_SECS", &mut self.auth.revocation_poll_secs)?;
        if let Some(v) = env("REVOCATIONS_URL") {
            self.auth.revocations_url = Some(v);
        }
        let l = &mut self.limits;
        parse_env("MAX_FRAME_BYTES", &mut l.max_frame_bytes)?;
        parse_env("MAX_CONNECTIONS", &mut l.max_connections)?;
        parse_env("MAX_CONNECTIONS_PER_IP", &mut l.max_connections_per_ip)?;
        parse_env("MAX_CONNECTIONS_PER_ORG", &mut l.max_connections_per_org)?;
        parse_env("MAX_UNAUTHENTICATED", &mut l.max_unauthenticated)?;
        parse_env("FRAMES_PER_SECOND", &mut l.frames_per_second)?;
        parse_env("BURST", &mut l.burst)?;
        parse_env("MAX_PENDING_WELCOMES", &mut l.max_pending_welcomes)?;
        parse_env("MAX_KEY_PACKAGES", &mut l.max_key_packages)?;
        parse_env("AUTH_TIMEOUT_MS", &mut l.auth_timeout_ms)?;
        parse_env("IDLE_TIMEOUT_MS", &mut l.idle_timeout_ms)?;
        parse_env("OUTBOUND_QUEUE", &mut l.outbound_queue)?;
        parse_env("ARCHIVE_TTL_SECS", &mut l.archive_ttl_secs)?;
        parse_env("MAX_FETCH", &mut l.max_fetch)?;
        parse_env("MAX_FETCH_BYTES", &mut l.max_fetch_bytes)?;
        parse_env("MAX_COMMIT_ADDED", &mut l.max_commit_added)?;
        parse_env("WELCOME_TTL_SECS", &mut l.welcome_ttl_secs)?;
        parse_env("KEY_PACKAGE_TTL_SECS", &mut l.key_package_ttl_secs)?;
        parse_env("MAX_CHANNELS_PER_ORG", &mut l.max_channels_per_org)?;
        parse_env("MAX_INVITES_PER_ORG", &mut l.max_invites_per_org)?;
        parse_env("MAX_KEY_PACKAGES_PER_ORG", &mut l.max_key_packages_per_org)?;
        parse_env("MAX_ARCHIVE_BYTES_PER_ORG", &mut l.max_archive_bytes_per_org)?;
        parse_env("MAX_INVITE_TTL_SECS", &mut l.max_invite_ttl_secs)?;
        parse_env("MAX_INVITE_USES", &mut l.max_invite_uses)?;
        let st = &mut self.store;
        parse_env("STORE", &mut st.kind)?;
        if let Some(v) = env("NATS_URL") {
            st.nats_url = v;
        }
        if let Some(v) = env("NATS_PREFIX") {
            st.nats_prefix = v;
        }
        parse_env("NATS_REPLICAS", &mut st.nats_replicas)?;
        parse_env("NATS_CACHED_CHANNELS", &mut st.nats_cached_channels)?;
        Ok(())
    }

    fn validate(&self) -> Result<()> {
        if self.auth.jwks_url.is_none() && self.auth.public_key.is_none() {
            return Err(RelayError::Config(
                "set auth.jwks_url or auth.public_key (SKYTALE_RELAY_JWKS_URL / SKYTALE_RELAY_PUBLIC_KEY)".to_string(),
            ));
        }
        let p = &self.store.nats_prefix;
        if p.is_empty() || !p.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            return Err(RelayError::Config("store.nats_prefix must be [A-Za-z0-9_]+".to_string()));
        }
        let l = &self.limits;
        if l.max_frame_bytes < 1024 || l.max_frame_bytes > 16 * 1024 * 1024 {
            return Err(RelayError::Config("limits.max_frame_bytes must be within 1 KiB..16 MiB".to_string()));
        }
        if l.frames_per_second <= 0.0
            || l.burst < 1.0
            || l.outbound_queue == 0
            || l.max_fetch == 0
            || l.max_invite_ttl_secs == 0
            || l.max_invite_uses == 0
            || l.max_fetch_bytes == 0
            || l.max_commit_added == 0
            || l.welcome_ttl_secs == 0
            || l.key_package_ttl_secs == 0
            || l.max_connections_per_ip == 0
            || l.max_connections_per_org == 0
            || l.max_unauthenticated == 0
        {
            return Err(RelayError::Config(
                "limits.frames_per_second, burst, outbound_queue, max_fetch, max_fetch_bytes, max_commit_added, \
                 max_invite_ttl_secs, max_invite_uses, welcome_ttl_secs, key_package_ttl_secs, \
                 max_connections_per_ip, max_connections_per_org, max_unauthenticated must be positive"
                    .to_string(),
            ));
        }
        Ok(())
    }
}
