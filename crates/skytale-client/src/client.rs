//! [`Client`]: connection management, background processing, sends and commits.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex as StdMutex};
use std::time::Duration;

use iroh::Endpoint;
use rand::Rng;
use skytale_core::{Agent, CommitMode, CommitOutput, Error as CoreError, Incoming};
use skytale_proto::conn::{client_endpoint, PushReceiver, RelayAddr, RelayConnection};
use skytale_proto::frames::{Body, Commit, Deliver, Kind, Welcome, WelcomeOut};
use skytale_proto::ProtoError;
use tokio::sync::{broadcast, oneshot, watch, Mutex, Notify};
use zeroize::Zeroizing;

use crate::error::{ClientError, Result};
use crate::tokens::{TokenSource, REFRESH_MARGIN};

/// How a [`Client`] reaches the API server and the relay.
#[derive(Clone)]
pub struct ClientConfig {
    /// API server base URL, e.g. `http://127.0.0.1:8080`.
    pub api_url: String,
    /// The API key (`sk_live_…`). Never logged.
    pub api_key: Zeroizing<String>,
    /// Relay address `iroh://<endpoint-id>@host:port`; `None` = the one the API server hands out.
    pub relay: Option<String>,
    /// Publish more key packages when the relay holds fewer than this.
    pub key_package_low_water: u64,
    /// How many key packages to publish at a time.
    pub key_package_batch: u32,
}

impl std::fmt::Debug for ClientConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientConfig")
            .field("api_url", &self.api_url)
            .field("api_key", &"[redacted]")
            .field("relay", &self.relay)
            .finish()
    }
}

impl ClientConfig {
    /// A config with default key-package settings.
    pub fn new(api_url: impl Into<String>, api_key: Zeroizing<String>, relay: Option<String>) -> Self {
        ClientConfig { api_url: api_url.into(), api_key, relay, key_package_low_water: 5, key_package_batch: 10 }
    }
}

/// An event of one channel, in relay order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChannelEvent {
    /// An application message.
    Message {
        /// Relay sequence number.
        seq: u64,
        /// Sender identity (authenticated by MLS).
        sender: String,
        /// Plaintext.
        data: Vec<u8>,
        /// Epoch it was sent in.
        epoch: u64,
    },
    /// A commit of another member, applied.
    Commit {
        /// Relay sequence number.
        seq: u64,
        /// Committer.
        sender: String,
        /// The new epoch.
        epoch: u64,
        /// Identities added.
        added: Vec<String>,
        /// Identities removed.
        removed: Vec<String>,
        /// True when this agent was removed.
        self_removed: bool,
    },
}

/// A client-wide event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientEvent {
    /// Connected (or reconnected) and authenticated to the relay.
    Connected,
    /// The connection was lost; the client reconnects by itself.
    Disconnected {
        /// The relay's close code, if any.
        code: Option<String>,
    },
    /// This agent joined a channel from a Welcome.
    Joined {
        /// Channel name.
        channel: String,
        /// Identity that added this agent.
        by: String,
    },
    /// Something failed in the background (an undecryptable item, a refused welcome, …).
    Error {
        /// Channel concerned, if any.
        channel: Option<String>,
        /// Stable code.
        code: String,
        /// Detail.
        message: String,
    },
}

struct ChannelSlot {
    /// Serializes MLS operations on this channel (processing, encrypting, committing).
    lock: Mutex<()>,
    /// Woken when the inbox gets an item.
    notify: Notify,
}

struct OutItem {
    channel: String,
    client_msg_id: String,
    data: Zeroizing<Vec<u8>>,
    done: oneshot::Sender<Result<u64>>,
}

