//! The JetStream backend of [`Store`]: several relay nodes share one NATS cluster, so a channel
//! can be served by any node and a node can die without losing or forking a channel.
//!
//! ## Layout (names under a prefix, default `skytale`)
//! - Stream `SKYTALE_ARCHIVE`, subjects `skytale.ch.<channel>`: every item of a channel, in
//!   [`record::Record`]s (one NATS message = a batch of consecutive items of one channel plus the
//!   channel's epoch and last seq after them). `max_age` = the archive TTL.
//! - Stream `SKYTALE_HEADS`: sources the archive and keeps the last record of every channel
//!   forever (`max_msgs_per_subject = 1`), so a channel whose items all expired keeps its epoch
//!   and sequence.
//! - KV buckets `skytale_kp` (key packages), `skytale_inv` (invites), `skytale_wel` (per-recipient
//!   welcome queues: pointers to the commit's record), `skytale_rost` (a copy of each channel's
//!   roster, which records carry when they change it), `skytale_usage` (per-org usage, see
//!   [`usage`]). Every change is a checked update ([`kv`]).
//!
//! ## Ordering across nodes
//! Every append publishes with `Nats-Expected-Last-Subject-Sequence` = the stream sequence of the
//! channel's last record as this node knows it. The server accepts the first of two racing
//! appends and refuses the other (`WrongLastSequence`): that node re-reads the channel and its
//! channel actor decides again (dedupe, epoch check, new sequence numbers) with the fresh state.
//! So an item is only archived if it was checked against the channel's latest state, commits are
//! first-wins cluster-wide, and sequence numbers are one gap-free order every node agrees on.
//!
//! ## Live fan-out
//! Each node follows the archive with one ordered consumer ([`feed`]): records of other nodes
//! update its cache and reach its channel actors as [`Remote`]s, which push them to local
//! subscribers after anything they missed, so every subscriber sees one order, no duplicates.
//!
//! The [`Store`] trait is synchronous (it runs on the relay's storage thread); this backend
//! drives `async-nats` on its own small runtime and blocks the storage thread on each call.

mod archive;
mod cache;
mod feed;
mod kv;
pub mod record;
mod usage;
mod write;

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_nats::jetstream::{self, stream};
use skytale_proto::frames::{Deliver, Welcome};
use tokio::sync::mpsc;

use super::{Append, ChannelRow, Dup, InviteRow, OrgUsage, PruneCutoffs, Pruned, Remote, Store};
use crate::error::{RelayError, Result};
use cache::Cache;

impl Inner {
    /// A channel's roster (`fresh`: brought up to the stream first); empty if it does not exist.
    async fn roster(&self, name: &str, fresh: bool) -> Result<Vec<(String, u64)>> {
        if self.row(name).await?.is_none() {
            return Ok(Vec::new());
        }
        if fresh {
            self.refresh(name).await?;
        }
        Ok(self.cache().get(name).map(|c| c.roster.iter().map(|(i, s)| (i.clone(), *s)).collect()).unwrap_or_default())
    }
}

/// Settings of the JetStream backend.
#[derive(Clone, Debug)]
pub struct NatsConfig {
    /// NATS servers, comma-separated (`nats://127.0.0.1:4222,nats://127.0.0.1:4223`).
    pub servers: String,
    /// Prefix of stream names, subjects and buckets (lets several deployments share a cluster).
    pub prefix: String,
    /// Replicas of the streams and buckets; 0 = as many servers as the cluster has, up to 3.
    pub replicas: usize,
    /// Archive TTL (stream `max_age`).
    pub archive_ttl: Duration,
    /// How long a queued welcome waits (at most the archive TTL here: the payload is archived
    /// with its commit).
    pub welcome_ttl: Duration,
    /// How long a stored key package lives.
    pub key_package_ttl: Duration,
    /// Longest invite lifetime (the invite bucket keeps entries this long plus the archive TTL).
    pub invite_ttl: Duration,
    /// Channels a node keeps in memory (state, record index, dedupe keys).
    pub max_cached_channels: usize,
}

