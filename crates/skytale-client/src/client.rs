//! [`Client`]: connection management, background processing, sends and commits.

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
use crate::invites::InviteToken;
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
    followups: StdMutex<VecDeque<FollowUp>>,
    followup_notify: Notify,
    relay_addr: StdMutex<String>,
    /// Channels this agent is an active member of, kept in memory so that listing them never
    /// waits on the keystore (updated wherever membership changes).
    member_channels: StdMutex<std::collections::BTreeSet<String>>,
}

/// Work found while processing an item, done after the channel lock is released.
#[derive(Debug)]
enum FollowUp {
    /// Add a joiner that presented a valid invite.
    Admit { channel: String, joiner: String, key_package: Vec<u8> },
    /// Remove a member (external joiner without a valid proof, or a member that asked to leave).
    Remove { channel: String, identity: String },
    /// Re-upload the sealed GroupInfo of this channel's live invites (the epoch changed).
    RefreshInvites { channel: String },
    /// Rotate this agent's leaf if its last self-update is older than [`SELF_UPDATE_INTERVAL`]
    /// (adds are committed without an update path; this restores post-compromise security).
    SelfUpdate { channel: String },
}

/// How old this agent's last key update in a channel may get before an add triggers a rotation.
pub const SELF_UPDATE_INTERVAL: Duration = Duration::from_secs(600);

fn self_update_key(channel: &str) -> String {
    format!("self-update/{channel}")
}

/// Plaintext envelope of channel messages sent by a [`Client`]: user data or a control message.
const ENVELOPE_DATA: u8 = 0;
const ENVELOPE_CONTROL: u8 = 1;

#[derive(serde::Serialize, serde::Deserialize)]
#[serde(tag = "t", rename_all = "camelCase")]
enum Control {
    /// A member shares an invite with the other members so any of them can admit joiners.
    Invite { token: String, max_uses: u32, expires_at: u64 },
    /// The sender asks to be removed.
    Leave,
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
    /// Afterwards the client reconnects by itself.
    pub async fn connect(agent: Arc<Agent>, config: ClientConfig) -> Result<Client> {
        let tokens = TokenSource::for_identity(&config.api_url, config.api_key.clone(), agent.identity())?;
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
            followups: StdMutex::new(VecDeque::new()),
            followup_notify: Notify::new(),
            relay_addr: StdMutex::new(String::new()),
            member_channels: StdMutex::new(Default::default()),
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
        let mut framed = Vec::with_capacity(data.len() + 1);
        framed.push(ENVELOPE_DATA);
        framed.extend_from_slice(data);
        let rx = self.shared.push_outbox(channel, framed)?;
        Ok(async move { rx.await.map_err(|_| ClientError::Closed)? })
    }

    /// Creates an invite for `channel` (this agent must be a member): `maxUses` joins, valid for
    /// `ttl`. Returns the token (`skt_inv_…`) to hand to the joiner. The invite is shared with
    /// the other members through the channel, so any online member admits the joiner; a sealed,
    /// current GroupInfo is kept on the relay so the joiner can also get in when nobody is online.
    pub async fn create_invite(&self, channel: &str, max_uses: u32, ttl: Duration) -> Result<Zeroizing<String>> {
        if max_uses == 0 || ttl.is_zero() {
            return Err(ClientError::InvalidArgument("maxUses and ttl must be positive".into()));
        }
        let agent = &self.shared.agent;
        if !agent.is_member(channel)? {
            return Err(CoreError::NotAMember(channel.to_string()).into());
        }
        let relay = self.shared.relay_addr.lock().map(|r| r.clone()).unwrap_or_default();
        let invite = InviteToken::generate(channel, &relay);
        let expires_at = now_secs() + ttl.as_secs().max(1);
        let conn = self.shared.live_conn().await?;
        let group_info = invite.seal_group_info(&self.shared.group_info_with_epoch(channel)?)?;
        conn.create_invite(skytale_proto::frames::CreateInvite {
            channel: channel.to_string(),
            invite_id: invite.id_hex(),
            invite_auth: invite.relay_auth(),
            max_uses,
            expires_at,
            group_info,
        })
        .await?;
        let token = invite.encode();
        let stored = StoredInvite { token: token.to_string(), max_uses, expires_at };
        let json =
            Zeroizing::new(serde_json::to_vec(&stored).map_err(|e| ClientError::InvalidArgument(e.to_string()))?);
        agent.kv_put(&invite_key(channel, &invite.id_hex()), &json)?;
        let control = Control::Invite { token: token.to_string(), max_uses, expires_at };
        let mut framed = Zeroizing::new(vec![ENVELOPE_CONTROL]);
        framed
            .extend_from_slice(&serde_json::to_vec(&control).map_err(|e| ClientError::InvalidArgument(e.to_string()))?);
        self.shared.enqueue(channel, framed.to_vec()).await?;
        Ok(token)
    }