struct Shared {
    agent: Arc<Agent>,
    config: ClientConfig,
    tokens: TokenSource,
    endpoint: Endpoint,
    conn: watch::Sender<Option<Arc<RelayConnection>>>,
    channels: StdMutex<HashMap<String, Arc<ChannelSlot>>>,
    events: broadcast::Sender<ClientEvent>,
    closed: watch::Sender<bool>,
    outbox: StdMutex<VecDeque<OutItem>>,
    outbox_notify: Notify,
}

/// A connected agent. Cheap to clone; all clones share one connection.
#[derive(Clone)]
pub struct Client {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client").field("identity", &self.shared.agent.identity()).finish_non_exhaustive()
    }
}

fn random_id() -> String {
    hex::encode(rand::thread_rng().gen::<[u8; 16]>())
}

fn is_transport(e: &ProtoError) -> bool {
    matches!(e, ProtoError::Transport(_) | ProtoError::Closed { .. } | ProtoError::Timeout)
}

impl Client {
    /// Connects `agent` to the relay. Resolves once the first connection is authenticated and
    /// every channel is subscribed; fails fast on a bad API key or an unreachable relay.
    /// Afterwards the client reconnects by itself.
    pub async fn connect(agent: Arc<Agent>, config: ClientConfig) -> Result<Client> {
        let tokens = TokenSource::new(&config.api_url, config.api_key.clone())?;
        let bind = "0.0.0.0:0".parse().map_err(|_| ClientError::InvalidArgument("bind address".into()))?;
        let endpoint = client_endpoint(bind).await?;
        let (conn, _) = watch::channel(None);
        let (events, _) = broadcast::channel(1024);
        let (closed, _) = watch::channel(false);
        let shared = Arc::new(Shared {
            agent,
            config,
            tokens,
            endpoint,
            conn,
            channels: StdMutex::new(HashMap::new()),
            events,
            closed,
            outbox: StdMutex::new(VecDeque::new()),
            outbox_notify: Notify::new(),
        });
        let (first_tx, first_rx) = oneshot::channel();
        tokio::spawn(connection_loop(shared.clone(), first_tx));
        match first_rx.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                let _ = shared.closed.send_replace(true);
                shared.endpoint.close().await;
                return Err(e);
            }
            Err(_) => return Err(ClientError::Closed),
        }
        tokio::spawn(outbox_loop(shared.clone()));
        Ok(Client { shared })
    }

    /// The agent this client drives.
    pub fn agent(&self) -> &Arc<Agent> {
        &self.shared.agent
    }

    /// Client-wide events (connected, disconnected, joined, background errors).
    pub fn events(&self) -> broadcast::Receiver<ClientEvent> {
        self.shared.events.subscribe()
    }

    /// Whether the client currently has an authenticated relay connection.
    pub fn is_connected(&self) -> bool {
        self.shared.conn.borrow().is_some()
    }

    /// Creates a channel locally and on the relay, and subscribes to it.
    /// Fails with `SKYTALE_CHANNEL_EXISTS` if the relay already has a channel of that name
    /// with history (someone else created it).
    pub async fn create_channel(&self, name: &str) -> Result<()> {
        let agent = self.shared.agent.clone();
        agent.create_channel(name)?;
        let conn = self.shared.live_conn().await?;
        let info = match conn.create_channel(name).await {
            Ok(info) => info,
            Err(e) => {
                let _ = agent.forget_channel(name);
                return Err(e.into());
            }
        };
        if !info.created && (info.epoch != 0 || info.last_seq != 0) {
            let _ = agent.forget_channel(name);
            return Err(CoreError::ChannelExists(name.to_string()).into());
        }
        self.shared.slot(name);
        conn.subscribe(name, 0).await?;
        Ok(())
    }

    /// Adds `identity` to `channel`: claims one of its key packages from the relay, commits
    /// (retrying if another commit wins the epoch) and queues the Welcome for it.
    pub async fn add_member(&self, channel: &str, identity: &str) -> Result<CommitOutput> {
        let conn = self.shared.live_conn().await?;
        let kp = conn.claim_key_package(identity).await?;
        let recipients = vec![identity.to_string()];
        self.shared
            .commit_op(channel, Some(recipients), move |agent, name| agent.add_members(name, &[kp.clone()], CommitMode::Stage))
            .await
    }

    /// Removes members by identity (ordered through the relay like every commit).
    pub async fn remove_members(&self, channel: &str, identities: &[String]) -> Result<CommitOutput> {
        let ids = identities.to_vec();
        self.shared
            .commit_op(channel, None, move |agent, name| agent.remove_members(name, &ids, CommitMode::Stage))
            .await
    }

    /// Rotates this agent's keys in `channel` (a self-update commit).
    pub async fn rotate_key(&self, channel: &str) -> Result<CommitOutput> {
        self.shared.commit_op(channel, None, |agent, name| agent.rotate_key(name, CommitMode::Stage)).await
    }

    /// Encrypts and sends `data` to `channel`; resolves with the relay sequence number once
    /// the relay has archived it. While disconnected the send waits in the outbox.
    pub async fn send(&self, channel: &str, data: &[u8]) -> Result<u64> {
        if !self.shared.agent.has_channel(channel)? {
            return Err(CoreError::ChannelNotFound(channel.to_string()).into());
        }
        if *self.shared.closed.borrow() {
            return Err(ClientError::Closed);
        }
        let (tx, rx) = oneshot::channel();
        {
            let mut outbox = self.shared.outbox.lock().map_err(|_| ClientError::Closed)?;
            outbox.push_back(OutItem {
                channel: channel.to_string(),
                client_msg_id: random_id(),
                data: Zeroizing::new(data.to_vec()),
                done: tx,
            });
        }
        self.shared.outbox_notify.notify_one();
        rx.await.map_err(|_| ClientError::Closed)?
    }

    /// The first event of `channel` with `seq > after_seq`, in relay order, waiting up to
    /// `timeout` (`None` = forever). Returns `Ok(None)` on timeout or when the client closes.
    /// Events stay in the keystore inbox until [`Client::ack_events`]: an event that was
    /// returned but not acknowledged (the app crashed) is returned again after a restart.
    pub async fn next_event(&self, channel: &str, after_seq: u64, timeout: Option<Duration>) -> Result<Option<ChannelEvent>> {
        let slot = self.shared.slot(channel);
        let deadline = timeout.map(|t| tokio::time::Instant::now() + t);
        let mut closed = self.shared.closed.subscribe();
        loop {
            let notified = slot.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(item) = self.shared.agent.inbox(channel, after_seq, 1)?.into_iter().next() {
                return Ok(Some(to_event(item)));
            }
            if *closed.borrow() {
                return Ok(None);
            }
            match deadline {
                Some(d) => {
                    tokio::select! {
                        _ = &mut notified => {}
                        _ = closed.changed() => {}
                        _ = tokio::time::sleep_until(d) => return Ok(None),
                    }
                }
                None => {
                    tokio::select! {
                        _ = &mut notified => {}
                        _ = closed.changed() => {}
                    }
                }
            }
        }
    }

    /// Acknowledges (deletes from the inbox) the events of `channel` up to and including `seq`.
    pub fn ack_events(&self, channel: &str, seq: u64) -> Result<()> {
        Ok(self.shared.agent.inbox_ack(channel, seq)?)
    }

    /// Waits until this agent is a member of `channel` (e.g. after being added by another
    /// member), up to `timeout`.
    pub async fn wait_for_channel(&self, channel: &str, timeout: Duration) -> Result<()> {
        let mut events = self.events();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if self.shared.agent.has_channel(channel)? && self.shared.agent.is_member(channel)? {
                return Ok(());
            }
            tokio::select! {
                _ = events.recv() => {}
                _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                _ = tokio::time::sleep_until(deadline) => return Err(ClientError::Timeout(format!("not added to {channel}"))),
            }
        }
    }

    /// Closes the connection and stops background work. Pending sends fail with
    /// `SKYTALE_CLIENT_CLOSED`; nothing already archived or processed is lost.
    pub async fn close(&self) {
        let _ = self.shared.closed.send_replace(true);
        if let Some(conn) = self.shared.conn.borrow().clone() {
            conn.close();
        }
        self.shared.outbox_notify.notify_waiters();
        if let Ok(mut outbox) = self.shared.outbox.lock() {
            for item in outbox.drain(..) {
                let _ = item.done.send(Err(ClientError::Closed));
            }
        }
        self.shared.endpoint.close().await;
    }
}

