//! # skytale-relay
//!
//! The Skytale relay: a blind MLS delivery service over iroh QUIC. It authenticates clients
//! with EdDSA JWTs from the API server, keeps a roster per channel (only members touch a
//! channel: see [`channel`]), orders channel items (application messages, proposals, commits)
//! in one per-channel sequence, archives them in SQLite for offline catch-up, orders commits
//! per epoch (first wins), queues welcomes per recipient (each payload stored once), hands out
//! key packages exactly once, keeps invites (id, authenticator hash, limits, opaque group info)
//! so that non-members can post join requests and join by external commit, and enforces
//! connection caps, rate limits and per-org quotas ([`limits`], [`config::Limits`]). It stores
//! ciphertext and routing metadata only.
//!
//! The wire protocol is documented in [`skytale_proto`]. Run `skytale-relay --config relay.toml`;
//! see [`config`] for settings and `relay/README.md` for operations.

#![deny(missing_docs)]

pub mod auth;
pub mod channel;
pub mod config;
pub mod error;
pub mod http;
pub mod hub;
pub mod invites;
pub mod limits;
pub mod metrics;
mod retry_hold;
pub mod revocations;
pub mod session;
pub mod storage;
pub mod store;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use iroh::SecretKey;
use tokio::sync::Notify;

use crate::auth::Verifier;
use crate::config::Config;
use crate::config::StoreKind;
use crate::error::{RelayError, Result};
use crate::limits::{Connections, RateLimiter};
use crate::metrics::Metrics;
use crate::storage::Storage;
use crate::store::{NatsStore, PruneCutoffs, Remote, SqliteStore, Store};

/// The running relay.
pub struct Relay {
    /// Configuration.
    pub config: Config,
    /// Metrics.
    pub metrics: Metrics,
    /// Token verifier.
    pub verifier: Verifier,
    /// Revoked API keys and agents (from the API server's feed).
    pub revocations: revocations::Revocations,
    /// The storage thread (owns the store; idle appends are written in place, see [`storage`]).
    pub storage: Storage,
    /// Channel actors (ordering, subscriptions, fan-out).
    pub channels: channel::Channels,
    /// Online identities (welcome pushes, revocation).
    pub online: hub::Online,
    /// Rate limiter per authenticated (org, identity).
    pub rate: RateLimiter,
    /// Connection counts (per IP, per org, unauthenticated).
    pub connections: Arc<Connections>,
    /// `iroh://<endpoint-id>@host:port`.
    pub address: String,
    /// Hex endpoint id.
    pub endpoint_id: String,
    /// The endpoint's secret key: also signs the polls of the API server's revocation feed, which
    /// knows the relay by its endpoint id (see [`revocations`]).
    pub identity_key: SecretKey,
    /// `http://host:port` of /health and /metrics.
    pub http_url: String,
    next_conn_id: AtomicU64,
    started: Instant,
}

/// Current unix time in milliseconds.
pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

impl Relay {
    /// A fresh connection id.
    pub fn next_conn_id(&self) -> u64 {
        self.next_conn_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Takes one token from the authenticated identity's bucket; `Err(retry_after_ms)` if empty.
    pub fn rate_check(&self, org: &str, identity: &str) -> std::result::Result<(), u64> {
        self.rate.check(org, identity, &self.config.limits)
    }

    /// The `/health` JSON document.
    pub fn health_json(&self) -> String {
        serde_json::json!({
            "status": "ok",
            "address": self.address,
            "endpoint_id": self.endpoint_id,
            "alpn": String::from_utf8_lossy(skytale_proto::ALPN),
            "protocol_version": skytale_proto::PROTOCOL_VERSION,
            "version": env!("CARGO_PKG_VERSION"),
            "uptime_secs": self.started.elapsed().as_secs(),
            "connections": self.metrics.connections.load(Ordering::Relaxed),
        })
        .to_string()
    }
}

/// Loads the relay's iroh secret key from `dir/iroh.key`, creating it on first start.
pub fn load_or_create_secret(dir: &Path) -> Result<SecretKey> {
    let path = dir.join("iroh.key");
    if path.exists() {
        let text = std::fs::read_to_string(&path)?;
        let bytes = decode_hex32(text.trim())
            .ok_or_else(|| RelayError::Config(format!("{} is not a 32-byte hex key", path.display())))?;
        return Ok(SecretKey::from_bytes(&bytes));
    }
    let key = SecretKey::generate();
    let hex: String = key.to_bytes().iter().map(|b| format!("{b:02x}")).collect();
    let tmp = dir.join("iroh.key.tmp");
    {
        use std::io::Write;
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        let mut f = opts.open(&tmp)?;
        f.write_all(hex.as_bytes())?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, &path)?;
    Ok(key)
}

fn decode_hex32(s: &str) -> Option<[u8; 32]> {
    if s.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(s.get(i * 2..i * 2 + 2)?, 16).ok()?;
    }
    Some(out)
}