/// Shared state of the backend (used by the storage thread and the feed task).
pub(crate) struct Inner {
    js: jetstream::Context,
    /// Channels whose next append waits a moment (another node lost a race on them).
    yields: Mutex<std::collections::HashMap<String, tokio::time::Instant>>,
    archive: stream::Stream,
    heads: stream::Stream,
    kp: kv::Bucket,
    inv: kv::Bucket,
    wel: kv::Bucket,
    rost: kv::Bucket,
    usage_kv: kv::Bucket,
    usage: Mutex<usage::Usage>,
    /// `<prefix>.ch.`
    subject_prefix: String,
    /// This node's id (random per process).
    node: String,
    cache: Mutex<Cache>,
    /// Largest payload of one record (the server's max payload minus room for headers).
    max_record: usize,
    ttl_ms: u64,
    welcome_ttl_ms: u64,
    kp_ttl_ms: u64,
}

impl Inner {
    fn cache(&self) -> MutexGuard<'_, Cache> {
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn subject(&self, channel: &str) -> String {
        format!("{}{}", self.subject_prefix, record::esc(channel))
    }

    /// `<prefix>.yield.` (core NATS: "I lost a race on this channel, let me in").
    fn yield_prefix(&self) -> String {
        format!("{}yield.", self.subject_prefix.trim_end_matches("ch."))
    }
}

/// The JetStream store.
pub struct NatsStore {
    rt: Option<tokio::runtime::Runtime>,
    inner: Arc<Inner>,
    feed: Option<mpsc::UnboundedReceiver<Remote>>,
}

pub(crate) fn nats_err(what: &str, e: impl std::fmt::Display) -> RelayError {
    RelayError::Storage(format!("nats {what}: {e}"))
}

impl NatsStore {
    /// Connects to the cluster, creates (or adopts) the streams and buckets and starts the live
    /// feed. Blocks; call it outside async code (see [`NatsStore::open_async`]).
    pub fn open(cfg: &NatsConfig) -> Result<NatsStore> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("skytale-nats")
            .enable_all()
            .build()?;
        let (inner, start_seq) = rt.block_on(setup(cfg))?;
        let inner = Arc::new(inner);
        let (tx, rx) = mpsc::unbounded_channel();
        rt.spawn(feed::run(inner.clone(), start_seq, tx));
        rt.block_on(feed::start_yields(inner.clone()))?;
        let flusher = inner.clone();
        rt.spawn(async move {
            loop {
                tokio::time::sleep(usage::USAGE_EVERY).await;
                flusher.flush_usage().await;
            }
        });
        Ok(NatsStore { rt: Some(rt), inner, feed: Some(rx) })
    }

    /// [`NatsStore::open`] from async code (runs it on a plain thread).
    pub async fn open_async(cfg: NatsConfig) -> Result<NatsStore> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        std::thread::Builder::new().name("skytale-nats-open".to_string()).spawn(move || {
            // The caller may have gone away (cancelled start): nothing to report then.
            let _ = tx.send(NatsStore::open(&cfg));
        })?;
        rx.await.map_err(|_| RelayError::Storage("nats open: thread died".to_string()))?
    }

    fn block<F: std::future::Future>(&self, f: F) -> Result<F::Output> {
        match &self.rt {
            Some(rt) => Ok(rt.block_on(f)),
            None => Err(RelayError::Storage("nats store closed".to_string())),
        }
    }
}