fn to_event(item: skytale_core::InboxItem) -> ChannelEvent {
    if item.kind == "commit" {
        let v: serde_json::Value = serde_json::from_slice(&item.data).unwrap_or_default();
        let list = |k: &str| -> Vec<String> {
            v.get(k)
                .and_then(|x| x.as_array())
                .map(|a| a.iter().filter_map(|s| s.as_str().map(str::to_string)).collect())
                .unwrap_or_default()
        };
        ChannelEvent::Commit {
            seq: item.seq,
            sender: item.sender,
            epoch: item.epoch,
            added: list("added"),
            removed: list("removed"),
            self_removed: v.get("selfRemoved").and_then(|b| b.as_bool()).unwrap_or(false),
        }
    } else {
        ChannelEvent::Message { seq: item.seq, sender: item.sender, data: item.data, epoch: item.epoch }
    }
}

impl Shared {
    fn slot(&self, channel: &str) -> Arc<ChannelSlot> {
        let mut map = match self.channels.lock() {
            Ok(m) => m,
            Err(p) => p.into_inner(),
        };
        map.entry(channel.to_string())
            .or_insert_with(|| Arc::new(ChannelSlot { lock: Mutex::new(()), notify: Notify::new() }))
            .clone()
    }

    fn emit(&self, event: ClientEvent) {
        let _ = self.events.send(event);
    }