    /// Joins `channel` with an invite token. Sends a join request (the KeyPackage sealed under
    /// the invite secret) that any online member admits; if no Welcome arrives within a short
    /// grace period, joins by an external commit from the sealed GroupInfo on the relay, with a
    /// proof of the invite secret that every member checks. Fails fast with
    /// `SKYTALE_INVITE_INVALID`, `SKYTALE_INVITE_EXPIRED`, `SKYTALE_INVITE_USED_UP` or
    /// `SKYTALE_INVITE_WRONG_CHANNEL`; `SKYTALE_JOIN_TIMEOUT` after `timeout`.
    pub async fn join_with_token(&self, channel: &str, token: &str, timeout: Duration) -> Result<()> {
        let invite = InviteToken::parse(token)?;
        if invite.channel != channel {
            return Err(ClientError::Invite {
                code: "SKYTALE_INVITE_WRONG_CHANNEL",
                message: format!("the token is for another channel than {channel}"),
            });
        }
        let agent = self.shared.agent.clone();
        if agent.has_channel(channel)? && agent.is_member(channel)? {
            return Ok(());
        }
        let deadline = tokio::time::Instant::now() + timeout;
        let mut events = self.events();
        let conn = self.shared.live_conn().await?;
        let kp = agent.generate_key_packages(1)?.into_iter().next().ok_or(ClientError::Closed)?;
        let sealed = invite.seal_join_request(agent.identity(), &kp)?;
        conn.send_join_request(channel, &random_id(), &invite.id_hex(), invite.relay_auth(), sealed).await?;
        // Give online members a moment to admit us with a Welcome.
        let grace = (timeout / 4).min(Duration::from_secs(3));
        if self.wait_joined(channel, &mut events, tokio::time::Instant::now() + grace).await? {
            return self.remember_invite(&invite);
        }
        // Nobody answered: join by external commit.
        let mut attempt = 0u64;
        loop {
            if agent.has_channel(channel)? && agent.is_member(channel)? {
                return self.remember_invite(&invite);
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(ClientError::Invite {
                    code: "SKYTALE_JOIN_TIMEOUT",
                    message: format!("not admitted to {channel} in time"),
                });
            }
            let conn = self.shared.live_conn().await?;
            let info = conn.fetch_invite(channel, &invite.id_hex(), invite.relay_auth()).await?;
            let opened = invite.open_group_info(&info.group_info).ok_or_else(|| ClientError::Invite {
                code: "SKYTALE_INVITE_INVALID",
                message: "the invite's group info does not open with this token".into(),
            })?;
            let (sealed_epoch, group_info) = split_epoch(&opened).ok_or_else(|| ClientError::Invite {
                code: "SKYTALE_INVITE_INVALID",
                message: "the invite's group info is malformed".into(),
            })?;
            let slot = self.shared.slot(channel);
            let guard = slot.lock.lock().await;
            let epoch_hint = info.epoch;
            let aad = invite.external_join_aad(agent.identity(), epoch_hint)?;
            let (name, out) = match agent.join_by_external_commit(&group_info, &aad) {
                Ok(v) => v,
                Err(CoreError::ChannelExists(_)) => return self.remember_invite(&invite),
                Err(e) => return Err(e.into()),
            };
            if sealed_epoch != epoch_hint {
                // The sealed GroupInfo is older than the channel: wait for a member to refresh it.
                let _ = agent.forget_channel(&name);
                drop(guard);
                attempt += 1;
                if self
                    .wait_joined(
                        channel,
                        &mut events,
                        tokio::time::Instant::now() + Duration::from_millis(200 * attempt.min(10)),
                    )
                    .await?
                {
                    return self.remember_invite(&invite);
                }
                continue;
            }
            let msg = Commit {
                channel: channel.to_string(),
                client_msg_id: random_id(),
                epoch: epoch_hint,
                payload: out.commit.clone(),
                welcome: None,
            };
            match conn.commit(msg).await {
                Ok(ack) => {
                    // The resume position of the joined channel: a failure here must surface.
                    agent.set_last_seq(&name, ack.seq)?;
                    agent.set_relay_epoch(&name, ack.epoch)?;
                    self.shared.note_membership(&name);
                    self.shared.mark_self_updated(&name);
                    drop(guard);
                    conn.subscribe(&name, ack.seq).await?;
                    self.remember_invite(&invite)?;
                    self.shared.schedule(FollowUp::RefreshInvites { channel: name.clone() });
                    self.shared.emit(ClientEvent::Joined { channel: name, by: agent.identity().to_string() });
                    return Ok(());
                }
                Err(ProtoError::WrongEpoch { .. }) => {
                    let _ = agent.forget_channel(&name);
                    drop(guard);
                    attempt += 1;
                    tokio::time::sleep(Duration::from_millis(100 * attempt.min(10))).await;
                }
                Err(e) => {
                    let _ = agent.forget_channel(&name);
                    return Err(e.into());
                }
            }
        }
    }

