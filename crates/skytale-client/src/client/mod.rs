//! [`Client`]: connection management, background processing, sends and commits.

mod acks;
mod commit;
mod connection;
mod followup;
mod heal;
mod incoming;
mod join;
mod outbox;
mod policy;
mod shared;
mod sync;

pub use policy::InviteInfo;

use acks::ack_loop;
use commit::recover_pending_commit;
use connection::connection_loop;
use followup::followup_loop;
use incoming::to_event;
use outbox::outbox_loop;

pub use heal::ChannelStats;

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex as StdMutex};
use std::time::Duration;

use iroh::Endpoint;
use rand::Rng;
use skytale_core::{Agent, CommitMode, CommitOutput, Delivery, Error as CoreError, Incoming};
use skytale_proto::conn::{client_endpoint, PushReceiver, RelayAddr, RelayConnection};
use skytale_proto::frames::{Body, Commit, Deliver, Frame, Kind, Welcome, WelcomeOut};
use skytale_proto::ProtoError;
use tokio::sync::{broadcast, oneshot, watch, Mutex, Notify};
use zeroize::Zeroizing;

use crate::error::{ClientError, Result};
use crate::tokens::{TokenSource, REFRESH_MARGIN};
use skytale_core::control::{frame_control, frame_data, parse_control, Control, ENVELOPE_CONTROL, ENVELOPE_DATA};
use skytale_core::invite::InviteToken;
use skytale_core::policy::Rules;

/// How a [`Client`] reaches the API server and the relay.
#[derive(Clone)]
pub struct ClientConfig {
    /// API server base URL, e.g. `http://127.0.0.1:8080`.
    pub api_url: String,
    /// The API key (`sk_live_…`). Never logged.
    pub api_key: Zeroizing<String>,
    /// Relay address `iroh://<endpoint-id>@host:port`, or several comma-separated (the nodes of
    /// a relay cluster); `None` = the ones the API server hands out.
    pub relay: Option<String>,
    /// More relay addresses (a relay cluster), tried after `relay`. The client connects to the
    /// first that answers and moves on to the next when its node fails, resuming every channel
    /// from its last seq.
    pub relays: Vec<String>,
    /// Publish more key packages when the relay holds fewer than this.
    pub key_package_low_water: u64,
    /// How many key packages to publish at a time.
    pub key_package_batch: u32,
    /// Which Welcomes this agent joins on (see [`AcceptWelcomes`]).
    pub accept_welcomes: AcceptWelcomes,
    /// How old this agent's last key update in a channel may be when it adds members before
    /// it follows the add with a self-update (default [`SELF_UPDATE_INTERVAL`]; at most
    /// [`MAX_SELF_UPDATE_INTERVAL`]; zero = after every add). Adds carry no update path, so
    /// this bounds how long a leaf secret stolen from this agent keeps opening new epochs.
    pub self_update_interval: Duration,
    /// How long [`Client::connect`] waits in all for the API server's rate limit (HTTP 429 with
    /// `Retry-After`: many agents starting from one address at once) before it fails with
    /// `SKYTALE_RATE_LIMITED` (default [`RATE_LIMIT_WAIT`]; zero = fail at once). Reconnects
    /// always wait at least as long as the server asks.
    pub rate_limit_wait: Duration,
}

/// How long connecting waits for the API server's rate limit by default: one of its windows.
pub const RATE_LIMIT_WAIT: Duration = Duration::from_secs(60);

/// Which Welcomes an agent joins on. Whatever the mode, every member of the group a Welcome
/// leads into must carry a credential of this agent's org (checked by the core), and a Welcome
/// into a channel name this agent already holds is refused.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum AcceptWelcomes {
    /// Any Welcome that passes those checks.
    Any,
    /// Welcomes for invites this agent used, and from certified members of its org (default).
    #[default]
    Org,
    /// Only Welcomes for invites this agent used (`joinWithToken` in progress).
    None,
}

impl AcceptWelcomes {
    /// Parses `any` / `org` / `none`.
    pub fn parse(s: &str) -> Result<AcceptWelcomes> {
        match s {
            "any" => Ok(AcceptWelcomes::Any),
            "org" => Ok(AcceptWelcomes::Org),
            "none" => Ok(AcceptWelcomes::None),
            _ => Err(ClientError::InvalidArgument(format!("acceptWelcomes must be any, org or none, not '{s}'"))),
        }
    }
}

impl std::fmt::Debug for ClientConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientConfig")
            .field("api_url", &self.api_url)
            .field("api_key", &"[redacted]")
            .field("relay", &self.relay)
            .field("relays", &self.relays)
            .field("accept_welcomes", &self.accept_welcomes)
            .field("self_update_interval", &self.self_update_interval)
            .field("rate_limit_wait", &self.rate_limit_wait)
            .finish()
    }
}

