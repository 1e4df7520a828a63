//! The `Client` and `ClientChannel` classes: an agent connected to the relay.

use std::sync::Arc;
use std::time::Duration;

use napi::bindgen_prelude::*;
use napi::threadsafe_function::ThreadsafeFunctionCallMode;
use napi::Status;
use napi_derive::napi;
use skytale_client::{ChannelEvent, Client as CoreClient, ClientConfig, ClientError, ClientEvent};
use std::result::Result;
use zeroize::Zeroizing;

use crate::agent::Agent;
use crate::errors::{js_error_code, js_error_code_at};
use crate::types::CommitResult;

/// Options of `Client.connect`.
#[napi(object)]
pub struct ClientConnectOptions {
    /// API server base URL, e.g. `http://127.0.0.1:8080`.
    pub api_url: String,
    /// API key (`sk_live_…`).
    pub api_key: String,
    /// Relay address `iroh://<endpoint-id>@host:port`, or several comma-separated (the nodes of a
    /// relay cluster: the client moves to the next when one fails); default: the ones the API
    /// server publishes.
    pub relay: Option<String>,
    /// Which Welcomes to join on: `'org'` (default: invites this agent used, and certified
    /// members of its org), `'none'` (only invites this agent used) or `'any'`.
    #[napi(ts_type = "'any' | 'org' | 'none'")]
    pub accept_welcomes: Option<String>,
    /// Adds are committed without an MLS update path (cheap for large groups); an add made
    /// when this agent's own key in the channel is older than this many seconds is followed
    /// by a self-update (a key rotation), which restores post-compromise security. Default
    /// 600, at most 86,400; 0 = after every add.
    pub self_update_interval_secs: Option<u32>,
    /// How long `connect` waits in all when the API server rate-limits it (HTTP 429: many
    /// agents starting from one address at once), as long as the server asks each time, before
    /// it rejects with `SKYTALE_RATE_LIMITED`. Default 60; 0 = reject at once.
    pub rate_limit_wait_secs: Option<u32>,
}

/// A delivered channel message (or, with `kind: 'commit'`, a membership change).
#[napi(object)]
pub struct ChannelMessage {
    /// `message` or `commit`.
    #[napi(ts_type = "'message' | 'commit'")]
    pub kind: String,
    /// Relay sequence number (increasing per channel).
    pub seq: i64,
    /// Sender identity (authenticated by MLS).
    pub sender: String,
    /// The plaintext (`kind: 'message'`).
    pub data: Option<Uint8Array>,
    /// Epoch (message: sent in; commit: new epoch).
    pub epoch: i64,
    /// Added identities (`kind: 'commit'`).
    pub added: Option<Vec<String>>,
    /// Removed identities (`kind: 'commit'`).
    pub removed: Option<Vec<String>>,
    /// True when this agent was removed (`kind: 'commit'`).
    pub self_removed: Option<bool>,
}

fn to_js(ev: ChannelEvent) -> ChannelMessage {
    match ev {
        ChannelEvent::Message { seq, sender, data, epoch } => ChannelMessage {
            kind: "message".into(),
            seq: seq as i64,
            sender,
            data: Some(Uint8Array::from(data)),
            epoch: epoch as i64,
            added: None,
            removed: None,
            self_removed: None,
        },
        ChannelEvent::Commit { seq, sender, epoch, added, removed, self_removed } => ChannelMessage {
            kind: "commit".into(),
            seq: seq as i64,
            sender,
            data: None,
            epoch: epoch as i64,
            added: Some(added),
            removed: Some(removed),
            self_removed: Some(self_removed),
        },
    }
}

/// Runs `fut` on the napi tokio runtime; rejects with an `Error` carrying the stable `code`.
pub(crate) fn run<'env, T, V, F>(env: &'env Env, fut: F, convert: fn(T) -> V) -> napi::Result<PromiseRaw<'env, V>>
where
    T: Send + 'static,
    V: ToNapiValue + 'static,
    F: std::future::Future<Output = Result<T, ClientError>> + Send + 'static,
{
    env.spawn_future_with_callback(async move { Ok(fut.await) }, move |env, res| match res {
        Ok(v) => Ok(convert(v)),
        Err(e) => Err(js_error_code(env, e.code(), &e.to_string())),
    })
}