    /// Joins `channel` by an external commit from a GroupInfo obtained out of band, WITHOUT an
    /// invite proof. Members remove such a joiner as soon as they apply its commit; this exists
    /// to test that they do (and for deployments that add an out-of-band admission check).
    pub async fn join_by_group_info_unchecked(&self, group_info: &[u8]) -> Result<String> {
        let agent = self.shared.agent.clone();
        let conn = self.shared.live_conn().await?;
        let (name, out) = agent.join_by_external_commit(group_info, b"")?;
        let epoch = conn.channel_state(&name).await.map(|i| i.epoch).unwrap_or(out.from_epoch);
        let msg =
            Commit { channel: name.clone(), client_msg_id: random_id(), epoch, payload: out.commit, welcome: None };
        match conn.commit(msg).await {
            Ok(ack) => {
                agent.set_last_seq(&name, ack.seq)?;
                agent.set_relay_epoch(&name, ack.epoch)?;
                self.shared.slot(&name);
                self.shared.note_membership(&name);
                conn.subscribe(&name, ack.seq).await?;
                Ok(name)
            }
            Err(e) => {
                let _ = agent.forget_channel(&name);
                Err(e.into())
            }
        }
    }

    /// Asks the other members to remove this agent, then forgets the channel locally.
    pub async fn leave(&self, channel: &str) -> Result<()> {
        let agent = &self.shared.agent;
        if agent.is_member(channel)? {
            let mut framed = vec![ENVELOPE_CONTROL];
            framed.extend_from_slice(
                &serde_json::to_vec(&Control::Leave).map_err(|e| ClientError::InvalidArgument(e.to_string()))?,
            );
            self.shared.enqueue(channel, framed).await?;
        }
        if let Ok(conn) = self.shared.live_conn().await {
            let _ = conn.unsubscribe(channel).await;
        }
        for (key, _) in agent.kv_list(&format!("invite/{channel}/"))? {
            agent.kv_delete(&key)?;
        }
        agent.forget_channel(channel)?;
        self.shared.note_membership(channel);
        Ok(())
    }

    /// The channels this agent is an active member of, from memory (never touches the keystore).
    pub fn member_channels(&self) -> Vec<String> {
        match self.shared.member_channels.lock() {
            Ok(set) => set.iter().cloned().collect(),
            Err(p) => p.into_inner().iter().cloned().collect(),
        }
    }

    fn remember_invite(&self, invite: &InviteToken) -> Result<()> {
        // The joiner keeps the invite too, so it can refresh the sealed GroupInfo after commits.
        let stored = StoredInvite { token: invite.encode().to_string(), max_uses: 0, expires_at: 0 };
        let json =
            Zeroizing::new(serde_json::to_vec(&stored).map_err(|e| ClientError::InvalidArgument(e.to_string()))?);
        self.shared.agent.kv_put(&invite_key(&invite.channel, &invite.id_hex()), &json)?;
        Ok(())
    }

    async fn wait_joined(
        &self,
        channel: &str,
        events: &mut broadcast::Receiver<ClientEvent>,
        until: tokio::time::Instant,
    ) -> Result<bool> {
        loop {
            if self.shared.agent.has_channel(channel)? && self.shared.agent.is_member(channel)? {
                return Ok(true);
            }
            tokio::select! {
                _ = events.recv() => {}
                _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                _ = tokio::time::sleep_until(until) => return Ok(self.shared.agent.has_channel(channel)? && self.shared.agent.is_member(channel)?),
            }
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
            let agent = self.shared.agent.clone();
            let name = channel.to_string();
            let items = tokio::task::spawn_blocking(move || agent.inbox(&name, after_seq, limit.max(1)))
                .await
                .map_err(|_| ClientError::Closed)??;
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
        let data = match item.data.first() {
            Some(&ENVELOPE_DATA) => item.data[1..].to_vec(),
            _ => item.data,
        };
        ChannelEvent::Message { seq: item.seq, sender: item.sender, data, epoch: item.epoch }
    }
}

impl Shared {
    /// The relay epoch to send and commit at: the relay's commit slot count as this agent has
    /// followed it (it differs from the MLS epoch once a commit was rejected by the members).
    fn send_epoch(&self, channel: &str) -> Result<u64> {
        match self.agent.relay_epoch(channel)? {
            Some(e) => Ok(e),
            None => Ok(self.agent.epoch(channel)?),
        }
    }

    /// The channel's GroupInfo prefixed with the relay epoch it belongs to (what invites seal,
    /// so an external joiner can tell a stale one and commit at the right relay epoch).
    fn group_info_with_epoch(&self, channel: &str) -> Result<Vec<u8>> {
        let mut out = self.send_epoch(channel)?.to_be_bytes().to_vec();
        out.extend_from_slice(&self.agent.export_group_info(channel)?);
        Ok(out)
    }

    /// Queues enveloped plaintext for the channel and waits for the relay's ack.
    async fn enqueue(&self, channel: &str, framed: Vec<u8>) -> Result<u64> {
        self.push_outbox(channel, framed)?.await.map_err(|_| ClientError::Closed)?
    }

