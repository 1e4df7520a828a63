//! One client connection: accept, authenticate within the auth timeout, then serve requests in
//! order while forwarding pushes (deliveries, welcomes) from the hub. Enforces the frame cap,
//! rate limit, idle timeout, token expiry and slow-consumer limit. Never logs tokens or payloads.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use iroh::endpoint::{Incoming, RecvStream, SendStream};
use skytale_proto::codec::{decode_frame, encode_frame, read_frame_bytes};
use skytale_proto::frames::*;
use skytale_proto::names::{channel_org, validate_identity, MAX_CLIENT_MSG_ID_LEN};
use skytale_proto::{ErrorCode, ProtoError, RELAY_FRAME_ALLOWANCE};
use tokio::sync::{mpsc, Notify};
use tokio::time::Instant;

use crate::error::{RelayError, Result};
use crate::metrics::Metrics;
use crate::store::{ChannelRow, InviteRow, NewItem, Store};
use crate::{now_ms, Relay, SessionCtl, Subscriber};

/// Max recipients of one welcome.
const MAX_WELCOME_RECIPIENTS: usize = 1000;
/// Max length of an invite id (`[A-Za-z0-9_-]`).
pub const MAX_INVITE_ID_LEN: usize = 64;
/// Max length of an invite authenticator.
pub const MAX_INVITE_AUTH_LEN: usize = 256;
/// Rows read per lock acquisition during replay.
const REPLAY_PAGE: usize = 256;

struct Guard {
    relay: Arc<Relay>,
    conn_id: u64,
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.relay.state().hub.remove_conn(self.conn_id);
        self.relay.metrics.connections.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Authenticated connection context.
struct Peer {
    org: String,
    identity: String,
    exp: u64,
    /// Token scope `channels:r`: no Send, Commit, channel creation, invites or key-package claims.
    read_only: bool,
    /// API key id and issue time of the current token (revocation handles).
    akid: Option<String>,
    iat: u64,
}

struct Session {
    relay: Arc<Relay>,
    conn: iroh::endpoint::Connection,
    send: SendStream,
    conn_id: u64,
    ctl: Arc<SessionCtl>,
    push_tx: mpsc::Sender<Bytes>,
    peer: Option<Peer>,
}

fn wire(code: ErrorCode, msg: impl Into<String>) -> RelayError {
    RelayError::wire(code, msg)
}

/// Handles one incoming QUIC connection to completion.
pub async fn handle_incoming(relay: Arc<Relay>, incoming: Incoming, shutdown: Arc<Notify>) {
    let conn = match incoming.await {
        Ok(c) => c,
        Err(e) => {
            tracing::debug!(error = %e, "handshake failed");
            return;
        }
    };
    let limits = relay.config.limits.clone();
    let open = relay.metrics.connections.fetch_add(1, Ordering::Relaxed);
    let conn_id = relay.next_conn_id();
    let _guard = Guard {
        relay: relay.clone(),
        conn_id,
    };
    Metrics::add(&relay.metrics.connections_total, 1);
    let auth_deadline = Instant::now() + Duration::from_millis(limits.auth_timeout_ms);

    let (send, recv) = match tokio::time::timeout_at(auth_deadline, conn.accept_bi()).await {
        Ok(Ok(s)) => s,
        Ok(Err(_)) => return,
        Err(_) => {
            Metrics::add(&relay.metrics.auth_failures, 1);
            conn.close(1u32.into(), ErrorCode::AuthTimeout.as_str().as_bytes());
            return;
        }
    };
    let (push_tx, push_rx) = mpsc::channel(limits.outbound_queue);
    let mut s = Session {
        relay: relay.clone(),
        conn: conn.clone(),
        send,
        conn_id,
        ctl: Arc::new(SessionCtl::default()),
        push_tx,
        peer: None,
    };
    if open as usize >= limits.max_connections {
        Metrics::add(&relay.metrics.connections_refused, 1);
        s.fatal(0, ErrorCode::TooManyConnections, "relay connection limit reached").await;
        return;
    }
    let (in_tx, in_rx) = mpsc::channel(16);
    let reader = tokio::spawn(reader_task(
        recv,
        limits.max_frame_bytes,
        in_tx,
        relay.clone(),
    ));
    s.run(in_rx, push_rx, auth_deadline, shutdown).await;
    reader.abort();
}

type Inbound = std::result::Result<Frame, RelayError>;

async fn reader_task(mut recv: RecvStream, max: usize, tx: mpsc::Sender<Inbound>, relay: Arc<Relay>) {
    loop {
        let item = match read_frame_bytes(&mut recv, max).await {
            Ok(Some(bytes)) => {
                Metrics::add(&relay.metrics.frames_in, 1);
                Metrics::add(&relay.metrics.bytes_in, bytes.len() as u64 + 4);
                decode_frame(&bytes).map_err(RelayError::from)
            }
            Ok(None) => return,
            Err(ProtoError::Transport(_)) => return,
            Err(e) => Err(RelayError::from(e)),
        };
        let stop = item.is_err();
        if tx.send(item).await.is_err() || stop {
            return;
        }
    }
}

impl Session {
    async fn write(&mut self, frame: &Frame) -> bool {
        let max = self.relay.config.limits.max_frame_bytes + RELAY_FRAME_ALLOWANCE;
        match encode_frame(frame, max) {
            Ok(bytes) => self.write_bytes(&bytes).await,
            Err(e) => {
                tracing::warn!(error = %e, "reply too large to encode");
                false
            }
        }
    }