impl ClientConfig {
    /// A config with default key-package settings.
    pub fn new(api_url: impl Into<String>, api_key: Zeroizing<String>, relay: Option<String>) -> Self {
        ClientConfig {
            api_url: api_url.into(),
            api_key,
            relay,
            relays: Vec::new(),
            key_package_low_water: 5,
            key_package_batch: 10,
            accept_welcomes: AcceptWelcomes::default(),
            self_update_interval: SELF_UPDATE_INTERVAL,
            rate_limit_wait: RATE_LIMIT_WAIT,
        }
    }

    /// The configured relay addresses, in order (`relay` split at commas, then `relays`).
    pub fn relay_list(&self) -> Vec<String> {
        let mut out = Vec::new();
        crate::tokens::push_relays(
            &mut out,
            self.relay.as_deref().into_iter().chain(self.relays.iter().map(String::as_str)),
        );
        out
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
    /// Members were added or removed by a commit (this agent's or another member's).
    MembersChanged {
        /// Channel name.
        channel: String,
        /// Identities added.
        added: Vec<String>,
        /// Identities removed.
        removed: Vec<String>,
        /// The committer.
        by: String,
    },
    /// Members hold different states of one epoch of a channel, or this agent cannot follow
    /// the relay's order (`SKYTALE_FORK_DETECTED`). The side that cannot follow resyncs by
    /// itself ([`ClientEvent::Healed`]).
    Fork {
        /// Channel name.
        channel: String,
        /// This agent's MLS epoch.
        local_epoch: u64,
        /// The epoch the other side (or the relay's order) is at.
        remote_epoch: u64,
        /// What was seen.
        reason: String,
    },
    /// This agent resynced the channel (an external commit replacing its own leaf, accepted
    /// by the relay); its outbox follows in the new epoch.
    Healed {
        /// Channel name.
        channel: String,
        /// The new epoch.
        epoch: u64,
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
    /// The receiver made with `events` before the connection loop starts: it holds what was
    /// emitted while [`Client::connect`] ran (and since), for the first [`Client::events`].
    first_events: StdMutex<Option<broadcast::Receiver<ClientEvent>>>,
    closed: watch::Sender<bool>,
    outbox: StdMutex<VecDeque<OutItem>>,
    outbox_notify: Notify,
    followups: StdMutex<VecDeque<FollowUp>>,
    followup_notify: Notify,
    /// Wakes the loop that writes noted acknowledgements (`acks.rs`); `ack_armed` says it is
    /// already due to run.
    ack_notify: Notify,
    ack_armed: std::sync::atomic::AtomicBool,
    relay_addr: StdMutex<String>,
    /// Channels this agent is an active member of, kept in memory so that listing them never
    /// waits on the keystore (updated wherever membership changes).
    member_channels: StdMutex<std::collections::BTreeSet<String>>,
    /// Fork detection and healing (issue #10).
    fork: heal::ForkState,
    /// Channels this agent is joining with an invite (their Welcome is expected).
    expected_welcomes: StdMutex<std::collections::HashSet<String>>,
}

/// Work found while processing an item, done after the channel lock is released.
#[derive(Debug)]
enum FollowUp {
    /// Add a joiner that presented a valid invite (its key package and admission proof).
    Admit { channel: String, joiner: String, key_package: Vec<u8>, invite_id: String, admission: Vec<u8> },
    /// Commit the pending leave requests (self-remove proposals) of members.
    CommitLeaves { channel: String },
    /// Record in the channel policy that `identity` used `invite_id` (after an external join),
    /// unless someone did already; `not_before` lets the joiner itself go first.
    RecordUse { channel: String, invite_id: String, identity: String, not_before: tokio::time::Instant },
    /// Re-upload the sealed GroupInfo of this channel's live invites (the epoch changed).
    RefreshInvites { channel: String },
    /// Remove a member whose leave request another member's commit voided
    /// ([`Agent::voided_leaves`]); only an agent with the remove role can.
    RemoveVoidedLeave { channel: String, identity: String },
    /// Publish more key packages if the relay holds fewer than
    /// [`ClientConfig::key_package_low_water`] (others used one to add this agent).
    TopUpKeyPackages,
    /// Rotate this agent's leaf if its last self-update is older than
    /// [`ClientConfig::self_update_interval`] (adds are committed without an update path; this
    /// restores post-compromise security).
    SelfUpdate { channel: String },
}

/// How old this agent's last key update in a channel may get before an add triggers a rotation
/// (the default of [`ClientConfig::self_update_interval`]).
pub const SELF_UPDATE_INTERVAL: Duration = Duration::from_secs(600);

/// Longest [`ClientConfig::self_update_interval`] a client accepts (one day).
pub const MAX_SELF_UPDATE_INTERVAL: Duration = Duration::from_secs(86_400);

fn self_update_key(channel: &str) -> String {
    format!("self-update/{channel}")
}

/// Present while an add of this agent in `channel` still owes its self-update check (so that a
/// restart in between does the check at the next connect).
fn self_update_owed_key(channel: &str) -> String {
    format!("self-update-owed/{channel}")
}

/// The relay epoch (8 bytes, big endian) whose GroupInfo this agent last sealed into all of
/// `channel`'s live invites. A different epoch at connect means a refresh was left undone (a
/// crash after the epoch changed, a lost request): the connect does it.
fn invites_refreshed_key(channel: &str) -> String {
    format!("invites-refreshed/{channel}")
}

#[derive(serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct StoredInvite {
    token: String,
    max_uses: u32,
    expires_at: u64,
}

fn pending_commit_key(channel: &str) -> String {
    format!("pending-commit/{channel}")
}

fn encode_commit(c: &Commit) -> Vec<u8> {
    prost::Message::encode_to_vec(c)
}

fn decode_commit(bytes: &[u8]) -> Option<Commit> {
    <Commit as prost::Message>::decode(bytes).ok()
}

fn invite_key(channel: &str, id_hex: &str) -> String {
    format!("invite/{channel}/{id_hex}")
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
    /// Afterwards the client reconnects by itself. Fails with `SKYTALE_INVALID_ARGUMENT` when
    /// `config.self_update_interval` is above [`MAX_SELF_UPDATE_INTERVAL`].
    pub async fn connect(agent: Arc<Agent>, config: ClientConfig) -> Result<Client> {
        if config.self_update_interval > MAX_SELF_UPDATE_INTERVAL {
            return Err(ClientError::InvalidArgument(format!(
                "selfUpdateIntervalSecs must be at most {} (one day), not {}",
                MAX_SELF_UPDATE_INTERVAL.as_secs(),
                config.self_update_interval.as_secs()
            )));
        }
        // Everything is processed in relay order and an own commit is merged only after what
        // the relay ordered before it (`sync::apply_before_own_commit`): channels this client
        // creates or joins keep no past epochs' secrets.
        agent.set_past_epochs(0)?;
        let tokens = TokenSource::for_identity(&config.api_url, config.api_key.clone(), agent.identity())?;
        let bind = "0.0.0.0:0".parse().map_err(|_| ClientError::InvalidArgument("bind address".into()))?;
        let endpoint = client_endpoint(bind).await?;
        let (conn, _) = watch::channel(None);
        let (events, first_events) = broadcast::channel(1024);
        let (closed, _) = watch::channel(false);
        let shared = Arc::new_cyclic(|me| Shared {
            agent,
            config,
            tokens,
            endpoint,
            conn,
            channels: StdMutex::new(HashMap::new()),
            events,
            first_events: StdMutex::new(Some(first_events)),
            closed,
            outbox: StdMutex::new(VecDeque::new()),
            outbox_notify: Notify::new(),
            followups: StdMutex::new(VecDeque::new()),
            followup_notify: Notify::new(),
            ack_notify: Notify::new(),
            ack_armed: std::sync::atomic::AtomicBool::new(false),
            relay_addr: StdMutex::new(String::new()),
            member_channels: StdMutex::new(Default::default()),
            fork: heal::ForkState::new(me.clone()),
            expected_welcomes: StdMutex::new(Default::default()),
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
        tokio::spawn(followup_loop(shared.clone()));
        tokio::spawn(sync::reconcile_loop(shared.clone()));
        tokio::spawn(ack_loop(shared.clone()));
        Ok(Client { shared })
    }

    /// The agent this client drives.
    pub fn agent(&self) -> &Arc<Agent> {
        &self.shared.agent
    }

    /// Client-wide events (connected, disconnected, joined, background errors). The first
    /// receiver handed out also yields what was emitted while [`Client::connect`] ran and
    /// before this call (e.g. the `SKYTALE_NOT_A_MEMBER` error of a channel this agent was
    /// removed from while offline, the members event of a recovered commit), up to the
    /// channel's capacity of 1,024 events; later receivers start at the time of the call.
    pub fn events(&self) -> broadcast::Receiver<ClientEvent> {
        let first = self.shared.first_events.lock().ok().and_then(|mut f| f.take());
        first.unwrap_or_else(|| self.shared.events.subscribe())
    }

    /// Resolves once the client is closed (by [`Client::close`] or after giving up reconnecting).
    pub async fn closed(&self) {
        let mut rx = self.shared.closed.subscribe();
        while !*rx.borrow_and_update() {
            if rx.changed().await.is_err() {
                return;
            }
        }
    }

    /// Whether the client currently has an authenticated relay connection.
    pub fn is_connected(&self) -> bool {
        self.shared.conn.borrow().is_some()
    }

    /// Creates a channel locally and on the relay, and subscribes to it; this agent is its first
    /// admin, with the default rules (admins add, remove, invite and change the policy).
    /// Fails with `SKYTALE_CHANNEL_EXISTS` if the relay already has a channel of that name
    /// (someone else created it first).
    pub async fn create_channel(&self, name: &str) -> Result<()> {
        self.create_channel_with_rules(name, Rules::default()).await
    }

    /// [`Client::create_channel`] with explicit rules.
    pub async fn create_channel_with_rules(&self, name: &str, rules: Rules) -> Result<()> {
        let agent = self.shared.agent.clone();
        agent.create_channel_with_rules(name, rules)?;
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
        self.shared.note_membership(name);
        self.shared.mark_self_updated(name);
        conn.subscribe(name, 0).await?;
        Ok(())
    }

    /// Adds `identity` to `channel`: claims one of its key packages from the relay, commits
    /// (retrying if another commit wins the epoch) and queues the Welcome for it.
    pub async fn add_member(&self, channel: &str, identity: &str) -> Result<CommitOutput> {
        let conn = self.shared.live_conn().await?;
        let kp = conn.claim_key_package(identity).await?;
        // The relay hands out whatever it holds: only a key package certified for exactly this
        // identity (by our org's issuer, for its own signature key) may be added.
        self.shared.agent.verify_key_package(channel, &kp, identity, now_secs())?;
        let recipients = vec![identity.to_string()];
        self.shared
            .commit_op(channel, Some(recipients), move |agent, name| {
                agent.add_members(name, std::slice::from_ref(&kp), CommitMode::Stage)
            })
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
        self.send_queued(channel, data)?.await
    }

    /// Queues `data` for `channel` at once (so sends keep the order of the calls) and returns
    /// a future that resolves with the relay sequence number once the relay has archived it.
    pub fn send_queued(
        &self,
        channel: &str,
        data: &[u8],
    ) -> Result<impl std::future::Future<Output = Result<u64>> + Send + 'static> {
        let framed = frame_data(data);
        let rx = self.shared.push_outbox(channel, framed)?;
        Ok(async move { rx.await.map_err(|_| ClientError::Closed)? })
    }

    /// The channels this agent is an active member of, from memory (never touches the keystore).
    pub fn member_channels(&self) -> Vec<String> {
        match self.shared.member_channels.lock() {
            Ok(set) => set.iter().cloned().collect(),
            Err(p) => p.into_inner().iter().cloned().collect(),
        }
    }

    /// The first event of `channel` with `seq > after_seq`, in relay order, waiting up to
    /// `timeout` (`None` = forever). Returns `Ok(None)` on timeout or when the client closes.
    /// Events stay in the keystore inbox until [`Client::ack_events`]: an event that was
    /// returned but not acknowledged (the app crashed) is returned again after a restart.
    pub async fn next_event(
        &self,
        channel: &str,
        after_seq: u64,
        timeout: Option<Duration>,
    ) -> Result<Option<ChannelEvent>> {
        Ok(self.next_events(channel, after_seq, 1, timeout).await?.into_iter().next())
    }

    /// Like [`Client::next_event`], but returns up to `limit` events at once (one keystore
    /// read) as soon as at least one is there; empty on timeout or close.
    pub async fn next_events(
        &self,
        channel: &str,
        after_seq: u64,
        limit: u32,
        timeout: Option<Duration>,
    ) -> Result<Vec<ChannelEvent>> {
        let slot = self.shared.slot(channel);
        let deadline = timeout.map(|t| tokio::time::Instant::now() + t);
        let mut closed = self.shared.closed.subscribe();
        loop {
            let notified = slot.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            // A short indexed read: done in place, like the processing that filled the inbox
            // (a hop to the blocking pool and back cost more than the read).
            let items = self.shared.agent.inbox(channel, after_seq, limit.max(1))?;
            if !items.is_empty() {
                return Ok(items.into_iter().map(to_event).collect());
            }
            if *closed.borrow() {
                return Ok(Vec::new());
            }
            match deadline {
                Some(d) => {
                    tokio::select! {
                        _ = &mut notified => {}
                        _ = closed.changed() => {}
                        _ = tokio::time::sleep_until(d) => return Ok(Vec::new()),
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
        let mut events = self.shared.events.subscribe();
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
        // Noted acknowledgements are written before the client goes.
        self.shared.flush_acks();
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

fn now_secs() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}