/// Runs keystore work on the blocking pool (never on the JS thread, never on a runtime worker).
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ClientError> + Send + 'static,
) -> Result<T, ClientError> {
    tokio::task::spawn_blocking(f).await.map_err(|_| ClientError::Closed)?
}

/// A live push stream (`ClientChannel.subscribe`, `Client.onEvent`); `close()` stops it.
#[napi]
pub struct Subscription {
    stop: Arc<tokio::sync::Notify>,
}

impl Subscription {
    fn new() -> Subscription {
        Subscription { stop: Arc::new(tokio::sync::Notify::new()) }
    }
}

#[napi]
impl Subscription {
    /// Stops the stream: no callback runs after the current one.
    #[napi]
    pub fn close(&self) {
        self.stop.notify_one();
    }
}

/// A client-wide event (see `Client.onEvent`).
#[napi(object)]
pub struct ClientEventInfo {
    /// What happened.
    #[napi(ts_type = "'connected' | 'disconnected' | 'joined' | 'members' | 'fork' | 'healed' | 'error'")]
    pub kind: String,
    /// Identities added (`members`).
    pub added: Option<Vec<String>>,
    /// Identities removed (`members`).
    pub removed: Option<Vec<String>>,
    /// Channel concerned (joined, some errors).
    pub channel: Option<String>,
    /// Stable code (error, disconnected).
    pub code: Option<String>,
    /// Detail (error, fork) or who added this agent (joined).
    pub message: Option<String>,
    /// This agent's epoch (`fork`) or the new epoch (`healed`).
    pub local_epoch: Option<i64>,
    /// The epoch the other side or the relay's order is at (`fork`).
    pub remote_epoch: Option<i64>,
}

/// Counters of the fork machinery of one channel (see `ClientChannel.stats`).
#[napi(object)]
pub struct ChannelStatsInfo {
    /// Items skipped as unprocessable (garbage, replays, another branch's messages, items
    /// from before a resync); persisted.
    pub skipped: i64,
    /// Forks reported since this client connected.
    pub forks: i64,
    /// Resyncs completed since this client connected.
    pub heals: i64,
}

fn event_to_js(ev: ClientEvent) -> ClientEventInfo {
    match ev {
        ClientEvent::Connected => ClientEventInfo {
            kind: "connected".into(),
            channel: None,
            code: None,
            message: None,
            added: None,
            removed: None,
            local_epoch: None,
            remote_epoch: None,
        },
        ClientEvent::Disconnected { code } => ClientEventInfo {
            kind: "disconnected".into(),
            channel: None,
            code,
            message: None,
            added: None,
            removed: None,
            local_epoch: None,
            remote_epoch: None,
        },
        ClientEvent::Joined { channel, by } => ClientEventInfo {
            kind: "joined".into(),
            channel: Some(channel),
            code: None,
            message: Some(by),
            added: None,
            removed: None,
            local_epoch: None,
            remote_epoch: None,
        },
        ClientEvent::MembersChanged { channel, added, removed, by } => ClientEventInfo {
            kind: "members".into(),
            channel: Some(channel),
            code: None,
            message: Some(by),
            added: Some(added),
            removed: Some(removed),
            local_epoch: None,
            remote_epoch: None,
        },
        ClientEvent::Fork { channel, local_epoch, remote_epoch, reason } => ClientEventInfo {
            kind: "fork".into(),
            channel: Some(channel),
            code: Some("SKYTALE_FORK_DETECTED".into()),
            message: Some(reason),
            added: None,
            removed: None,
            local_epoch: Some(local_epoch as i64),
            remote_epoch: Some(remote_epoch as i64),
        },
        ClientEvent::Healed { channel, epoch } => ClientEventInfo {
            kind: "healed".into(),
            channel: Some(channel),
            code: None,
            message: None,
            added: None,
            removed: None,
            local_epoch: Some(epoch as i64),
            remote_epoch: None,
        },
        ClientEvent::Error { channel, code, message } => ClientEventInfo {
            kind: "error".into(),
            channel,
            code: Some(code),
            message: Some(message),
            added: None,
            removed: None,
            local_epoch: None,
            remote_epoch: None,
        },
    }
}