/// Starts the relay and serves until the process is stopped (SIGINT/SIGTERM close it cleanly).
/// Prints `skytale-relay listening iroh://<id>@host:port http://host:port` on stdout once ready.
pub async fn run(config: Config) -> Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    std::fs::create_dir_all(&config.data_dir)?;
    let secret = load_or_create_secret(&config.data_dir)?;
    let mut store: Box<dyn Store> = match config.store.kind {
        StoreKind::Sqlite => Box::new(SqliteStore::open(&config.data_dir.join("relay.sqlite3"))?),
        StoreKind::Nats => Box::new(NatsStore::open_async(config.nats()).await?),
    };
    let feed = store.take_feed();
    let storage = Storage::start(store)?;
    let metrics = Metrics::default();
    let (items, bytes) = storage.call(|s| s.archive_stats()).await?;
    metrics.archive_items.store(items, Ordering::Relaxed);
    metrics.archive_bytes.store(bytes, Ordering::Relaxed);
    let verifier = Verifier::new(config.auth.clone()).await?;

    let endpoint =
        skytale_proto::conn::closed_endpoint(config.listen, Some(secret.clone()), vec![skytale_proto::ALPN.to_vec()])
            .await
            .map_err(|e| RelayError::Transport(e.to_string()))?;
    let port = endpoint
        .bound_sockets()
        .iter()
        .map(|a| a.port())
        .find(|p| *p != 0)
        .ok_or_else(|| RelayError::Transport("no bound socket".to_string()))?;
    let host = match &config.public_host {
        Some(h) => h.clone(),
        None => {
            let ip =
                if config.listen.ip().is_unspecified() { IpAddr::V4(Ipv4Addr::LOCALHOST) } else { config.listen.ip() };
            SocketAddr::new(ip, port).ip().to_string()
        }
    };
    let host_port = if host.contains(':') { format!("[{host}]:{port}") } else { format!("{host}:{port}") };
    let endpoint_id = endpoint.id().to_string();
    let address = format!("iroh://{endpoint_id}@{host_port}");
    let http_listener = tokio::net::TcpListener::bind(config.http_listen).await?;
    let http_addr = http_listener.local_addr()?;
    let http_url = format!("http://{http_addr}");

    let relay = Arc::new(Relay {
        config,
        metrics,
        verifier,
        revocations: revocations::Revocations::default(),
        storage,
        channels: channel::Channels::default(),
        online: hub::Online::default(),
        rate: RateLimiter::default(),
        connections: Arc::new(Connections::default()),
        address,
        endpoint_id,
        identity_key: secret,
        http_url,
        next_conn_id: AtomicU64::new(1),
        started: Instant::now(),
    });

    if let Some(feed) = feed {
        tokio::spawn(remote_task(relay.clone(), feed));
    }
    tokio::spawn(http::serve(http_listener, relay.clone()));
    tokio::spawn(prune_task(relay.clone()));
    tokio::spawn(revocations::poll_task(relay.clone()));
    tokio::spawn(revocations::jwks_refresh_task(relay.clone()));

    println!("skytale-relay listening {} {}", relay.address, relay.http_url);
    {
        use std::io::Write;
        let _ = std::io::stdout().flush();
    }
    tracing::info!(address = %relay.address, http = %relay.http_url, "relay started");

    let shutdown = Arc::new(Notify::new());
    loop {
        tokio::select! {
            incoming = endpoint.accept() => {
                let Some(incoming) = incoming else { break };
                tokio::spawn(session::handle_incoming(relay.clone(), incoming, shutdown.clone()));
            }
            _ = shutdown_signal() => {
                tracing::info!("shutting down");
                shutdown.notify_waiters();
                tokio::time::sleep(Duration::from_millis(200)).await;
                break;
            }
        }
    }
    endpoint.close().await;
    if let Err(e) = relay.storage.call(|s| s.checkpoint()).await {
        tracing::warn!(error = %e, "WAL checkpoint at shutdown failed");
    }
    Ok(())
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// The cutoffs of a prune pass at `now` (unix ms).
pub fn prune_cutoffs(limits: &config::Limits, now: u64) -> PruneCutoffs {
    let ago = |secs: u64| now.saturating_sub(secs.saturating_mul(1000));
    PruneCutoffs {
        archive_ms: ago(limits.archive_ttl_secs),
        welcome_ms: ago(limits.welcome_ttl_secs),
        key_package_ms: ago(limits.key_package_ttl_secs),
    }
}

/// Items archived by other relay nodes: welcomes to this node's online recipients, items to
/// the channel actors running here (they push them to their subscribers).
async fn remote_task(relay: Arc<Relay>, mut feed: tokio::sync::mpsc::UnboundedReceiver<Remote>) {
    while let Some(r) = feed.recv().await {
        for (recipient, w) in &r.welcomes {
            let frame = skytale_proto::frames::Frame::new(0, skytale_proto::frames::Body::Welcome(w.clone()));
            if let Ok(bytes) = skytale_proto::codec::encode_frame(&frame, usize::MAX) {
                relay.online.push(&r.org, recipient, &bytes);
            }
        }
        relay.channels.remote(r);
    }
}

async fn prune_task(relay: Arc<Relay>) {
    let limits = relay.config.limits.clone();
    let shortest = limits.archive_ttl_secs.min(limits.welcome_ttl_secs).min(limits.key_package_ttl_secs);
    let every = Duration::from_secs(shortest.clamp(1, 60));
    loop {
        tokio::time::sleep(every).await;
        relay.rate.prune(&limits);
        let cutoffs = prune_cutoffs(&limits, now_ms());
        match relay.storage.call(move |s| s.prune(&cutoffs)).await {
            Ok(p) => {
                // The gauges are kept by counting, not by scanning the archive.
                let m = &relay.metrics;
                let _ = m
                    .archive_items
                    .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| Some(v.saturating_sub(p.items)));
                let _ = m
                    .archive_bytes
                    .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| Some(v.saturating_sub(p.bytes)));
                if p.rows > 0 {
                    tracing::info!(deleted = p.rows, "pruned expired rows");
                }
            }
            Err(e) => tracing::warn!(error = %e, "prune failed"),
        }
    }
}