    /// Appends to the outbox (in call order) and returns the receiver of the relay's answer.
    fn push_outbox(&self, channel: &str, framed: Vec<u8>) -> Result<oneshot::Receiver<Result<u64>>> {
        if !self.agent.has_channel(channel)? {
            return Err(CoreError::ChannelNotFound(channel.to_string()).into());
        }
        if *self.closed.borrow() {
            return Err(ClientError::Closed);
        }
        let (tx, rx) = oneshot::channel();
        {
            let mut outbox = self.outbox.lock().map_err(|_| ClientError::Closed)?;
            outbox.push_back(OutItem {
                channel: channel.to_string(),
                client_msg_id: random_id(),
                data: Zeroizing::new(framed),
                done: tx,
            });
        }
        self.outbox_notify.notify_one();
        Ok(rx)
    }

    fn schedule(&self, f: FollowUp) {
        if let Ok(mut q) = self.followups.lock() {
            q.push_back(f);
        }
        self.followup_notify.notify_one();
    }

    /// Live invites of a channel held in the keystore.
    fn invites_of(&self, channel: &str) -> Vec<(InviteToken, StoredInvite)> {
        let now = now_secs();
        self.agent
            .kv_list(&format!("invite/{channel}/"))
            .unwrap_or_default()
            .into_iter()
            .filter_map(|(_, v)| serde_json::from_slice::<StoredInvite>(&v).ok())
            .filter(|s| s.expires_at == 0 || s.expires_at > now)
            .filter_map(|s| InviteToken::parse(&s.token).ok().map(|t| (t, s)))
            .collect()
    }

    /// Handles a control message; the channel lock is held.
    fn handle_control(&self, channel: &str, sender: &str, body: &[u8]) {
        match serde_json::from_slice::<Control>(body) {
            Ok(Control::Invite { token, max_uses, expires_at }) => {
                if let Ok(t) = InviteToken::parse(&token) {
                    if t.channel == channel {
                        let stored = StoredInvite { token, max_uses, expires_at };
                        if let Ok(json) = serde_json::to_vec(&stored) {
                            let json = Zeroizing::new(json);
                            if let Err(e) = self.agent.kv_put(&invite_key(channel, &t.id_hex()), &json) {
                                self.emit_error(
                                    Some(channel),
                                    e.code(),
                                    format!("storing a shared invite failed: {e}"),
                                );
                            }
                        }
                    }
                }
            }
            Ok(Control::Leave) => {
                self.schedule(FollowUp::Remove { channel: channel.to_string(), identity: sender.to_string() })
            }
            Err(_) => self.emit_error(
                Some(channel),
                "SKYTALE_INVALID_MESSAGE",
                format!("unreadable control message from {sender}"),
            ),
        }
    }

    /// A join request item (not an MLS message); the channel lock is held.
    fn handle_join_request(&self, d: &Deliver) {
        let _ = self.agent.set_last_seq(&d.channel, d.seq);
        let Some(id) = InviteToken::join_request_id(&d.payload) else { return };
        let id_hex = hex::encode(id);
        let Some((invite, _)) = self.invites_of(&d.channel).into_iter().find(|(t, _)| t.id_hex() == id_hex) else {
            return; // not an invite we know (or expired): another member may admit
        };
        match invite.open_join_request(&d.sender, &d.payload) {
            Some(kp) => {
                let already = self.agent.members(&d.channel).map(|m| m.contains(&d.sender)).unwrap_or(true);
                if let Err(e) = self.agent.verify_key_package(&d.channel, &kp, &d.sender, now_secs()) {
                    self.emit_error(Some(&d.channel), e.code(), format!("join request from {}: {e}", d.sender));
                    return;
                }
                if !already {
                    self.schedule(FollowUp::Admit { channel: d.channel.clone(), joiner: d.sender.clone(), key_package: kp });
                }
            }
            None => self.emit_error(
                Some(&d.channel),
                "SKYTALE_INVITE_INVALID",
                format!("join request from {} does not open with the invite (wrong secret or replayed for another identity)", d.sender),
            ),
        }
    }

    /// Re-reads from the keystore whether this agent is a member of `channel` and updates the
    /// in-memory list behind [`Client::member_channels`].
    fn note_membership(&self, channel: &str) {
        let member = self.agent.is_member(channel).unwrap_or(false);
        let mut set = match self.member_channels.lock() {
            Ok(s) => s,
            Err(p) => p.into_inner(),
        };
        if member {
            set.insert(channel.to_string());
        } else {
            set.remove(channel);
        }
    }

    /// Records that this agent's leaf in `channel` was just refreshed (created, joined, rotated).
    fn mark_self_updated(&self, channel: &str) {
        if let Err(e) = self.agent.kv_put(&self_update_key(channel), &now_secs().to_be_bytes()) {
            tracing::debug!(code = e.code(), "recording the self-update time failed");
        }
    }

    /// Whether this agent's leaf in `channel` is older than [`SELF_UPDATE_INTERVAL`].
    fn self_update_due(&self, channel: &str) -> bool {
        let last = self
            .agent
            .kv_get(&self_update_key(channel))
            .ok()
            .flatten()
            .and_then(|b| <[u8; 8]>::try_from(b.as_slice()).ok())
            .map(u64::from_be_bytes)
            .unwrap_or(0);
        now_secs().saturating_sub(last) >= SELF_UPDATE_INTERVAL.as_secs()
    }

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