    fn emit_error(&self, channel: Option<&str>, code: &str, message: String) {
        tracing::warn!(channel = channel.unwrap_or(""), code, "background error");
        self.emit(ClientEvent::Error { channel: channel.map(str::to_string), code: code.to_string(), message });
    }

    /// The live connection, waiting for one while reconnecting.
    async fn live_conn(&self) -> Result<Arc<RelayConnection>> {
        let mut rx = self.conn.subscribe();
        let mut closed = self.closed.subscribe();
        loop {
            if *closed.borrow() {
                return Err(ClientError::Closed);
            }
            if let Some(c) = rx.borrow_and_update().clone() {
                return Ok(c);
            }
            tokio::select! {
                r = rx.changed() => { if r.is_err() { return Err(ClientError::Closed); } }
                _ = closed.changed() => {}
            }
        }
    }

    /// Waits until the connection differs from `old` (after a transport failure).
    async fn next_conn(&self, old: &Arc<RelayConnection>) -> Result<Arc<RelayConnection>> {
        loop {
            let c = self.live_conn().await?;
            if !Arc::ptr_eq(&c, old) {
                return Ok(c);
            }
            let mut rx = self.conn.subscribe();
            let mut closed = self.closed.subscribe();
            tokio::select! {
                r = rx.changed() => { if r.is_err() { return Err(ClientError::Closed); } }
                _ = closed.changed() => {}
                _ = tokio::time::sleep(Duration::from_millis(250)) => {}
            }
        }
    }