    async fn write_bytes(&mut self, bytes: &[u8]) -> bool {
        Metrics::add(&self.relay.metrics.frames_out, 1);
        Metrics::add(&self.relay.metrics.bytes_out, bytes.len() as u64);
        self.send.write_all(bytes).await.is_ok()
    }

    async fn reply(&mut self, rid: u64, body: Body) -> bool {
        self.write(&Frame::new(rid, body)).await
    }

    async fn error(&mut self, rid: u64, code: ErrorCode, message: String, retry_after_ms: u64) -> bool {
        self.reply(
            rid,
            Body::Error(Error {
                code: code.as_str().to_string(),
                message,
                fatal: code.is_fatal(),
                retry_after_ms,
            }),
        )
        .await
    }

    /// Sends a fatal error frame, lets it drain briefly, and closes with the code as reason.
    async fn fatal(&mut self, rid: u64, code: ErrorCode, message: &str) {
        tracing::info!(conn = self.conn_id, code = %code, "closing connection");
        let _ = self.error(rid, code, message.to_string(), 0).await;
        let _ = self.send.finish();
        let _ = tokio::time::timeout(Duration::from_millis(500), self.send.stopped()).await;
        self.conn.close(1u32.into(), code.as_str().as_bytes());
    }

    async fn run(
        &mut self,
        mut inbound: mpsc::Receiver<Inbound>,
        mut pushes: mpsc::Receiver<Bytes>,
        auth_deadline: Instant,
        shutdown: Arc<Notify>,
    ) {
        // Phase 1: the first frame must be Auth, within the auth timeout.
        let first = tokio::time::timeout_at(auth_deadline, inbound.recv()).await;
        let frame = match first {
            Err(_) => {
                Metrics::add(&self.relay.metrics.auth_failures, 1);
                return self.fatal(0, ErrorCode::AuthTimeout, "no Auth frame within the auth timeout").await;
            }
            Ok(None) => return,
            Ok(Some(Err(e))) => return self.fatal(0, e.code(), &e.client_message()).await,
            Ok(Some(Ok(f))) => f,
        };
        let rid = frame.request_id;
        let Some(Body::Auth(auth)) = frame.body else {
            Metrics::add(&self.relay.metrics.auth_failures, 1);
            return self.fatal(rid, ErrorCode::AuthRequired, "first frame must be Auth").await;
        };
        if let Err(e) = self.authenticate(rid, auth).await {
            Metrics::add(&self.relay.metrics.auth_failures, 1);
            return self.fatal(rid, e.code(), &e.client_message()).await;
        }
        if let Err(e) = self.push_pending_welcomes(0).await {
            tracing::warn!(error = %e, "welcome push failed");
        }

        // Phase 2: serve.
        let idle = Duration::from_millis(self.relay.config.limits.idle_timeout_ms);
        let mut idle_deadline = Instant::now() + idle;
        let shutdown_fut = shutdown.notified();
        tokio::pin!(shutdown_fut);
        loop {
            let exp_deadline = self.token_deadline();
            tokio::select! {
                biased;
                _ = &mut shutdown_fut => {
                    return self.fatal(0, ErrorCode::ShuttingDown, "relay is shutting down").await;
                }
                _ = self.ctl.notify.notified() => {
                    if self.ctl.revoked.load(Ordering::SeqCst) {
                        Metrics::add(&self.relay.metrics.auth_failures, 1);
                        return self.fatal(0, ErrorCode::AuthInvalid, "the API key or agent of this session was revoked").await;
                    }
                    if self.ctl.slow.load(Ordering::SeqCst) {
                        return self.fatal(0, ErrorCode::SlowConsumer, "push queue full; reconnect and resume").await;
                    }
                }
                item = inbound.recv() => {
                    let Some(item) = item else { return };
                    idle_deadline = Instant::now() + idle;
                    let frame = match item {
                        Ok(f) => f,
                        Err(e) => return self.fatal(0, e.code(), &e.client_message()).await,
                    };
                    if !self.handle_frame(frame).await {
                        return;
                    }
                }
                p = pushes.recv() => {
                    let Some(bytes) = p else { return };
                    if !self.write_bytes(&bytes).await { return; }
                }
                _ = tokio::time::sleep_until(idle_deadline) => {
                    return self.fatal(0, ErrorCode::IdleTimeout, "no frame within the idle timeout").await;
                }
                _ = tokio::time::sleep_until(exp_deadline) => {
                    return self.fatal(0, ErrorCode::AuthExpired, "token expired; reconnect with a fresh token").await;
                }
            }
        }
    }