impl Drop for NatsStore {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

async fn setup(cfg: &NatsConfig) -> Result<(Inner, u64)> {
    let servers: Vec<async_nats::ServerAddr> = cfg
        .servers
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().map_err(|e| RelayError::Config(format!("NATS server {s:?}: {e}"))))
        .collect::<Result<_>>()?;
    if servers.is_empty() {
        return Err(RelayError::Config("no NATS server given (SKYTALE_RELAY_NATS_URL)".to_string()));
    }
    let client = async_nats::ConnectOptions::new()
        .name("skytale-relay")
        .retry_on_initial_connect()
        .max_reconnects(None)
        .connection_timeout(Duration::from_secs(5))
        .connect(servers)
        .await
        .map_err(|e| nats_err("connect", e))?;
    // The first connect is retried in the background: wait for it (bounded).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while client.connection_state() != async_nats::connection::State::Connected {
        if tokio::time::Instant::now() > deadline {
            return Err(RelayError::Storage(format!("nats connect: no server reachable at {}", cfg.servers)));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let info = client.server_info();
    let replicas = if cfg.replicas == 0 { (1 + info.connect_urls.len()).min(3) } else { cfg.replicas };
    let max_record = info.max_payload.saturating_sub(4096).max(64 * 1024);
    let js = jetstream::ContextBuilder::new().timeout(Duration::from_secs(5)).build(client);
    let p = cfg.prefix.to_ascii_lowercase();
    let subject_prefix = format!("{p}.ch.");
    // A cluster that is just starting has no JetStream leader yet: retry for a while.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let (archive, heads, [kp, inv, wel, rost, usage_kv]) = loop {
        match streams(&js, cfg, &p, &subject_prefix, replicas).await {
            Ok(x) => break x,
            Err(e) if tokio::time::Instant::now() < deadline => {
                tracing::debug!(error = %e, "JetStream not ready; retrying");
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            Err(e) => return Err(e),
        }
    };
    let mut a = archive.clone();
    let last = a.info().await.map_err(|e| nats_err("archive info", e))?.state.last_sequence;
    let node: String = (0..8).map(|_| format!("{:02x}", rand::random::<u8>())).collect();
    tracing::info!(servers = %cfg.servers, replicas, prefix = %p, node = %node, "JetStream store ready");
    let inner = Inner {
        yields: Mutex::new(std::collections::HashMap::new()),
        js,
        archive,
        heads,
        kp,
        inv,
        wel,
        rost,
        usage_kv,
        usage: Mutex::new(usage::Usage::default()),
        subject_prefix,
        node,
        cache: Mutex::new(Cache::new(cfg.max_cached_channels)),
        max_record,
        ttl_ms: u64::try_from(cfg.archive_ttl.as_millis()).unwrap_or(u64::MAX),
        welcome_ttl_ms: u64::try_from(cfg.welcome_ttl.min(cfg.archive_ttl).as_millis()).unwrap_or(u64::MAX),
        kp_ttl_ms: u64::try_from(cfg.key_package_ttl.as_millis()).unwrap_or(u64::MAX),
    };
    Ok((inner, last))
}

type Streams = (stream::Stream, stream::Stream, [kv::Bucket; 5]);

/// The archive and heads streams and the KV buckets, created if missing.
async fn streams(
    js: &jetstream::Context,
    cfg: &NatsConfig,
    p: &str,
    subject_prefix: &str,
    replicas: usize,
) -> Result<Streams> {
    let up = p.to_ascii_uppercase();
    let archive = ensure_stream(
        js,
        stream::Config {
            name: format!("{up}_ARCHIVE"),
            subjects: vec![format!("{subject_prefix}*")],
            max_age: cfg.archive_ttl,
            num_replicas: replicas,
            ..Default::default()
        },
    )
    .await?;
    let heads = ensure_stream(
        js,
        stream::Config {
            name: format!("{up}_HEADS"),
            sources: Some(vec![stream::Source { name: format!("{up}_ARCHIVE"), ..Default::default() }]),
            max_messages_per_subject: 1,
            num_replicas: replicas,
            ..Default::default()
        },
    )
    .await?;
    let kp = ensure_bucket(js, &format!("{p}_kp"), Duration::ZERO, replicas).await?;
    let inv = ensure_bucket(js, &format!("{p}_inv"), cfg.invite_ttl + cfg.archive_ttl, replicas).await?;
    let wel = ensure_bucket(js, &format!("{p}_wel"), cfg.archive_ttl, replicas).await?;
    let rost = ensure_bucket(js, &format!("{p}_rost"), Duration::ZERO, replicas).await?;
    let usage = ensure_bucket(js, &format!("{p}_usage"), Duration::ZERO, replicas).await?;
    Ok((archive, heads, [kp, inv, wel, rost, usage]))
}

/// Creates a stream, or adopts an existing one (updating its retention if the TTL changed).
async fn ensure_stream(js: &jetstream::Context, cfg: stream::Config) -> Result<stream::Stream> {
    match js.get_stream(&cfg.name).await {
        Ok(mut s) => {
            let have = s.info().await.map_err(|e| nats_err("stream info", e))?.config.clone();
            if have.max_age != cfg.max_age {
                let mut upd = have;
                upd.max_age = cfg.max_age;
                js.update_stream(upd).await.map_err(|e| nats_err("update stream", e))?;
            }
            Ok(s)
        }
        Err(_) => match js.create_stream(cfg.clone()).await {
            Ok(s) => Ok(s),
            // Another node created it meanwhile.
            Err(_) => js.get_stream(&cfg.name).await.map_err(|e| nats_err("get stream", e)),
        },
    }
}

/// A KV bucket whose reads go to the stream leader (no direct gets from possibly lagging
/// replicas), so a read sees every acknowledged write.
async fn ensure_bucket(js: &jetstream::Context, name: &str, max_age: Duration, replicas: usize) -> Result<kv::Bucket> {
    let cfg = stream::Config {
        name: format!("KV_{name}"),
        subjects: vec![format!("$KV.{name}.>")],
        max_messages_per_subject: 1,
        max_age,
        num_replicas: replicas,
        allow_rollup: true,
        deny_delete: true,
        allow_direct: false,
        discard: stream::DiscardPolicy::New,
        ..Default::default()
    };
    let stream = ensure_stream(js, cfg).await?;
    let kv = js.get_key_value(name).await.map_err(|e| nats_err("get bucket", e))?;
    Ok(kv::Bucket { kv, stream, subject_prefix: format!("$KV.{name}."), per_key: name.ends_with("_wel") })
}

impl Store for NatsStore {
    fn channel(&self, name: &str) -> Result<Option<ChannelRow>> {
        if let Some(c) = self.inner.cache().get(name) {
            return Ok(Some(c.row()));
        }
        self.block(self.inner.load(name))?
    }