    /// Applies delivered items of one channel, in relay order; the channel lock must be held.
    /// Runs of MLS items are processed in one keystore transaction each (one fsync per run).
    fn apply_run_locked(&self, channel: &str, ds: &[Deliver]) {
        let last = match self.agent.last_seq(channel) {
            Ok(s) => s,
            Err(_) => return, // not our channel (anymore)
        };
        let mut run: Vec<&Deliver> = Vec::new();
        for d in ds.iter().filter(|d| d.seq > last && d.channel == channel) {
            if d.kind == Kind::JoinRequest as i32 {
                self.process_run(channel, &run);
                run.clear();
                self.handle_join_request(d);
            } else {
                run.push(d);
            }
        }
        self.process_run(channel, &run);
    }

    fn process_run(&self, channel: &str, run: &[&Deliver]) {
        if run.is_empty() {
            return;
        }
        let items: Vec<(Vec<u8>, Delivery)> = run.iter().map(|d| (d.payload.clone(), delivery_of(d))).collect();
        match self.agent.process_delivered_batch(channel, &items) {
            Ok(results) => {
                for (d, res) in run.iter().zip(results) {
                    self.after_processed(d, res);
                }
            }
            Err(e) => self.emit_error(Some(channel), e.code(), format!("processing {} items failed: {e}", run.len())),
        }
    }

    /// Follow-up of one processed item (events, control messages, invite checks).
    fn after_processed(&self, d: &Deliver, res: skytale_core::Result<Incoming>) {
        let agent = &self.agent;
        match res {
            Ok(Incoming::Proposal { .. }) => {}
            Ok(Incoming::Message { data, sender, .. }) if data.first() == Some(&ENVELOPE_CONTROL) => {
                let _ = agent.inbox_remove(&d.channel, d.seq);
                self.handle_control(&d.channel, &sender, &data[1..]);
            }
            Ok(Incoming::Commit { external, authenticated_data, sender, self_removed, added, removed, .. }) => {
                if !added.is_empty() || !removed.is_empty() {
                    self.emit(ClientEvent::MembersChanged {
                        channel: d.channel.clone(),
                        added,
                        removed,
                        by: sender.clone(),
                    });
                }
                if external {
                    let from_epoch = d.epoch;
                    // Judge only with an invite we hold; a member that does not know the named
                    // invite leaves the verdict to those that do (they process this commit too).
                    let valid = match InviteToken::external_join_id(&authenticated_data) {
                        None => false,
                        Some(id) => match self.invites_of(&d.channel).into_iter().find(|(t, _)| t.id == id) {
                            Some((t, _)) => t.verify_external_join(&sender, from_epoch, &authenticated_data),
                            None => true,
                        },
                    };
                    if !valid {
                        self.emit_error(
                            Some(&d.channel),
                            "SKYTALE_INVITE_INVALID",
                            format!("{sender} joined without a valid invite proof; removing it"),
                        );
                        self.schedule(FollowUp::Remove { channel: d.channel.clone(), identity: sender.clone() });
                    }
                }
                if !self_removed {
                    self.schedule(FollowUp::RefreshInvites { channel: d.channel.clone() });
                } else {
                    self.note_membership(&d.channel);
                }
                self.slot(&d.channel).notify.notify_waiters();
            }
            Ok(_) => self.slot(&d.channel).notify.notify_waiters(),
            Err(e) => {
                // The item was recorded as skipped (it can never be processed); say so. A
                // rejected commit still consumed its relay slot: every member skips it alike.
                if e.code() != "SKYTALE_REPLAY" {
                    let what = if d.kind == Kind::Commit as i32 { "commit" } else { "item" };
                    self.emit_error(
                        Some(&d.channel),
                        e.code(),
                        format!("{what} {} from {} refused: {e}", d.seq, d.sender),
                    );
                }
            }
        }
    }

    /// Fetches and applies everything after the channel's last seq; the channel lock must be held.
    async fn catch_up_locked(&self, conn: &RelayConnection, channel: &str) -> Result<()> {
        loop {
            let after = self.agent.last_seq(channel)?;
            let (items, done) = conn.fetch(channel, after, 0).await?;
            self.apply_run_locked(channel, &items);
            if !done.more {
                if done.last_seq > after {
                    let _ = self.agent.set_last_seq(channel, done.last_seq);
                }
                // Caught up: if nothing arrived meanwhile, the relay's epoch is ours (this fixes
                // a joiner whose Welcome did not say it).
                if let Ok(info) = conn.channel_state(channel).await {
                    if info.last_seq == self.agent.last_seq(channel)? {
                        self.agent.set_relay_epoch(channel, info.epoch)?;
                    }
                }
                return Ok(());
            }
        }
    }

    /// Applies pushed deliveries of one channel (a burst that arrived together).
    async fn handle_delivers(&self, channel: &str, ds: &[Deliver]) {
        let slot = self.slot(channel);
        let _guard = slot.lock.lock().await;
        self.apply_run_locked(channel, ds);
    }