    fn token_deadline(&self) -> Instant {
        let exp = self.peer.as_ref().map(|p| p.exp).unwrap_or(0);
        let exp_ms = exp
            .saturating_add(self.relay.config.auth.leeway_secs)
            .saturating_mul(1000);
        let left = exp_ms.saturating_sub(now_ms());
        Instant::now() + Duration::from_millis(left)
    }

    async fn authenticate(&mut self, rid: u64, auth: Auth) -> Result<()> {
        let claims = self.relay.verifier.verify(&auth.jwt).await?;
        // The identity is the API server's word, never the client's: no claim, no session.
        let identity = claims.identity.clone().ok_or_else(|| {
            wire(
                ErrorCode::AuthInvalid,
                "token has no identity claim: ask the API server for an agent token (POST /v1/tokens {identity})",
            )
        })?;
        validate_identity(&identity)?;
        if !auth.identity.is_empty() && auth.identity != identity {
            return Err(wire(ErrorCode::AuthInvalid, "identity does not match the token"));
        }
        let read_only = match claims.scope.as_ref().and_then(|s| s.as_str()) {
            Some("channels:rw") => false,
            Some("channels:r") => true,
            _ => return Err(wire(ErrorCode::AuthInvalid, "token scope must be channels:rw or channels:r")),
        };
        let iat = claims.iat.unwrap_or(0);
        if self.relay.revocations.is_revoked(claims.akid.as_deref(), &claims.org, &identity, iat) {
            return Err(wire(ErrorCode::AuthInvalid, "the API key or agent of this token was revoked"));
        }
        if let Some(p) = &self.peer {
            if p.org != claims.org || p.identity != identity {
                return Err(wire(
                    ErrorCode::AuthInvalid,
                    "re-auth must keep the same org and identity",
                ));
            }
        } else {
            tracing::info!(conn = self.conn_id, org = %claims.org, sub = %claims.sub, identity = %identity, read_only, "authenticated");
        }
        // (Re-)register for pushes with the current token's revocation handles.
        let sub = Subscriber {
            identity: identity.clone(),
            tx: self.push_tx.clone(),
            ctl: self.ctl.clone(),
            akid: claims.akid.clone(),
            iat,
        };
        self.relay
            .state()
            .hub
            .online
            .entry((claims.org.clone(), identity.clone()))
            .or_default()
            .insert(self.conn_id, sub);
        self.peer = Some(Peer {
            org: claims.org.clone(),
            identity: identity.clone(),
            exp: claims.exp,
            read_only,
            akid: claims.akid.clone(),
            iat,
        });
        self.reply(
            rid,
            Body::AuthOk(AuthOk {
                sub: claims.sub,
                org: claims.org,
                identity,
                expires_at: claims.exp,
                max_frame_size: self.relay.config.limits.max_frame_bytes as u32,
                relay_version: env!("CARGO_PKG_VERSION").to_string(),
            }),
        )
        .await;
        Ok(())
    }

    /// Handles one request; returns false when the connection must end.
    async fn handle_frame(&mut self, frame: Frame) -> bool {
        let rid = frame.request_id;
        let Some(body) = frame.body else { return true };
        if rid == 0 || !body.is_client_request() {
            self.fatal(rid, ErrorCode::MalformedFrame, "requests need a non-zero request_id and a client body")
                .await;
            return false;
        }
        let (org, identity) = match &self.peer {
            Some(p) => (p.org.clone(), p.identity.clone()),
            None => return false,
        };
        if let Err(retry) = self.relay.rate_check(&org, &identity) {
            Metrics::add(&self.relay.metrics.rate_limited, 1);
            return self
                .error(rid, ErrorCode::RateLimited, "too many frames per second".to_string(), retry)
                .await;
        }
        let name = body.name();
        let read_only = self.peer.as_ref().is_some_and(|p| p.read_only);
        let writes = matches!(
            body,
            Body::Send(_)
                | Body::Commit(_)
                | Body::CreateChannel(_)
                | Body::CreateInvite(_)
                | Body::UpdateInvite(_)
                | Body::RevokeInvite(_)
                | Body::ClaimKeyPackage(_)
        );
        if read_only && writes {
            return self
                .error(
                    rid,
                    ErrorCode::ScopeForbidden,
                    format!("a channels:r token cannot {name}"),
                    0,
                )
                .await;
        }
        let res = self.dispatch(rid, body).await;
        match res {
            Ok(alive) => alive,
            Err(e) => {
                let code = e.code();
                if code == ErrorCode::Internal {
                    tracing::error!(conn = self.conn_id, request = name, error = %e, "request failed");
                } else {
                    tracing::debug!(conn = self.conn_id, request = name, code = %code, "request refused");
                }
                if code.is_fatal() {
                    if code == ErrorCode::AuthInvalid || code == ErrorCode::AuthExpired {
                        Metrics::add(&self.relay.metrics.auth_failures, 1);
                    }
                    self.fatal(rid, code, &e.client_message()).await;
                    false
                } else {
                    self.error(rid, code, e.client_message(), 0).await
                }
            }
        }
    }