    /// Applies one delivered item; the channel lock must be held.
    fn apply_locked(&self, d: &Deliver) {
        let agent = &self.agent;
        let last = match agent.last_seq(&d.channel) {
            Ok(s) => s,
            Err(_) => return, // not our channel (anymore)
        };
        if d.seq <= last {
            return;
        }
        match agent.process_delivered(&d.channel, &d.payload, d.seq) {
            Ok(Incoming::Proposal { .. }) => {}
            Ok(_) => self.slot(&d.channel).notify.notify_waiters(),
            Err(e) => {
                // Skip the item (it can never be processed) but say so.
                let _ = agent.set_last_seq(&d.channel, d.seq);
                if e.code() != "SKYTALE_REPLAY" {
                    self.emit_error(Some(&d.channel), e.code(), format!("item {} from {}: {e}", d.seq, d.sender));
                }
            }
        }
    }

    /// Fetches and applies everything after the channel's last seq; the channel lock must be held.
    async fn catch_up_locked(&self, conn: &RelayConnection, channel: &str) -> Result<()> {
        loop {
            let after = self.agent.last_seq(channel)?;
            let (items, done) = conn.fetch(channel, after, 0).await?;
            for d in &items {
                self.apply_locked(d);
            }
            if !done.more {
                if done.last_seq > after {
                    let _ = self.agent.set_last_seq(channel, done.last_seq);
                }
                return Ok(());
            }
        }
    }

    async fn handle_deliver(&self, d: Deliver) {
        let slot = self.slot(&d.channel);
        let _guard = slot.lock.lock().await;
        self.apply_locked(&d);
    }

    async fn handle_welcome(&self, conn: &RelayConnection, w: Welcome) {
        match self.agent.join_channel(&w.payload) {
            Ok(name) => {
                let _ = self.agent.set_last_seq(&name, w.commit_seq);
                self.slot(&name);
                if let Err(e) = conn.subscribe(&name, w.commit_seq).await {
                    self.emit_error(Some(&name), e.code(), format!("subscribe after join: {e}"));
                }
                self.emit(ClientEvent::Joined { channel: name, by: w.sender.clone() });
            }
            Err(CoreError::ChannelExists(_)) => {}
            Err(e) => self.emit_error(Some(&w.channel), e.code(), format!("welcome from {}: {e}", w.sender)),
        }
        if let Err(e) = conn.ack_welcome(w.welcome_id).await {
            tracing::debug!(code = e.code(), "ack welcome failed; it will be redelivered");
        }
    }

    /// Runs a commit through the relay: stage, send, merge on ack; on a lost race discard,
    /// catch up and retry.
    async fn commit_op<F>(&self, channel: &str, recipients: Option<Vec<String>>, make: F) -> Result<CommitOutput>
    where
        F: Fn(&Agent, &str) -> skytale_core::Result<CommitOutput>,
    {
        const ATTEMPTS: usize = 8;
        let slot = self.slot(channel);
        let mut conn = self.live_conn().await?;
        for attempt in 0..ATTEMPTS {
            let _guard = slot.lock.lock().await;
            // Apply whatever arrived first, so the commit is made on the newest epoch.
            self.catch_up_locked(&conn, channel).await.ok();
            let out = make(&self.agent, channel)?;
            let msg = Commit {
                channel: channel.to_string(),
                client_msg_id: random_id(),
                epoch: out.from_epoch,
                payload: out.commit.clone(),
                welcome: match (&recipients, &out.welcome) {
                    (Some(r), Some(w)) => Some(WelcomeOut { recipients: r.clone(), payload: w.clone() }),
                    _ => None,
                },
            };
            loop {
                match conn.commit(msg.clone()).await {
                    Ok(_ack) => {
                        self.agent.merge_pending_commit(channel)?;
                        return Ok(out);
                    }
                    Err(ProtoError::WrongEpoch { .. }) => {
                        self.agent.clear_pending_commit(channel)?;
                        tracing::debug!(channel, attempt, "commit lost the epoch; catching up");
                        break;
                    }
                    Err(ProtoError::Relay { ref code, retry_after_ms, .. }) if code == "SKYTALE_RATE_LIMITED" => {
                        tokio::time::sleep(Duration::from_millis(retry_after_ms.clamp(10, 5_000))).await;
                    }
                    Err(e) if is_transport(&e) => {
                        // Same client_msg_id: the relay answers the original Ack if it got it.
                        conn = match self.next_conn(&conn).await {
                            Ok(c) => c,
                            Err(err) => {
                                let _ = self.agent.clear_pending_commit(channel);
                                return Err(err);
                            }
                        };
                    }
                    Err(e) => {
                        self.agent.clear_pending_commit(channel)?;
                        return Err(e.into());
                    }
                }
            }
            let jitter = rand::thread_rng().gen_range(0..20u64 * (attempt as u64 + 1));
            drop(_guard);
            tokio::time::sleep(Duration::from_millis(jitter)).await;
        }
        Err(ClientError::CommitContention(channel.to_string()))
    }