    /// Handles one pushed frame other than a burst of deliveries.
    async fn handle_push(&self, conn: &RelayConnection, f: Frame) {
        match f.body {
            Some(Body::Deliver(d)) => {
                let channel = d.channel.clone();
                self.handle_delivers(&channel, std::slice::from_ref(&d)).await
            }
            Some(Body::Welcome(w)) => self.handle_welcome(conn, w).await,
            Some(Body::Error(e)) => self.emit_error(None, &e.code, e.message),
            _ => {}
        }
    }

    async fn handle_welcome(&self, conn: &RelayConnection, w: Welcome) {
        match self.agent.join_channel_from(&w.payload) {
            Ok((name, adder)) => {
                let position = self.agent.set_last_seq(&name, w.commit_seq).and_then(|()| {
                    if w.commit_epoch > 0 {
                        self.agent.set_relay_epoch(&name, w.commit_epoch)
                    } else {
                        Ok(())
                    }
                });
                if let Err(e) = position {
                    // Resuming from an older position only re-fetches items (skipped, not lost).
                    self.emit_error(Some(&name), e.code(), format!("recording the join position failed: {e}"));
                }
                self.slot(&name);
                self.note_membership(&name);
                self.mark_self_updated(&name);
                if let Err(e) = conn.subscribe(&name, w.commit_seq).await {
                    self.emit_error(Some(&name), e.code(), format!("subscribe after join: {e}"));
                }
                // Who added us, as MLS authenticates it (the relay's sender field is not trusted).
                self.emit(ClientEvent::Joined { channel: name, by: adder });
            }
            Err(CoreError::ChannelExists(name)) => {
                // A Welcome we already joined from (redelivered after a crash) is fine; any other
                // Welcome into a name we hold is a look-alike group: refused, and said so.
                let redelivered = self.agent.last_seq(&name).map(|s| s >= w.commit_seq).unwrap_or(false);
                if !redelivered {
                    self.emit_error(
                        Some(&name),
                        "SKYTALE_CHANNEL_EXISTS",
                        format!("refused a Welcome into {name}: this agent is already in a channel of that name"),
                    );
                }
            }
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
            let relay_epoch = self.send_epoch(channel)?;
            let out = make(&self.agent, channel)?;
            let msg = Commit {
                channel: channel.to_string(),
                client_msg_id: random_id(),
                epoch: relay_epoch,
                payload: out.commit.clone(),
                welcome: match (&recipients, &out.welcome) {
                    (Some(r), Some(w)) => Some(WelcomeOut { recipients: r.clone(), payload: w.clone() }),
                    _ => None,
                },
            };
            // Remember what is in flight, so a restart can resend it (same client_msg_id: the
            // relay answers with the original Ack if it archived it) instead of forking.
            self.agent.kv_put(&pending_commit_key(channel), &encode_commit(&msg))?;
            loop {
                match conn.commit(msg.clone()).await {
                    Ok(ack) => {
                        self.agent.merge_pending_commit(channel)?;
                        self.agent.set_relay_epoch(channel, ack.epoch)?;
                        if out.added.is_empty() {
                            // Removes and rotations carry an update path: our leaf is fresh.
                            self.mark_self_updated(channel);
                        } else {
                            self.schedule(FollowUp::SelfUpdate { channel: channel.to_string() });
                        }
                        let _ = self.agent.kv_delete(&pending_commit_key(channel));
                        self.schedule(FollowUp::RefreshInvites { channel: channel.to_string() });
                        if !out.added.is_empty() || !out.removed.is_empty() {
                            self.emit(ClientEvent::MembersChanged {
                                channel: channel.to_string(),
                                added: out.added.clone(),
                                removed: out.removed.clone(),
                                by: self.agent.identity().to_string(),
                            });
                        }
                        return Ok(out);
                    }
                    Err(ProtoError::WrongEpoch { .. }) => {
                        self.agent.clear_pending_commit(channel)?;
                        let _ = self.agent.kv_delete(&pending_commit_key(channel));
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
                                // Closed while in flight: keep the pending commit and its record;
                                // the next start resends it and merges or discards it.
                                return Err(err);
                            }
                        };
                    }
                    Err(e) => {
                        self.agent.clear_pending_commit(channel)?;
                        let _ = self.agent.kv_delete(&pending_commit_key(channel));
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
                let epoch = self.send_epoch(&item.channel)?;
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

/// Most sends written to the relay before waiting for their acks.
const SEND_WINDOW: usize = 64;

async fn outbox_loop(shared: Arc<Shared>) {
    let mut closed = shared.closed.subscribe();
    loop {
        if *closed.borrow() {
            return;
        }
        let batch: Vec<OutItem> = match shared.outbox.lock() {
            Ok(mut o) => {
                let n = o.len().min(SEND_WINDOW);
                o.drain(..n).collect()
            }
            Err(_) => Vec::new(),
        };
        if batch.is_empty() {
            tokio::select! {
                _ = shared.outbox_notify.notified() => {}
                _ = closed.changed() => {}
                _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            }
            continue;
        }
        let results = shared.send_pipelined(&batch).await;
        for (item, res) in batch.into_iter().zip(results) {
            // Anything the fast path could not settle goes through the careful one-by-one path
            // (same client_msg_id: the relay drops duplicates), in order.
            let res = match res {
                Some(r) => r,
                None => shared.deliver_one(&item).await,
            };
            let _ = item.done.send(res);
        }
    }
}

impl Shared {
    /// Fast path: encrypts the items in order, writes all their Sends, then collects the Acks
    /// (frames go out in order: the writes are polled in order and the stream lock is FIFO).
    /// Returns `Some(result)` for items settled here, `None` for those to retry one by one.
    async fn send_pipelined(&self, batch: &[OutItem]) -> Vec<Option<Result<u64>>> {
        let Some(conn) = self.conn.borrow().clone() else {
            return batch.iter().map(|_| None).collect();
        };
        // Encrypt each run of same-channel items in one keystore transaction.
        let mut prepared: Vec<Option<(u64, Vec<u8>)>> = Vec::with_capacity(batch.len());
        let mut start = 0;
        while start < batch.len() {
            let channel = &batch[start].channel;
            let end = start + batch[start..].iter().take_while(|i| &i.channel == channel).count();
            let slot = self.slot(channel);
            let _guard = slot.lock.lock().await;
            let plaintexts: Vec<&[u8]> = batch[start..end].iter().map(|i| i.data.as_slice()).collect();
            match self
                .send_epoch(channel)
                .and_then(|epoch| Ok((epoch, self.agent.encrypt_batch(channel, &plaintexts)?)))
            {
                Ok((epoch, wires)) => prepared.extend(wires.into_iter().map(|w| Some((epoch, w)))),
                // Settle these one by one: the careful path reports each item's own error.
                Err(_) => prepared.extend((start..end).map(|_| None)),
            }
            start = end;
        }
        let sends = batch.iter().zip(prepared.iter()).map(|(item, enc)| {
            let conn = conn.clone();
            async move {
                match enc {
                    Some((epoch, payload)) => Some(
                        conn.send(&item.channel, &item.client_msg_id, Kind::Application, *epoch, payload.clone()).await,
                    ),
                    None => None,
                }
            }
        });
        let replies = futures::future::join_all(sends).await;
        replies
            .into_iter()
            .map(|reply| match reply {
                Some(Ok(ack)) => Some(Ok(ack.seq)),
                _ => None,
            })
            .collect()
    }
}

async fn followup_loop(shared: Arc<Shared>) {
    let mut closed = shared.closed.subscribe();
    loop {
        if *closed.borrow() {
            return;
        }
        let next = shared.followups.lock().ok().and_then(|mut q| q.pop_front());
        let Some(job) = next else {
            tokio::select! {
                _ = shared.followup_notify.notified() => {}
                _ = closed.changed() => {}
                _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            }
            continue;
        };
        match job {
            FollowUp::Admit { channel, joiner, key_package } => {
                let kp = key_package.clone();
                let res = shared
                    .commit_op(&channel, Some(vec![joiner.clone()]), move |agent, name| {
                        agent.add_members(name, std::slice::from_ref(&kp), CommitMode::Stage)
                    })
                    .await;
                match res {
                    Ok(_) => tracing::debug!(channel, "admitted a joiner"),
                    Err(e)
                        if matches!(
                            e.code(),
                            "SKYTALE_INVALID_ARGUMENT" | "SKYTALE_KEY_PACKAGE_USED" | "SKYTALE_NOT_A_MEMBER"
                        ) => {}
                    Err(e) => shared.emit_error(Some(&channel), e.code(), format!("admitting {joiner}: {e}")),
                }
            }
            FollowUp::Remove { channel, identity } => {
                let ids = vec![identity.clone()];
                let still = shared.agent.members(&channel).map(|m| m.contains(&identity)).unwrap_or(false);
                if still {
                    let res = shared
                        .commit_op(&channel, None, move |agent, name| {
                            agent.remove_members(name, &ids, CommitMode::Stage)
                        })
                        .await;
                    if let Err(e) = res {
                        if !matches!(e.code(), "SKYTALE_MEMBER_NOT_FOUND" | "SKYTALE_NOT_A_MEMBER") {
                            shared.emit_error(Some(&channel), e.code(), format!("removing {identity}: {e}"));
                        }
                    }
                }
            }
            FollowUp::SelfUpdate { channel } => {
                if shared.agent.is_member(&channel).unwrap_or(false) && shared.self_update_due(&channel) {
                    let res =
                        shared.commit_op(&channel, None, |agent, name| agent.rotate_key(name, CommitMode::Stage)).await;
                    if let Err(e) = res {
                        shared.emit_error(Some(&channel), e.code(), format!("scheduled key update: {e}"));
                    }
                }
            }
            FollowUp::RefreshInvites { channel } => {
                let invites = shared.invites_of(&channel);
                if invites.is_empty() || !shared.agent.is_member(&channel).unwrap_or(false) {
                    continue;
                }
                let Ok(conn) = shared.live_conn().await else { continue };
                let Ok(gi) = shared.group_info_with_epoch(&channel) else { continue };
                for (invite, _) in invites {
                    if let Ok(sealed) = invite.seal_group_info(&gi) {
                        if let Err(e) = conn.update_invite(&invite.id_hex(), sealed).await {
                            tracing::debug!(code = e.code(), "refreshing an invite failed");
                        }
                    }
                }
            }
        }
    }
}

async fn connect_once(shared: &Arc<Shared>) -> Result<(Arc<RelayConnection>, PushReceiver, u64)> {
    // The API server vouches for this agent: register its key (renews the credential), pin the
    // org's issuer keys, read revocations. Then a token bound to this identity.
    if let Err(e) = shared.tokens.enroll(&shared.agent).await {
        // An API server outage must not keep an enrolled agent off the relay: its credential and
        // pinned issuer keys are in the keystore, and a cached token may still be valid.
        let enrolled = shared.agent.credential()?.is_some() && shared.agent.trust_anchors()?.is_some();
        if !(enrolled && e.code() == "SKYTALE_API_UNREACHABLE") {
            return Err(e);
        }
        tracing::warn!(code = e.code(), "API server unreachable; reconnecting with the stored credential");
    }
    let token = shared.tokens.get().await?;
    let addr_str = shared.config.relay.clone().or(token.relay.clone()).ok_or(ClientError::NoRelay)?;
    let addr: RelayAddr = addr_str.parse()?;
    if let Ok(mut r) = shared.relay_addr.lock() {
        *r = addr_str.clone();
    }
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
        if shared.agent.has_pending_commit(&name).unwrap_or(false) {
            recover_pending_commit(shared, &conn, &name).await?;
        }
        shared.note_membership(&name);
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

/// A commit of this agent was pending when the process stopped: resend it with its original
/// client_msg_id. The relay answers the original Ack if it had archived it (merge), accepts it
/// now (merge), or refuses it because the epoch moved on (discard). Never sent: discard.
async fn recover_pending_commit(shared: &Arc<Shared>, conn: &RelayConnection, channel: &str) -> Result<()> {
    let key = pending_commit_key(channel);
    let record = shared.agent.kv_get(&key)?.and_then(|b| decode_commit(&b));
    match record {
        Some(commit) => match conn.commit(commit).await {
            Ok(ack) => {
                shared.agent.merge_pending_commit(channel)?;
                shared.agent.set_relay_epoch(channel, ack.epoch)?;
                shared.schedule(FollowUp::RefreshInvites { channel: channel.to_string() });
            }
            Err(ProtoError::WrongEpoch { .. }) => shared.agent.clear_pending_commit(channel)?,
            Err(e) if is_transport(&e) => return Err(e.into()),
            Err(e) => {
                shared.emit_error(Some(channel), e.code(), format!("pending commit refused: {e}"));
                shared.agent.clear_pending_commit(channel)?;
            }
        },
        None => shared.agent.clear_pending_commit(channel)?,
    }
    shared.agent.kv_delete(&key)?;
    Ok(())
}

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
                let refresh_in =
                    Duration::from_secs(expires_at.saturating_sub(now_secs())).saturating_sub(REFRESH_MARGIN);
                let mut refresh = Box::pin(tokio::time::sleep(refresh_in.max(Duration::from_secs(5))));
                loop {
                    tokio::select! {
                        frame = pushes.recv() => match frame {
                            Some(f) => match f.body {
                                Some(Body::Deliver(d)) => {
                                    // Take the rest of the burst: consecutive deliveries of the
                                    // same channel are applied in one keystore transaction.
                                    let channel = d.channel.clone();
                                    let mut burst = vec![d];
                                    let mut held = None;
                                    while burst.len() < 256 {
                                        match pushes.try_recv() {
                                            Some(Frame { body: Some(Body::Deliver(n)), .. }) if n.channel == channel => burst.push(n),
                                            Some(other) => { held = Some(other); break; }
                                            None => break,
                                        }
                                    }
                                    shared.handle_delivers(&channel, &burst).await;
                                    if let Some(f) = held {
                                        shared.handle_push(&conn, f).await;
                                    }
                                }
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

/// Where a delivered item sits in the relay's order (a commit takes slot `epoch`).
fn delivery_of(d: &Deliver) -> Delivery {
    let relay_epoch = if d.kind == Kind::Commit as i32 { d.epoch + 1 } else { d.epoch };
    Delivery { seq: d.seq, relay_epoch, at_secs: d.timestamp_ms / 1000 }
}

/// Splits `relay epoch (8 bytes, big endian) ‖ GroupInfo` as sealed into invites.
fn split_epoch(bytes: &[u8]) -> Option<(u64, Vec<u8>)> {
    if bytes.len() < 9 {
        return None;
    }
    let (e, gi) = bytes.split_at(8);
    Some((u64::from_be_bytes(e.try_into().ok()?), gi.to_vec()))
}

fn now_secs() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}