    fn check_channel(&self, channel: &str) -> Result<()> {
        let org = channel_org(channel)?;
        match &self.peer {
            Some(p) if p.org == org => Ok(()),
            _ => Err(wire(
                ErrorCode::ForbiddenChannel,
                "channel belongs to another org than the token",
            )),
        }
    }

    fn me(&self) -> (String, String) {
        self.peer
            .as_ref()
            .map(|p| (p.org.clone(), p.identity.clone()))
            .unwrap_or_default()
    }

    async fn dispatch(&mut self, rid: u64, body: Body) -> Result<bool> {
        let (org, me) = self.me();
        let relay = self.relay.clone();
        match body {
            Body::Auth(a) => {
                self.authenticate(rid, a).await?;
                Ok(true)
            }
            Body::Ping(_) => Ok(self.reply(rid, Body::Pong(Pong {})).await),
            Body::CreateChannel(c) => {
                self.check_channel(&c.channel)?;
                let (row, created) = relay.state().store.ensure_channel(&c.channel, &org, now_ms())?;
                if created {
                    tracing::info!(channel = %c.channel, "channel created");
                }
                Ok(self
                    .reply(
                        rid,
                        Body::ChannelInfo(ChannelInfo {
                            channel: c.channel,
                            epoch: row.epoch,
                            last_seq: row.last_seq,
                            created,
                        }),
                    )
                    .await)
            }
            Body::ChannelState(c) => {
                self.check_channel(&c.channel)?;
                let row = relay
                    .state()
                    .store
                    .channel(&c.channel)?
                    .ok_or_else(|| wire(ErrorCode::ChannelNotFound, "no such channel"))?;
                Ok(self
                    .reply(
                        rid,
                        Body::ChannelInfo(ChannelInfo {
                            channel: c.channel,
                            epoch: row.epoch,
                            last_seq: row.last_seq,
                            created: false,
                        }),
                    )
                    .await)
            }
            Body::Subscribe(s) => self.subscribe(rid, s).await,
            Body::Unsubscribe(u) => {
                self.check_channel(&u.channel)?;
                if let Some(m) = relay.state().hub.subs.get_mut(&u.channel) {
                    m.remove(&self.conn_id);
                }
                Ok(self.reply(rid, Body::Done(Done::default())).await)
            }
            Body::Send(m) => self.send_item(rid, m).await,
            Body::CreateInvite(c) => self.create_invite(rid, c).await,
            Body::UpdateInvite(u) => {
                let max = relay.config.limits.max_frame_bytes;
                if u.group_info.len() > max {
                    return Err(wire(ErrorCode::InvalidRequest, "group_info exceeds the frame cap"));
                }
                {
                    let st = relay.state();
                    let inv = self.own_invite(&st.store, &u.invite_id)?;
                    if inv.revoked {
                        return Err(wire(ErrorCode::InviteInvalid, "invalid invite"));
                    }
                    st.store.update_invite(&inv.id, &u.group_info)?;
                }
                Ok(self.reply(rid, Body::Done(Done::default())).await)
            }
            Body::RevokeInvite(r) => {
                {
                    let st = relay.state();
                    let inv = self.own_invite(&st.store, &r.invite_id)?;
                    st.store.revoke_invite(&inv.id)?;
                }
                tracing::info!(conn = self.conn_id, "invite revoked");
                Ok(self.reply(rid, Body::Done(Done::default())).await)
            }
            Body::FetchInvite(f) => {
                self.check_channel(&f.channel)?;
                let info = {
                    let st = relay.state();
                    let (inv, uses, row) =
                        use_invite(&relay, &st.store, &f.channel, &f.invite_id, &f.invite_auth, &me)?;
                    InviteInfo {
                        channel: inv.channel,
                        invite_id: inv.id,
                        group_info: inv.group_info,
                        expires_at: inv.expires_at,
                        max_uses: inv.max_uses,
                        uses,
                        epoch: row.epoch,
                        last_seq: row.last_seq,
                    }
                };
                Ok(self.reply(rid, Body::InviteInfo(info)).await)
            }
            Body::Commit(c) => self.commit(rid, c).await,
            Body::Fetch(f) => self.fetch(rid, f).await,
            Body::PublishKeyPackages(p) => {
                if p.key_packages.iter().any(|k| k.is_empty()) {
                    return Err(wire(ErrorCode::InvalidRequest, "empty key package"));
                }
                let count = {
                    let mut st = relay.state();
                    let have = st.store.count_key_packages(&org, &me)?;
                    if have + p.key_packages.len() as u64 > relay.config.limits.max_key_packages {
                        return Err(wire(
                            ErrorCode::KeyPackageLimit,
                            format!(
                                "at most {} key packages per identity",
                                relay.config.limits.max_key_packages
                            ),
                        ));
                    }
                    st.store.add_key_packages(&org, &me, &p.key_packages, now_ms())?;
                    have + p.key_packages.len() as u64
                };
                Ok(self
                    .reply(rid, Body::Done(Done { count, ..Default::default() }))
                    .await)
            }
            Body::CountKeyPackages(_) => {
                let count = relay.state().store.count_key_packages(&org, &me)?;
                Ok(self
                    .reply(rid, Body::Done(Done { count, ..Default::default() }))
                    .await)
            }
            Body::ClaimKeyPackage(c) => {
                validate_identity(&c.identity)?;
                let kp = relay
                    .state()
                    .store
                    .claim_key_package(&org, &c.identity)?
                    .ok_or_else(|| {
                        wire(ErrorCode::KeyPackageNotFound, "no key package available for this identity")
                    })?;
                Ok(self
                    .reply(
                        rid,
                        Body::KeyPackage(KeyPackage {
                            identity: c.identity,
                            key_package: kp,
                        }),
                    )
                    .await)
            }
            Body::FetchWelcomes(_) => {
                let n = self.push_pending_welcomes(rid).await?;
                Ok(self
                    .reply(rid, Body::Done(Done { count: n, ..Default::default() }))
                    .await)
            }
            Body::AckWelcome(a) => {
                let deleted = relay.state().store.delete_welcome(&org, &me, a.welcome_id)?;
                Ok(self
                    .reply(
                        rid,
                        Body::Done(Done {
                            count: u64::from(deleted),
                            ..Default::default()
                        }),
                    )
                    .await)
            }
            _ => Err(wire(ErrorCode::MalformedFrame, "not a client request")),
        }
    }