    /// Encrypts and sends one outbox item until the relay acks it.
    async fn deliver_one(&self, item: &OutItem) -> Result<u64> {
        let slot = self.slot(&item.channel);
        let mut conn = self.live_conn().await?;
        let mut wrong_epochs = 0;
        loop {
            let (epoch, payload) = {
                let _guard = slot.lock.lock().await;
                let epoch = self.agent.epoch(&item.channel)?;
                (epoch, self.agent.encrypt(&item.channel, &item.data)?)
            };
            match conn.send(&item.channel, &item.client_msg_id, Kind::Application, epoch, payload).await {
                Ok(ack) => return Ok(ack.seq),
                Err(ProtoError::WrongEpoch { .. }) if wrong_epochs < 8 => {
                    wrong_epochs += 1;
                    let _guard = slot.lock.lock().await;
                    self.catch_up_locked(&conn, &item.channel).await?;
                }
                Err(e) if is_transport(&e) => conn = self.next_conn(&conn).await?,
                Err(ProtoError::Relay { ref code, retry_after_ms, .. }) if code == "SKYTALE_RATE_LIMITED" => {
                    tokio::time::sleep(Duration::from_millis(retry_after_ms.clamp(10, 5_000))).await;
                }
                Err(e) => return Err(e.into()),
            }
        }
    }
}

async fn outbox_loop(shared: Arc<Shared>) {
    let mut closed = shared.closed.subscribe();
    loop {
        if *closed.borrow() {
            return;
        }
        let item = shared.outbox.lock().ok().and_then(|mut o| o.pop_front());
        let Some(item) = item else {
            tokio::select! {
                _ = shared.outbox_notify.notified() => {}
                _ = closed.changed() => {}
                _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            }
            continue;
        };
        let res = shared.deliver_one(&item).await;
        let _ = item.done.send(res);
    }
}

async fn connect_once(shared: &Arc<Shared>) -> Result<(Arc<RelayConnection>, PushReceiver, u64)> {
    let token = shared.tokens.get().await?;
    let addr_str = shared.config.relay.clone().or(token.relay.clone()).ok_or(ClientError::NoRelay)?;
    let addr: RelayAddr = addr_str.parse()?;
    let (conn, pushes) = RelayConnection::connect(&shared.endpoint, &addr).await?;
    let conn = Arc::new(conn);
    let ok = conn.auth(&token.jwt, shared.agent.identity()).await?;
    // Keep enough key packages on the relay for others to add this agent.
    let held = conn.count_key_packages().await?;
    if held < shared.config.key_package_low_water {
        let kps = shared.agent.generate_key_packages(shared.config.key_package_batch)?;
        conn.publish_key_packages(kps).await?;
    }
    for name in shared.agent.channel_names()? {
        if shared.agent.is_member(&name).unwrap_or(false) {
            shared.slot(&name);
            let after = shared.agent.last_seq(&name)?;
            conn.subscribe(&name, after).await?;
        }
    }
    Ok((conn, pushes, ok.expires_at))
}