    fn create_channel(&mut self, name: &str, org: &str, creator: &str, now_ms: u64) -> Result<bool> {
        self.block(self.inner.create_channel(name, org, creator, now_ms))?
    }

    /// The roster, read fresh from the stream (called when an actor starts and on a miss).
    fn roster(&self, channel: &str) -> Result<Vec<(String, u64)>> {
        self.block(self.inner.roster(channel, true))?
    }

    /// From the cache; a miss is checked against the stream (a member just added elsewhere).
    fn member(&self, channel: &str, identity: &str) -> Result<Option<u64>> {
        let cached = self.inner.cache().get(channel).and_then(|c| c.roster.get(identity).copied());
        if cached.is_some() {
            return Ok(cached);
        }
        let roster = self.block(self.inner.roster(channel, true))??;
        Ok(roster.into_iter().find(|(i, _)| i == identity).map(|(_, s)| s))
    }

    fn org_usage(&self, org: &str) -> Result<OrgUsage> {
        self.block(self.inner.org_usage(org))?
    }

    fn find_dup(&self, channel: &str, sender: &str, client_msg_id: &str) -> Result<Option<Dup>> {
        if client_msg_id.is_empty() {
            return Ok(None);
        }
        let key = (sender.to_string(), client_msg_id.to_string());
        if let Some(c) = self.inner.cache().get(channel) {
            return Ok(c.dedupe.get(&key).map(|d| d.0));
        }
        if self.block(self.inner.load(channel))??.is_none() {
            return Ok(None);
        }
        Ok(self.inner.cache().get(channel).and_then(|c| c.dedupe.get(&key).map(|d| d.0)))
    }

    fn append_batch(&mut self, items: &[Append]) -> Result<Vec<Vec<u64>>> {
        self.block(self.inner.append(items))?
    }