    async fn push_pending_welcomes(&mut self, rid: u64) -> Result<u64> {
        let (org, me) = self.me();
        let welcomes = self.relay.state().store.welcomes_for(&org, &me)?;
        let n = welcomes.len() as u64;
        for w in welcomes {
            if !self.reply(rid, Body::Welcome(w)).await {
                break;
            }
        }
        Ok(n)
    }

    async fn subscribe(&mut self, rid: u64, s: Subscribe) -> Result<bool> {
        self.check_channel(&s.channel)?;
        let (org, me) = self.me();
        let relay = self.relay.clone();
        // Register under the lock and remember the high-water mark: live items (> hw) queue up
        // in the push queue while we replay (after_seq, hw] directly, so order is preserved.
        let (row, created) = {
            let mut st = relay.state();
            let (row, created) = st.store.ensure_channel(&s.channel, &org, now_ms())?;
            st.hub.subs.entry(s.channel.clone()).or_default().insert(
                self.conn_id,
                Subscriber {
                    identity: me.clone(),
                    tx: self.push_tx.clone(),
                    ctl: self.ctl.clone(),
                    akid: self.peer.as_ref().and_then(|p| p.akid.clone()),
                    iat: self.peer.as_ref().map(|p| p.iat).unwrap_or(0),
                },
            );
            (row, created)
        };
        let alive = self
            .reply(
                rid,
                Body::ChannelInfo(ChannelInfo {
                    channel: s.channel.clone(),
                    epoch: row.epoch,
                    last_seq: row.last_seq,
                    created,
                }),
            )
            .await;
        if !alive {
            return Ok(false);
        }
        let mut after = s.after_seq;
        while after < row.last_seq {
            let page = relay
                .state()
                .store
                .read_range(&s.channel, after, row.last_seq, &me, REPLAY_PAGE)?;
            if page.is_empty() {
                break;
            }
            for d in page {
                after = d.seq;
                if !self.reply(0, Body::Deliver(d)).await {
                    return Ok(false);
                }
            }
        }
        Ok(true)
    }

    async fn fetch(&mut self, rid: u64, f: Fetch) -> Result<bool> {
        self.check_channel(&f.channel)?;
        let (_, me) = self.me();
        let max = self.relay.config.limits.max_fetch;
        let limit = if f.limit == 0 { max } else { f.limit.min(max) } as usize;
        let (mut items, row) = {
            let st = self.relay.state();
            let row = st
                .store
                .channel(&f.channel)?
                .ok_or_else(|| wire(ErrorCode::ChannelNotFound, "no such channel"))?;
            let items = st
                .store
                .read_range(&f.channel, f.after_seq, u64::MAX >> 1, &me, limit + 1)?;
            (items, row)
        };
        let more = items.len() > limit;
        items.truncate(limit);
        let last_seq = if more {
            items.last().map(|d| d.seq).unwrap_or(f.after_seq)
        } else {
            row.last_seq.max(f.after_seq)
        };
        let count = items.len() as u64;
        for d in items {
            if !self.reply(rid, Body::Deliver(d)).await {
                return Ok(false);
            }
        }
        Ok(self
            .reply(rid, Body::Done(Done { count, last_seq, more }))
            .await)
    }

    fn check_item(&self, channel: &str, client_msg_id: &str) -> Result<()> {
        self.check_channel(channel)?;
        if client_msg_id.len() > MAX_CLIENT_MSG_ID_LEN {
            return Err(wire(ErrorCode::InvalidRequest, "client_msg_id too long"));
        }
        Ok(())
    }

