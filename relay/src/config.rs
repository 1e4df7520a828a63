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
//! ```
//! Env overrides: `SKYTALE_RELAY_DATA_DIR`, `_LISTEN`, `_HTTP_LISTEN`, `_PUBLIC_HOST`,
//! `_JWKS_URL`, `_PUBLIC_KEY`, `_ISSUER`, `_AUDIENCE`, `_LEEWAY_SECS`, and every `[limits]` key
//! upper-cased (e.g. `SKYTALE_RELAY_MAX_FRAME_BYTES`, `SKYTALE_RELAY_AUTH_TIMEOUT_MS`).

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
            frames_per_second: 100.0,
            burst: 200.0,
            max_pending_welcomes: 100,
            max_key_packages: 100,
            auth_timeout_ms: 5_000,
            idle_timeout_ms: 120_000,
            outbound_queue: 8192,
            archive_ttl_secs: 7 * 24 * 3600,
            max_fetch: 1000,
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
        parse_env("FRAMES_PER_SECOND", &mut l.frames_per_second)?;
        parse_env("BURST", &mut l.burst)?;
        parse_env("MAX_PENDING_WELCOMES", &mut l.max_pending_welcomes)?;
        parse_env("MAX_KEY_PACKAGES", &mut l.max_key_packages)?;
        parse_env("AUTH_TIMEOUT_MS", &mut l.auth_timeout_ms)?;
        parse_env("IDLE_TIMEOUT_MS", &mut l.idle_timeout_ms)?;
        parse_env("OUTBOUND_QUEUE", &mut l.outbound_queue)?;
        parse_env("ARCHIVE_TTL_SECS", &mut l.archive_ttl_secs)?;
        parse_env("MAX_FETCH", &mut l.max_fetch)?;
        parse_env("MAX_INVITE_TTL_SECS", &mut l.max_invite_ttl_secs)?;
        parse_env("MAX_INVITE_USES", &mut l.max_invite_uses)?;
        Ok(())
    }

    fn validate(&self) -> Result<()> {
        if self.auth.jwks_url.is_none() && self.auth.public_key.is_none() {
            return Err(RelayError::Config(
                "set auth.jwks_url or auth.public_key (SKYTALE_RELAY_JWKS_URL / SKYTALE_RELAY_PUBLIC_KEY)".to_string(),
            ));
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
        {
            return Err(RelayError::Config(
                "limits.frames_per_second, burst, outbound_queue, max_fetch, max_invite_ttl_secs, max_invite_uses must be positive"
                    .to_string(),
            ));
        }
        Ok(())
    }
}