/// An agent connected to a relay: tokens, reconnects and background processing are handled.
#[napi]
pub struct Client {
    pub(crate) inner: CoreClient,
    /// The receiver behind `nextEvent`, made at its first call (the first consumer, `onEvent`
    /// or `nextEvent`, also gets what was emitted while `connect` ran).
    events: Arc<tokio::sync::Mutex<Option<tokio::sync::broadcast::Receiver<ClientEvent>>>>,
}

#[napi]
impl Client {
    /// Connects `agent` to the relay (token from the API server with `apiKey`). Resolves once
    /// authenticated and subscribed to all of the agent's channels; rejects fast on a bad key
    /// (`SKYTALE_AUTH_KEY_INVALID`) or an unreachable relay. When the API server rate-limits it,
    /// waits as the server asks, up to `rateLimitWaitSecs` in all.
    #[napi(ts_return_type = "Promise<Client>")]
    pub fn connect<'env>(
        env: &'env Env,
        agent: &Agent,
        options: ClientConnectOptions,
    ) -> napi::Result<PromiseRaw<'env, Client>> {
        let core = agent.core();
        let mut config = ClientConfig::new(options.api_url, Zeroizing::new(options.api_key), options.relay);
        if let Some(mode) = options.accept_welcomes.as_deref() {
            config.accept_welcomes = skytale_client::AcceptWelcomes::parse(mode)
                .map_err(|e| crate::errors::js_error_code(env, e.code(), &e.to_string()))?;
        }
        if let Some(secs) = options.self_update_interval_secs {
            config.self_update_interval = std::time::Duration::from_secs(u64::from(secs));
        }
        if let Some(secs) = options.rate_limit_wait_secs {
            config.rate_limit_wait = std::time::Duration::from_secs(u64::from(secs));
        }
        run(
            env,
            async move {
                let core = core?;
                CoreClient::connect(core, config).await
            },
            |inner| Client { inner, events: Arc::new(tokio::sync::Mutex::new(None)) },
        )
    }

    /// Creates a channel (`org/namespace/service`) on the relay and subscribes to it. This agent
    /// is its first admin; `options.policy` sets the least role for each change (default: admin
    /// for add, remove, invite and policy). Rejects with `SKYTALE_CHANNEL_EXISTS` if someone
    /// else created that name first.
    #[napi(ts_return_type = "Promise<ClientChannel>")]
    pub fn create_channel<'env>(
        &self,
        env: &'env Env,
        name: String,
        options: Option<crate::policy::CreateChannelOptions>,
    ) -> napi::Result<PromiseRaw<'env, ClientChannel>> {
        let rules = crate::policy::rules_of(env, options)?;
        let inner = self.inner.clone();
        run(
            env,
            async move { inner.create_channel_with_rules(&name, rules).await.map(|_| (inner, name)) },
            |(inner, name)| ClientChannel { inner, name },
        )
    }

    /// A handle on a channel this agent is a member of. Throws `SKYTALE_CHANNEL_NOT_FOUND`.
    #[napi]
    pub fn channel(&self, env: Env, name: String) -> napi::Result<ClientChannel> {
        // Never touches the keystore on the JS thread: a channel this agent is not in fails on
        // first use with SKYTALE_CHANNEL_NOT_FOUND.
        if let Err(e) = skytale_core::validate_channel_name(&name) {
            return Err(js_error_code(&env, e.code(), &e.to_string()));
        }
        Ok(ClientChannel { inner: self.inner.clone(), name })
    }

    /// Adds `identity` to `channel`: claims one of its key packages from the relay, commits
    /// through the relay (retrying on a lost race) and queues the Welcome for it.
    #[napi(ts_return_type = "Promise<CommitResult>")]
    pub fn add_member<'env>(
        &self,
        env: &'env Env,
        channel: String,
        identity: String,
    ) -> napi::Result<PromiseRaw<'env, CommitResult>> {
        let inner = self.inner.clone();
        run(env, async move { inner.add_member(&channel, &identity).await }, CommitResult::from)
    }

    /// Removes members of `channel` by identity.
    #[napi(ts_return_type = "Promise<CommitResult>")]
    pub fn remove_members<'env>(
        &self,
        env: &'env Env,
        channel: String,
        identities: Vec<String>,
    ) -> napi::Result<PromiseRaw<'env, CommitResult>> {
        let inner = self.inner.clone();
        run(env, async move { inner.remove_members(&channel, &identities).await }, CommitResult::from)
    }

    /// Rotates this agent's keys in `channel`.
    #[napi(ts_return_type = "Promise<CommitResult>")]
    pub fn rotate_key<'env>(&self, env: &'env Env, channel: String) -> napi::Result<PromiseRaw<'env, CommitResult>> {
        let inner = self.inner.clone();
        run(env, async move { inner.rotate_key(&channel).await }, CommitResult::from)
    }

    /// Waits until this agent has been added to `channel` (rejects with `SKYTALE_TIMEOUT`).
    #[napi(ts_return_type = "Promise<ClientChannel>")]
    pub fn wait_for_channel<'env>(
        &self,
        env: &'env Env,
        channel: String,
        timeout_ms: u32,
    ) -> napi::Result<PromiseRaw<'env, ClientChannel>> {
        let inner = self.inner.clone();
        run(
            env,
            async move {
                inner
                    .wait_for_channel(&channel, Duration::from_millis(timeout_ms as u64))
                    .await
                    .map(|_| (inner, channel))
            },
            |(inner, name)| ClientChannel { inner, name },
        )
    }

    /// Creates an invite token (`skt_inv_…`) for `channel`: at most `maxUses` joins, valid for
    /// `ttlSeconds`. Any online member admits the joiner; if none is online the joiner gets in
    /// by an external commit with a proof of the invite secret.
    #[napi(ts_return_type = "Promise<string>")]
    pub fn create_invite<'env>(
        &self,
        env: &'env Env,
        channel: String,
        max_uses: u32,
        ttl_seconds: u32,
    ) -> napi::Result<PromiseRaw<'env, String>> {
        let inner = self.inner.clone();
        run(
            env,
            async move {
                inner
                    .create_invite(&channel, max_uses, Duration::from_secs(ttl_seconds as u64))
                    .await
                    .map(|t| t.to_string())
            },
            |t| t,
        )
    }

    /// Joins `channel` with an invite token; rejects with `SKYTALE_INVITE_INVALID`,
    /// `SKYTALE_INVITE_EXPIRED`, `SKYTALE_INVITE_USED_UP`, `SKYTALE_INVITE_WRONG_CHANNEL`, or
    /// `SKYTALE_JOIN_TIMEOUT` after `timeoutMs`.
    #[napi(ts_return_type = "Promise<ClientChannel>")]
    pub fn join_with_token<'env>(
        &self,
        env: &'env Env,
        channel: String,
        token: String,
        timeout_ms: u32,
    ) -> napi::Result<PromiseRaw<'env, ClientChannel>> {
        let inner = self.inner.clone();
        let token = Zeroizing::new(token);
        run(
            env,
            async move {
                inner
                    .join_with_token(&channel, &token, Duration::from_millis(timeout_ms as u64))
                    .await
                    .map(|_| (inner, channel))
            },
            |(inner, name)| ClientChannel { inner, name },
        )
    }

    /// Joins by an external commit from a GroupInfo obtained out of band, without an invite
    /// proof: members remove such a joiner when they apply its commit. For tests.
    #[napi(ts_return_type = "Promise<string>")]
    pub fn join_by_group_info_unchecked<'env>(
        &self,
        env: &'env Env,
        group_info: Uint8Array,
    ) -> napi::Result<PromiseRaw<'env, String>> {
        let inner = self.inner.clone();
        let gi = group_info.to_vec();
        run(env, async move { inner.join_by_group_info_unchecked(&gi).await }, |n| n)
    }

    /// Leaves `channel`: asks the other members to remove this agent and forgets it locally.
    #[napi(ts_return_type = "Promise<void>")]
    pub fn leave<'env>(&self, env: &'env Env, channel: String) -> napi::Result<PromiseRaw<'env, ()>> {
        let inner = self.inner.clone();
        run(env, async move { inner.leave(&channel).await }, |v| v)
    }

    /// Names of the channels this agent is a member of.
    #[napi]
    pub fn channels(&self) -> Vec<String> {
        self.inner.member_channels()
    }

    /// Pushes every client-wide event (connected, disconnected, joined, members, fork, healed,
    /// error) to `onEvent` as it happens, until the returned subscription is closed. No polling.
    /// The first listener (of `onEvent` and `nextEvent`) also gets, first, the events emitted
    /// while `connect` ran (e.g. `SKYTALE_NOT_A_MEMBER` for a channel this agent was removed
    /// from while offline); later ones start when attached.
    #[napi(ts_args_type = "onEvent: (event: ClientEventInfo) => void")]
    pub fn on_event(&self, on_event: Function<ClientEventInfo, ()>) -> napi::Result<Subscription> {
        let tsfn = on_event.build_threadsafe_function().callee_handled::<false>().build()?;
        let mut rx = self.inner.events();
        let sub = Subscription::new();
        let stop = sub.stop.clone();
        let client = self.inner.clone();
        napi::bindgen_prelude::spawn(async move {
            let closed = client.closed();
            tokio::pin!(closed);
            loop {
                tokio::select! {
                    biased;
                    _ = stop.notified() => break,
                    r = rx.recv() => match r {
                        Ok(ev) => {
                            if tsfn.call(event_to_js(ev), ThreadsafeFunctionCallMode::NonBlocking) != Status::Ok {
                                break;
                            }
                        }
                        Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                        Err(_) => break,
                    },
                    // Queued events (e.g. the last error) are delivered first (biased).
                    _ = &mut closed => break,
                }
            }
        });
        Ok(sub)
    }

    /// The next client-wide event (connected, disconnected, joined, error), or `null` after
    /// `timeoutMs`. If called before any `onEvent`, it starts with the events emitted while
    /// `connect` ran.
    #[napi(ts_return_type = "Promise<ClientEventInfo | null>")]
    pub fn next_event<'env>(
        &self,
        env: &'env Env,
        timeout_ms: u32,
    ) -> napi::Result<PromiseRaw<'env, Option<ClientEventInfo>>> {
        let events = self.events.clone();
        let inner = self.inner.clone();
        run(
            env,
            async move {
                let mut guard = events.lock().await;
                let rx = guard.get_or_insert_with(|| inner.events());
                loop {
                    match tokio::time::timeout(Duration::from_millis(timeout_ms as u64), rx.recv()).await {
                        Ok(Ok(ev)) => return Ok(Some(ev)),
                        Ok(Err(tokio::sync::broadcast::error::RecvError::Lagged(_))) => continue,
                        Ok(Err(_)) | Err(_) => return Ok(None),
                    }
                }
            },
            |ev| ev.map(event_to_js),
        )
    }

    /// Whether the client currently has an authenticated relay connection.
    #[napi(getter)]
    pub fn connected(&self) -> bool {
        self.inner.is_connected()
    }

    /// Closes the connection; pending sends reject with `SKYTALE_CLIENT_CLOSED`.
    #[napi(ts_return_type = "Promise<void>")]
    pub fn close<'env>(&self, env: &'env Env) -> napi::Result<PromiseRaw<'env, ()>> {
        let inner = self.inner.clone();
        run(
            env,
            async move {
                inner.close().await;
                Ok(())
            },
            |v| v,
        )
    }
}