    /// An invite by id that belongs to the caller's org (`SKYTALE_INVITE_INVALID` if unknown,
    /// `SKYTALE_FORBIDDEN_CHANNEL` if it belongs to another org).
    fn own_invite(&self, store: &Store, invite_id: &str) -> Result<InviteRow> {
        let inv = store
            .invite(invite_id)?
            .ok_or_else(|| wire(ErrorCode::InviteInvalid, "invalid invite"))?;
        self.check_channel(&inv.channel)?;
        Ok(inv)
    }

    async fn create_invite(&mut self, rid: u64, c: CreateInvite) -> Result<bool> {
        self.check_channel(&c.channel)?;
        validate_invite_id(&c.invite_id)?;
        let limits = &self.relay.config.limits;
        if c.invite_auth.is_empty() || c.invite_auth.len() > MAX_INVITE_AUTH_LEN {
            return Err(wire(
                ErrorCode::InvalidRequest,
                format!("invite_auth must be 1..={MAX_INVITE_AUTH_LEN} bytes"),
            ));
        }
        if c.max_uses == 0 {
            return Err(wire(ErrorCode::InvalidRequest, "max_uses must be at least 1"));
        }
        if c.group_info.len() > limits.max_frame_bytes {
            return Err(wire(ErrorCode::InvalidRequest, "group_info exceeds the frame cap"));
        }
        let now = now_ms() / 1000;
        if c.expires_at <= now {
            return Err(wire(ErrorCode::InvalidRequest, "expires_at must be in the future"));
        }
        let (org, me) = self.me();
        let inv = InviteRow {
            id: c.invite_id,
            org,
            channel: c.channel,
            auth_hash: auth_hash(&c.invite_auth).to_vec(),
            max_uses: c.max_uses.min(limits.max_invite_uses),
            expires_at: c.expires_at.min(now.saturating_add(limits.max_invite_ttl_secs)),
            group_info: c.group_info,
            revoked: false,
        };
        let relay = self.relay.clone();
        {
            let st = relay.state();
            if st.store.channel(&inv.channel)?.is_none() {
                return Err(wire(ErrorCode::ChannelNotFound, "no such channel"));
            }
            if !st.store.create_invite(&inv, &me, now_ms())? {
                return Err(wire(ErrorCode::InvalidRequest, "invite id already exists"));
            }
        }
        Metrics::add(&relay.metrics.invites_created, 1);
        tracing::info!(conn = self.conn_id, channel = %inv.channel, max_uses = inv.max_uses, expires_at = inv.expires_at, "invite created");
        Ok(self.reply(rid, Body::Done(Done::default())).await)
    }

    /// `Send{kind: JoinRequest}`: a non-member with an invite posts an opaque join request.
    /// No epoch check (the item gets the channel's current epoch); archived, fanned out, deduped.
    async fn join_request(&mut self, rid: u64, m: Send) -> Result<bool> {
        self.check_item(&m.channel, &m.client_msg_id)?;
        let (org, me) = self.me();
        let relay = self.relay.clone();
        let ack = {
            let mut st = relay.state();
            let dup = st.store.find_dup(&m.channel, &me, &m.client_msg_id)?;
            match dup {
                // A retry of an accepted join request: its original Ack, even if the invite has
                // since expired, been used up or revoked.
                Some(d) if d.kind == Kind::JoinRequest as i32 => Ack {
                    channel: m.channel.clone(),
                    seq: d.seq,
                    epoch: d.epoch,
                    duplicate: true,
                },
                _ => {
                    let (_, _, row) =
                        use_invite(&relay, &st.store, &m.channel, &m.invite_id, &m.invite_auth, &me)?;
                    if let Some(d) = dup {
                        Ack {
                            channel: m.channel.clone(),
                            seq: d.seq,
                            epoch: d.epoch,
                            duplicate: true,
                        }
                    } else {
                        let seq = row.last_seq + 1;
                        let now = now_ms();
                        let item = NewItem {
                            channel: &m.channel,
                            seq,
                            epoch: row.epoch,
                            kind: Kind::JoinRequest as i32,
                            sender: &me,
                            client_msg_id: &m.client_msg_id,
                            payload: &m.payload,
                            now_ms: now,
                        };
                        st.store.append(&item, &org, row.epoch, &[])?;
                        self.archived(m.payload.len());
                        let deliver = Deliver {
                            channel: m.channel.clone(),
                            seq,
                            epoch: row.epoch,
                            kind: Kind::JoinRequest as i32,
                            sender: me.clone(),
                            payload: m.payload,
                            timestamp_ms: now,
                        };
                        fan_out(&relay, &st.hub, deliver, &me);
                        tracing::info!(conn = self.conn_id, channel = %m.channel, seq, "join request accepted");
                        Ack {
                            channel: m.channel.clone(),
                            seq,
                            epoch: row.epoch,
                            duplicate: false,
                        }
                    }
                }
            }
        };
        Ok(self.reply(rid, Body::Ack(ack)).await)
    }