    fn append_groups(&mut self, groups: &[&[Append]]) -> Vec<Result<Vec<Vec<u64>>>> {
        let inner = self.inner.clone();
        match self.block(futures_util::future::join_all(groups.iter().map(|g| inner.append(g)))) {
            Ok(v) => v,
            Err(e) => groups.iter().map(|_| Err(RelayError::Storage(e.to_string()))).collect(),
        }
    }

    fn read_range(
        &self,
        channel: &str,
        after: u64,
        upto: u64,
        exclude_sender: &str,
        limit: usize,
        max_bytes: usize,
    ) -> Result<Vec<Deliver>> {
        self.block(self.inner.read_range(channel, after, upto, exclude_sender, limit, max_bytes))?
    }

    fn pending_welcomes(&self, org: &str, recipient: &str) -> Result<u64> {
        self.block(self.inner.pending_welcomes(org, recipient))?
    }

    fn welcomes_for(&self, org: &str, recipient: &str) -> Result<Vec<Welcome>> {
        self.block(self.inner.welcomes_for(org, recipient))?
    }

    fn delete_welcome(&mut self, org: &str, recipient: &str, id: u64) -> Result<bool> {
        self.block(self.inner.delete_welcome(org, recipient, id))?
    }

    fn count_key_packages(&self, org: &str, identity: &str) -> Result<u64> {
        self.block(self.inner.count_key_packages(org, identity))?
    }

    fn add_key_packages(&mut self, org: &str, identity: &str, kps: &[Vec<u8>], now_ms: u64) -> Result<()> {
        self.block(self.inner.add_key_packages(org, identity, kps, now_ms))?
    }

    fn claim_key_package(&mut self, org: &str, identity: &str) -> Result<Option<Vec<u8>>> {
        self.block(self.inner.claim_key_package(org, identity))?
    }

    fn create_invite(&mut self, inv: &InviteRow, created_by: &str, now_ms: u64) -> Result<bool> {
        self.block(self.inner.create_invite(inv, created_by, now_ms))?
    }

    fn invite(&self, id: &str) -> Result<Option<InviteRow>> {
        self.block(self.inner.invite(id))?
    }

    fn update_invite(&mut self, id: &str, group_info: &[u8]) -> Result<()> {
        let gi = group_info.to_vec();
        self.block(self.inner.change_invite(id, move |r| r.group_info = gi.clone()))?
    }

    fn revoke_invite(&mut self, id: &str) -> Result<()> {
        self.block(self.inner.change_invite(id, |r| {
            r.revoked = true;
            r.group_info.clear();
        }))?
    }

    fn invite_uses(&self, id: &str) -> Result<u32> {
        self.block(self.inner.invite_uses(id))?
    }

    fn invite_used_by(&self, id: &str, identity: &str) -> Result<bool> {
        self.block(self.inner.invite_used_by(id, identity))?
    }

    fn add_invite_use(&mut self, id: &str, identity: &str, now_ms: u64) -> Result<()> {
        self.block(self.inner.add_invite_use(id, identity, now_ms))?
    }

    /// The archive expires by itself (`max_age`); this drops what the cache keeps of expired
    /// records. Welcome pointers and key packages past their TTL stop counting at once and are
    /// dropped when their key is next written; usage buckets expire by time.
    fn prune(&mut self, cutoffs: &PruneCutoffs) -> Result<Pruned> {
        self.inner.cache().prune(cutoffs.archive_ms);
        Ok(Pruned::default())
    }

    /// Records and bytes of the archive stream (records, not items: one record holds a batch).
    fn archive_stats(&self) -> Result<(u64, u64)> {
        let mut s = self.inner.archive.clone();
        let info = self.block(async move { s.info().await.map(|i| (i.state.messages, i.state.bytes)) })?;
        info.map_err(|e| nats_err("archive info", e))
    }

    fn take_feed(&mut self) -> Option<mpsc::UnboundedReceiver<Remote>> {
        self.feed.take()
    }
}