/// A channel of a connected client.
#[napi]
pub struct ClientChannel {
    inner: CoreClient,
    name: String,
}

#[napi]
impl ClientChannel {
    /// The channel name.
    #[napi(getter)]
    pub fn name(&self) -> String {
        self.name.clone()
    }

    /// Encrypts and sends `data`; resolves with the relay sequence number once archived.
    /// While disconnected the send waits and is delivered exactly once after reconnecting.
    #[napi(ts_return_type = "Promise<number>")]
    pub fn send<'env>(&self, env: &'env Env, data: Uint8Array) -> napi::Result<PromiseRaw<'env, i64>> {
        // Queue now, on the JS thread, so concurrent sends keep the order of the calls.
        skytale_client::probe::mark("send.call");
        let queued = self.inner.send_queued(&self.name, &data);
        run(
            env,
            async move {
                match queued {
                    Ok(fut) => fut.await,
                    Err(e) => Err(e),
                }
            },
            |s| s as i64,
        )
    }

    /// Sends several messages in one call: queued at once in this order (as that many `send()`
    /// calls would be, each exactly once), resolved with their sequence numbers when every one
    /// is archived. If one fails the promise rejects, once all are settled, with the first
    /// failure (`err.index` says which); the others are sent all the same.
    #[napi(ts_return_type = "Promise<number[]>")]
    pub fn send_many<'env>(&self, env: &'env Env, data: Vec<Uint8Array>) -> napi::Result<PromiseRaw<'env, Vec<i64>>> {
        // Queue now, on the JS thread, so the order is the order of the list and of the calls.
        let queued: Vec<_> = data.iter().map(|d| self.inner.send_queued(&self.name, d)).collect();
        env.spawn_future_with_callback(
            async move {
                let mut seqs = Vec::with_capacity(queued.len());
                let mut first_failure = None;
                for (i, q) in queued.into_iter().enumerate() {
                    let res = match q {
                        Ok(fut) => fut.await,
                        Err(e) => Err(e),
                    };
                    match res {
                        Ok(seq) => seqs.push(seq as i64),
                        Err(e) => {
                            first_failure.get_or_insert((i, e));
                        }
                    }
                }
                Ok(match first_failure {
                    None => Ok(seqs),
                    Some(f) => Err(f),
                })
            },
            |env, res| match res {
                Ok(seqs) => Ok(seqs),
                Err((i, e)) => Err(js_error_code_at(env, e.code(), &e.to_string(), i)),
            },
        )
    }

    /// The first message or membership change with `seq > afterSeq` (0 = the oldest not yet
    /// acknowledged), in relay order; `null` after `timeoutMs` (omitted = wait forever) or when
    /// the client closes. Events stay stored until `ack(seq)`, so none is lost if the process
    /// dies between receiving and handling one. `messages()` wraps this as an async iterator.
    #[napi(ts_return_type = "Promise<ChannelMessage | null>")]
    pub fn next_message<'env>(
        &self,
        env: &'env Env,
        after_seq: Option<i64>,
        timeout_ms: Option<u32>,
    ) -> napi::Result<PromiseRaw<'env, Option<ChannelMessage>>> {
        let (inner, name) = (self.inner.clone(), self.name.clone());
        let after = after_seq.unwrap_or(0).max(0) as u64;
        run(
            env,
            async move { inner.next_event(&name, after, timeout_ms.map(|t| Duration::from_millis(t as u64))).await },
            |ev| ev.map(to_js),
        )
    }

    /// Pushes every message and membership change with `seq > afterSeq` to `onItems`, in relay
    /// order and in batches (one crossing into JS per batch), as they arrive (no polling), until
    /// the returned subscription is closed. Items stay in the keystore inbox until `ack(seq)`,
    /// so a crash loses none.
    #[napi(ts_args_type = "afterSeq: number, onItems: (items: ChannelMessage[]) => void")]
    pub fn subscribe(&self, after_seq: i64, on_items: Function<Vec<ChannelMessage>, ()>) -> napi::Result<Subscription> {
        let tsfn = on_items.build_threadsafe_function().callee_handled::<false>().build()?;
        let (inner, name) = (self.inner.clone(), self.name.clone());
        let sub = Subscription::new();
        let stop = sub.stop.clone();
        let mut after = after_seq.max(0) as u64;
        // At most WINDOW batches handed to JS and not yet run: bursts reach the event loop in
        // slices, so it stays responsive however fast messages arrive.
        const WINDOW: usize = 2;
        const BATCH: u32 = 64;
        let credit = Arc::new((std::sync::atomic::AtomicUsize::new(0), tokio::sync::Notify::new()));
        napi::bindgen_prelude::spawn(async move {
            loop {
                while credit.0.load(std::sync::atomic::Ordering::Acquire) >= WINDOW {
                    let wait = credit.1.notified();
                    if credit.0.load(std::sync::atomic::Ordering::Acquire) < WINDOW {
                        break;
                    }
                    tokio::select! {
                        _ = stop.notified() => return,
                        _ = wait => {}
                    }
                }
                tokio::select! {
                    _ = stop.notified() => break,
                    evs = inner.next_events(&name, after, BATCH, None) => match evs {
                        Ok(evs) if !evs.is_empty() => {
                            if let Some(last) = evs.last() {
                                after = match last {
                                    ChannelEvent::Message { seq, .. } | ChannelEvent::Commit { seq, .. } => *seq,
                                };
                            }
                            credit.0.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
                            let c = credit.clone();
                            let items: Vec<ChannelMessage> = evs.into_iter().map(to_js).collect();
                            skytale_client::probe::mark_n("recv.emit", items.len());
                            let status = tsfn.call_with_return_value(items, ThreadsafeFunctionCallMode::NonBlocking, move |_, _| {
                                c.0.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
                                c.1.notify_one();
                                Ok(())
                            });
                            if status != Status::Ok {
                                break;
                            }
                        }
                        _ => break,
                    }
                }
            }
        });
        Ok(sub)
    }

    /// Acknowledges the events up to and including `seq`: they are deleted from the inbox.
    #[napi(ts_return_type = "Promise<void>")]
    pub fn ack<'env>(&self, env: &'env Env, seq: i64) -> napi::Result<PromiseRaw<'env, ()>> {
        let (inner, name) = (self.inner.clone(), self.name.clone());
        // One small keystore write, done on the runtime's worker (no second hop to the
        // blocking pool).
        run(env, async move { inner.ack_events(&name, seq.max(0) as u64) }, |v| v)
    }

    /// Notes that the events up to and including `seq` are handled, without waiting for a
    /// keystore write (synchronous and cheap): they are deleted from the inbox with the
    /// channel's next processing transaction, within 20 ms otherwise, and when the client
    /// closes. A crash before that brings them back after a restart (never loses one); `ack`
    /// writes at once. `messages()` uses this for every item and `ack` when it ends.
    #[napi]
    pub fn ack_later(&self, env: &Env, seq: i64) -> napi::Result<()> {
        self.inner
            .ack_events_later(&self.name, seq.max(0) as u64)
            .map_err(|e| js_error_code(env, e.code(), &e.to_string()))
    }

    /// The channel's current MLS epoch.
    #[napi(ts_return_type = "Promise<number>")]
    pub fn epoch<'env>(&self, env: &'env Env) -> napi::Result<PromiseRaw<'env, i64>> {
        let (agent, name) = (self.inner.agent().clone(), self.name.clone());
        run(env, blocking(move || Ok(agent.epoch(&name)?)), |e| e as i64)
    }

    /// Identities of the current members.
    #[napi(ts_return_type = "Promise<string[]>")]
    pub fn members<'env>(&self, env: &'env Env) -> napi::Result<PromiseRaw<'env, Vec<String>>> {
        let (agent, name) = (self.inner.agent().clone(), self.name.clone());
        run(env, blocking(move || Ok(agent.members(&name)?)), |v| v)
    }

    /// Each member's identity → fingerprint of its signature key, for out-of-band checks
    /// (`skytale members --fingerprints`).
    #[napi(ts_return_type = "Promise<Record<string, string>>")]
    pub fn member_fingerprints<'env>(
        &self,
        env: &'env Env,
    ) -> napi::Result<PromiseRaw<'env, std::collections::HashMap<String, String>>> {
        let (agent, name) = (self.inner.agent().clone(), self.name.clone());
        run(env, blocking(move || Ok(agent.member_fingerprints(&name)?)), |v| v.into_iter().collect())
    }

    /// The current epoch authenticator (RFC 9420): the same for every member in the same
    /// state of the epoch, different across a fork. For comparison out of band.
    #[napi(ts_return_type = "Promise<Uint8Array>")]
    pub fn epoch_authenticator<'env>(&self, env: &'env Env) -> napi::Result<PromiseRaw<'env, Uint8Array>> {
        let (inner, name) = (self.inner.clone(), self.name.clone());
        run(env, blocking(move || inner.epoch_authenticator(&name)), Uint8Array::from)
    }

    /// Counters of fork detection for this channel: skipped items, forks, resyncs.
    #[napi(ts_return_type = "Promise<ChannelStatsInfo>")]
    pub fn stats<'env>(&self, env: &'env Env) -> napi::Result<PromiseRaw<'env, ChannelStatsInfo>> {
        let (inner, name) = (self.inner.clone(), self.name.clone());
        run(env, blocking(move || inner.channel_stats(&name)), |s| ChannelStatsInfo {
            skipped: s.skipped as i64,
            forks: s.forks as i64,
            heals: s.heals as i64,
        })
    }

    /// Derives `length` bytes from the current epoch's exporter secret (same for all members).
    #[napi(ts_return_type = "Promise<Uint8Array>")]
    pub fn export_secret<'env>(
        &self,
        env: &'env Env,
        label: String,
        length: u32,
    ) -> napi::Result<PromiseRaw<'env, Uint8Array>> {
        let (agent, name) = (self.inner.agent().clone(), self.name.clone());
        run(
            env,
            blocking(move || Ok(agent.export_secret(&name, &label, &[], length as usize)?.to_vec())),
            Uint8Array::from,
        )
    }
}