    async fn send_item(&mut self, rid: u64, m: Send) -> Result<bool> {
        let kind = Kind::try_from(m.kind).unwrap_or(Kind::Unspecified);
        if kind == Kind::JoinRequest {
            return self.join_request(rid, m).await;
        }
        self.check_item(&m.channel, &m.client_msg_id)?;
        if !matches!(kind, Kind::Application | Kind::Proposal) {
            return Err(wire(
                ErrorCode::InvalidRequest,
                "Send kind must be Application, Proposal or JoinRequest (commits use Commit)",
            ));
        }
        if !m.invite_id.is_empty() || !m.invite_auth.is_empty() {
            return Err(wire(
                ErrorCode::InvalidRequest,
                "invite_id/invite_auth are only allowed with kind JoinRequest",
            ));
        }
        let (org, me) = self.me();
        let relay = self.relay.clone();
        let outcome = {
            let mut st = relay.state();
            let row = st
                .store
                .channel(&m.channel)?
                .ok_or_else(|| wire(ErrorCode::ChannelNotFound, "no such channel"))?;
            if let Some(d) = st.store.find_dup(&m.channel, &me, &m.client_msg_id)? {
                Outcome::Ack(Ack {
                    channel: m.channel.clone(),
                    seq: d.seq,
                    epoch: d.epoch,
                    duplicate: true,
                })
            } else if m.epoch != row.epoch {
                Outcome::Nack(Nack {
                    channel: m.channel.clone(),
                    current_epoch: row.epoch,
                    last_seq: row.last_seq,
                })
            } else {
                let seq = row.last_seq + 1;
                let now = now_ms();
                let item = NewItem {
                    channel: &m.channel,
                    seq,
                    epoch: m.epoch,
                    kind: kind as i32,
                    sender: &me,
                    client_msg_id: &m.client_msg_id,
                    payload: &m.payload,
                    now_ms: now,
                };
                st.store.append(&item, &org, row.epoch, &[])?;
                self.archived(m.payload.len());
                let deliver = Deliver {
                    channel: m.channel.clone(),
                    seq,
                    epoch: m.epoch,
                    kind: kind as i32,
                    sender: me.clone(),
                    payload: m.payload,
                    timestamp_ms: now,
                };
                fan_out(&relay, &st.hub, deliver, &me);
                Outcome::Ack(Ack {
                    channel: m.channel.clone(),
                    seq,
                    epoch: row.epoch,
                    duplicate: false,
                })
            }
        };
        Ok(match outcome {
            Outcome::Ack(a) => self.reply(rid, Body::Ack(a)).await,
            Outcome::Nack(n) => self.reply(rid, Body::Nack(n)).await,
        })
    }

    fn archived(&self, len: usize) {
        let m = &self.relay.metrics;
        Metrics::add(&m.messages_archived, 1);
        Metrics::add(&m.archive_items, 1);
        Metrics::add(&m.archive_bytes, len as u64);
    }