/// Pings the relay every [`HEARTBEAT_EVERY`]; a missing answer closes the connection so the
/// client reconnects (a relay that died without closing is noticed within seconds).
async fn heartbeat(conn: Arc<RelayConnection>) {
    loop {
        tokio::time::sleep(HEARTBEAT_EVERY).await;
        match tokio::time::timeout(HEARTBEAT_TIMEOUT, conn.ping()).await {
            Ok(Ok(())) => {}
            _ => {
                conn.close();
                return;
            }
        }
    }
}

/// Interval of liveness pings.
const HEARTBEAT_EVERY: Duration = Duration::from_secs(2);
/// How long a ping may take before the connection is considered dead.
const HEARTBEAT_TIMEOUT: Duration = Duration::from_secs(3);

fn backoff(attempt: u32) -> Duration {
    let base = 100u64.saturating_mul(1u64 << attempt.min(6)).min(5_000);
    let jitter = rand::thread_rng().gen_range(0..=base / 2);
    Duration::from_millis(base / 2 + jitter)
}

async fn connection_loop(shared: Arc<Shared>, first: oneshot::Sender<Result<()>>) {
    let mut first = Some(first);
    let mut attempt: u32 = 0;
    let mut closed = shared.closed.subscribe();
    loop {
        if *closed.borrow() {
            break;
        }
        match connect_once(&shared).await {
            Ok((conn, mut pushes, expires_at)) => {
                attempt = 0;
                let _ = shared.conn.send_replace(Some(conn.clone()));
                shared.emit(ClientEvent::Connected);
                if let Some(f) = first.take() {
                    let _ = f.send(Ok(()));
                }
                let heartbeat = tokio::spawn(heartbeat(conn.clone()));
                let refresh_in = Duration::from_secs(expires_at.saturating_sub(now_secs())).saturating_sub(REFRESH_MARGIN);
                let mut refresh = Box::pin(tokio::time::sleep(refresh_in.max(Duration::from_secs(5))));
                loop {
                    tokio::select! {
                        frame = pushes.recv() => match frame {
                            Some(f) => match f.body {
                                Some(Body::Deliver(d)) => shared.handle_deliver(d).await,
                                Some(Body::Welcome(w)) => shared.handle_welcome(&conn, w).await,
                                Some(Body::Error(e)) => shared.emit_error(None, &e.code, e.message),
                                _ => {}
                            },
                            None => break,
                        },
                        _ = &mut refresh => {
                            match shared.tokens.get().await {
                                Ok(t) => match conn.auth(&t.jwt, shared.agent.identity()).await {
                                    Ok(ok) => {
                                        let next = Duration::from_secs(ok.expires_at.saturating_sub(now_secs())).saturating_sub(REFRESH_MARGIN);
                                        refresh = Box::pin(tokio::time::sleep(next.max(Duration::from_secs(5))));
                                    }
                                    Err(e) => { shared.emit_error(None, e.code(), format!("token refresh: {e}")); break; }
                                },
                                Err(e) => {
                                    shared.emit_error(None, e.code(), format!("token refresh: {e}"));
                                    refresh = Box::pin(tokio::time::sleep(Duration::from_secs(10)));
                                }
                            }
                        }
                        _ = closed.changed() => { conn.close(); break; }
                    }
                }
                heartbeat.abort();
                let _ = shared.conn.send_replace(None);
                let code = conn.close_code();
                if *closed.borrow() {
                    break;
                }
                shared.emit(ClientEvent::Disconnected { code });
            }
            Err(e) => {
                if let Some(f) = first.take() {
                    let _ = f.send(Err(e));
                    return;
                }
                if e.is_permanent() {
                    shared.emit_error(None, e.code(), format!("giving up reconnecting: {e}"));
                    let _ = shared.closed.send_replace(true);
                    break;
                }
                tracing::debug!(code = e.code(), attempt, "reconnect failed");
            }
        }
        let wait = backoff(attempt);
        attempt = attempt.saturating_add(1);
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = closed.changed() => {}
        }
    }
}

fn now_secs() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}