    async fn commit(&mut self, rid: u64, c: Commit) -> Result<bool> {
        self.check_item(&c.channel, &c.client_msg_id)?;
        let (org, me) = self.me();
        let welcomes: Vec<(String, Vec<u8>)> = match &c.welcome {
            Some(w) => {
                if w.recipients.is_empty() || w.recipients.len() > MAX_WELCOME_RECIPIENTS {
                    return Err(wire(ErrorCode::InvalidRequest, "welcome needs 1..=1000 recipients"));
                }
                let mut v = Vec::with_capacity(w.recipients.len());
                for r in &w.recipients {
                    validate_identity(r)?;
                    if !v.iter().any(|(x, _): &(String, Vec<u8>)| x == r) {
                        v.push((r.clone(), w.payload.clone()));
                    }
                }
                v
            }
            None => Vec::new(),
        };
        let relay = self.relay.clone();
        let outcome = {
            let mut st = relay.state();
            let (row, _) = st.store.ensure_channel(&c.channel, &org, now_ms())?;
            if let Some(d) = st.store.find_dup(&c.channel, &me, &c.client_msg_id)? {
                let epoch = if d.kind == Kind::Commit as i32 { d.epoch + 1 } else { d.epoch };
                Outcome::Ack(Ack {
                    channel: c.channel.clone(),
                    seq: d.seq,
                    epoch,
                    duplicate: true,
                })
            } else if c.epoch != row.epoch {
                Metrics::add(&relay.metrics.commits_nacked, 1);
                Outcome::Nack(Nack {
                    channel: c.channel.clone(),
                    current_epoch: row.epoch,
                    last_seq: row.last_seq,
                })
            } else {
                let limit = relay.config.limits.max_pending_welcomes;
                for (r, _) in &welcomes {
                    if st.store.pending_welcomes(&org, r)? >= limit {
                        return Err(wire(
                            ErrorCode::RecipientQueueFull,
                            format!("welcome queue of recipient {r} is full"),
                        ));
                    }
                }
                let seq = row.last_seq + 1;
                let now = now_ms();
                let item = NewItem {
                    channel: &c.channel,
                    seq,
                    epoch: c.epoch,
                    kind: Kind::Commit as i32,
                    sender: &me,
                    client_msg_id: &c.client_msg_id,
                    payload: &c.payload,
                    now_ms: now,
                };
                let ids = st.store.append(&item, &org, row.epoch + 1, &welcomes)?;
                self.archived(c.payload.len());
                Metrics::add(&relay.metrics.commits_acked, 1);
                let deliver = Deliver {
                    channel: c.channel.clone(),
                    seq,
                    epoch: c.epoch,
                    kind: Kind::Commit as i32,
                    sender: me.clone(),
                    payload: c.payload,
                    timestamp_ms: now,
                };
                fan_out(&relay, &st.hub, deliver, &me);
                for ((recipient, payload), id) in welcomes.into_iter().zip(ids) {
                    let Some(conns) = st.hub.online.get(&(org.clone(), recipient)) else {
                        continue;
                    };
                    let frame = Frame::new(
                        0,
                        Body::Welcome(Welcome {
                            welcome_id: id,
                            channel: c.channel.clone(),
                            sender: me.clone(),
                            payload,
                            commit_seq: seq,
                            commit_epoch: row.epoch + 1,
                        }),
                    );
                    if let Ok(bytes) = encode_frame(&frame, usize::MAX) {
                        for sub in conns.values() {
                            sub.push(bytes.clone());
                        }
                    }
                }
                tracing::info!(channel = %c.channel, seq, epoch = row.epoch + 1, "commit accepted");
                Outcome::Ack(Ack {
                    channel: c.channel.clone(),
                    seq,
                    epoch: row.epoch + 1,
                    duplicate: false,
                })
            }
        };
        Ok(match outcome {
            Outcome::Ack(a) => self.reply(rid, Body::Ack(a)).await,
            Outcome::Nack(n) => self.reply(rid, Body::Nack(n)).await,
        })
    }
}

enum Outcome {
    Ack(Ack),
    Nack(Nack),
}

/// Checks an invite id: 1..=64 chars of `[A-Za-z0-9_-]`.
fn validate_invite_id(id: &str) -> Result<()> {
    if id.is_empty()
        || id.len() > MAX_INVITE_ID_LEN
        || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        return Err(wire(
            ErrorCode::InvalidRequest,
            format!("invite_id must be 1..={MAX_INVITE_ID_LEN} chars of [A-Za-z0-9_-]"),
        ));
    }
    Ok(())
}

/// SHA-256 of an invite authenticator (the relay stores only this).
fn auth_hash(auth: &[u8]) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(auth).into()
}

/// Constant-time equality of two byte strings (the length is not secret: both are hashes).
fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

/// Validates an invite for `channel` (whose org the caller already checked) and counts a use by
/// `identity` (once per distinct identity). Returns the invite, its use count and the channel's
/// state. Must be called under the state lock, so checking and counting are atomic.
fn use_invite(
    relay: &Relay,
    store: &Store,
    channel: &str,
    invite_id: &str,
    invite_auth: &[u8],
    identity: &str,
) -> Result<(InviteRow, u32, ChannelRow)> {
    let refuse = |code: ErrorCode, msg: &str| {
        Metrics::add(&relay.metrics.invite_refusals, 1);
        wire(code, msg)
    };
    let presented = auth_hash(invite_auth);
    let inv = match store.invite(invite_id)? {
        Some(inv) => {
            // compare first, always, so timing does not depend on which check fails
            let auth_ok = ct_eq(&presented, &inv.auth_hash);
            if auth_ok && !inv.revoked && inv.channel == channel {
                inv
            } else {
                return Err(refuse(ErrorCode::InviteInvalid, "invalid invite"));
            }
        }
        None => return Err(refuse(ErrorCode::InviteInvalid, "invalid invite")),
    };
    if now_ms() / 1000 >= inv.expires_at {
        return Err(refuse(ErrorCode::InviteExpired, "the invite has expired"));
    }
    let Some(row) = store.channel(channel)? else {
        return Err(refuse(ErrorCode::InviteInvalid, "invalid invite"));
    };
    let uses = store.invite_uses(&inv.id)?;
    if store.invite_used_by(&inv.id, identity)? {
        return Ok((inv, uses, row));
    }
    if uses >= inv.max_uses {
        return Err(refuse(ErrorCode::InviteUsedUp, "the invite has been used up"));
    }
    store.add_invite_use(&inv.id, identity, now_ms())?;
    Metrics::add(&relay.metrics.invite_uses, 1);
    Ok((inv, uses + 1, row))
}

/// Pushes a delivery to every subscriber of its channel except connections of the sender.
fn fan_out(relay: &Relay, hub: &crate::Hub, deliver: Deliver, sender: &str) {
    let Some(subs) = hub.subs.get(&deliver.channel) else {
        return;
    };
    let frame = Frame::new(0, Body::Deliver(deliver));
    let max = relay.config.limits.max_frame_bytes + RELAY_FRAME_ALLOWANCE;
    let Ok(bytes) = encode_frame(&frame, max) else {
        return;
    };
    for sub in subs.values() {
        if sub.identity != sender {
            sub.push(bytes.clone());
        }
    }
}
