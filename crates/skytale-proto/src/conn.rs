//! A minimal async client connection to a Skytale relay over iroh QUIC (feature `conn`).
//!
//! This is the reusable building block for `skytale-client` and the relay's tests: it dials the
//! relay (closed network: no n0 relays, no address lookup, direct addresses only), opens the one
//! bidirectional stream, matches replies to requests by `request_id`, and hands pushed frames
//! (`request_id == 0`: live deliveries, welcomes, fatal errors) to a [`PushReceiver`].
//! It does not reconnect, refresh tokens or queue sends; that is the client's job.
//!
//! ```no_run
//! # async fn demo() -> Result<(), skytale_proto::ProtoError> {
//! use skytale_proto::conn::{client_endpoint, RelayAddr, RelayConnection};
//! let addr: RelayAddr = "iroh://<endpoint-id>@127.0.0.1:4433".parse()?;
//! let endpoint = client_endpoint("127.0.0.1:0".parse().map_err(|_| skytale_proto::ProtoError::Unexpected("addr"))?).await?;
//! let (conn, mut pushes) = RelayConnection::connect(&endpoint, &addr).await?;
//! conn.auth("<jwt>", "agent-a").await?;
//! conn.subscribe("acme/ns/svc", 0).await?;
//! while let Some(frame) = pushes.recv().await { /* Deliver / Welcome / Error */ let _ = frame; }
//! # Ok(()) }
//! ```

use std::collections::HashMap;
use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use iroh::endpoint::{presets, ConnectionError, RecvStream, SendStream};
use iroh::{Endpoint, EndpointAddr, EndpointId, SecretKey};
use tokio::sync::mpsc;

use crate::codec::{decode_frame, encode_frame, read_frame_bytes};
use crate::frames::*;
use crate::{ProtoError, ALPN, DEFAULT_MAX_FRAME_SIZE, RELAY_FRAME_ALLOWANCE};

/// A relay address: `iroh://<endpoint-id-hex>@host:port`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RelayAddr {
    /// The relay's iroh endpoint id (its public key).
    pub endpoint_id: EndpointId,
    /// The relay's UDP socket address.
    pub socket_addr: SocketAddr,
}

impl FromStr for RelayAddr {
    type Err = ProtoError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let rest = s
            .strip_prefix("iroh://")
            .ok_or_else(|| ProtoError::InvalidAddress("missing iroh:// prefix".to_string()))?;
        let (id, hostport) =
            rest.split_once('@').ok_or_else(|| ProtoError::InvalidAddress("expected <id>@host:port".to_string()))?;
        let endpoint_id =
            EndpointId::from_str(id).map_err(|e| ProtoError::InvalidAddress(format!("endpoint id: {e}")))?;
        let hostport = hostport.trim_end_matches('/');
        let socket_addr = match hostport.parse::<SocketAddr>() {
            Ok(a) => a,
            Err(_) => hostport
                .to_socket_addrs()
                .map_err(|e| ProtoError::InvalidAddress(format!("host:port: {e}")))?
                .next()
                .ok_or_else(|| ProtoError::InvalidAddress("host resolves to nothing".to_string()))?,
        };
        Ok(RelayAddr { endpoint_id, socket_addr })
    }
}

impl fmt::Display for RelayAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "iroh://{}@{}", self.endpoint_id, self.socket_addr)
    }
}

impl From<&RelayAddr> for EndpointAddr {
    fn from(a: &RelayAddr) -> Self {
        EndpointAddr::new(a.endpoint_id).with_ip_addr(a.socket_addr)
    }
}

/// Binds an iroh endpoint for the closed-network setup: no n0 relays, no address lookup,
/// one UDP socket at `bind` (use `127.0.0.1:0` for loopback, `0.0.0.0:0` otherwise).
/// `secret` fixes the endpoint id; `None` generates one. `alpns` are the accepted ALPNs
/// (empty for a pure client).
pub async fn closed_endpoint(
    bind: SocketAddr,
    secret: Option<SecretKey>,
    alpns: Vec<Vec<u8>>,
) -> Result<Endpoint, ProtoError> {
    let mut builder = Endpoint::builder(presets::Minimal)
        .clear_ip_transports()
        .bind_addr(bind)
        .map_err(|e| ProtoError::Transport(format!("bind address: {e}")))?
        .alpns(alpns);
    if let Some(secret) = secret {
        builder = builder.secret_key(secret);
    }
    builder.bind().await.map_err(|e| ProtoError::Transport(format!("bind: {e}")))
}

/// A client endpoint (see [`closed_endpoint`]) with a fresh endpoint id.
pub async fn client_endpoint(bind: SocketAddr) -> Result<Endpoint, ProtoError> {
    closed_endpoint(bind, None, Vec::new()).await
}

/// The final reply of a request plus its intermediate frames (fetched deliveries, welcomes).
#[derive(Clone, Debug, Default)]
pub struct Reply {
    /// Intermediate frames (`Deliver` or `Welcome`) in arrival order.
    pub items: Vec<Body>,
    /// The terminal frame (never `Error` or `Nack`: those become `Err`).
    pub last: Option<Body>,
}

struct Inner {
    conn: iroh::endpoint::Connection,
    send: tokio::sync::Mutex<SendStream>,
    pending: Mutex<HashMap<u64, mpsc::UnboundedSender<Frame>>>,
    next_id: AtomicU64,
    close_code: Mutex<Option<String>>,
    max_frame: usize,
    timeout: Duration,
}

/// Pushed frames (`request_id == 0`): `Deliver`, `Welcome`, and a fatal `Error` before close.
/// `recv` returns `None` once the connection is closed.
pub struct PushReceiver {
    rx: mpsc::UnboundedReceiver<Frame>,
}

impl PushReceiver {
    /// Next pushed frame; `None` after the connection closed.
    pub async fn recv(&mut self) -> Option<Frame> {
        self.rx.recv().await
    }

    /// Next pushed frame if one is already queued.
    pub fn try_recv(&mut self) -> Option<Frame> {
        self.rx.try_recv().ok()
    }
}

/// One authenticated-or-not session with a relay. Cheap to clone; all clones share the stream.
#[derive(Clone)]
pub struct RelayConnection {
    inner: Arc<Inner>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Reads the frames of one request until its terminal reply.
/// `first`: a frame of it already taken from `rx`.
async fn collect_reply(
    conn: &RelayConnection,
    mut first: Option<Frame>,
    rx: &mut mpsc::UnboundedReceiver<Frame>,
) -> Result<Reply, ProtoError> {
    let mut reply = Reply::default();
    loop {
        let next = match first.take() {
            Some(f) => Some(f),
            None => rx.recv().await,
        };
        let Some(f) = next else {
            return Err(ProtoError::Closed { code: conn.close_code() });
        };
        match f.body {
            Some(Body::Error(e)) => {
                return Err(ProtoError::Relay { code: e.code, message: e.message, retry_after_ms: e.retry_after_ms })
            }
            Some(Body::Nack(n)) => {
                return Err(ProtoError::WrongEpoch {
                    channel: n.channel,
                    current_epoch: n.current_epoch,
                    last_seq: n.last_seq,
                })
            }
            Some(b) if b.is_intermediate() => reply.items.push(b),
            Some(b) => {
                reply.last = Some(b);
                return Ok(reply);
            }
            None => return Err(ProtoError::Malformed("frame without body".to_string())),
        }
    }
}

mod pipeline;
pub use pipeline::PendingReply;

fn close_code_of(err: &ConnectionError) -> Option<String> {
    match err {
        ConnectionError::ApplicationClosed(c) => {
            let s = String::from_utf8_lossy(&c.reason).to_string();
            if s.is_empty() {
                None
            } else {
                Some(s)
            }
        }
        _ => None,
    }
}

impl RelayConnection {
    /// Dials the relay, opens the control stream and starts the reader task.
    /// Assumes the relay's default frame cap; see [`RelayConnection::connect_with`].
    pub async fn connect(endpoint: &Endpoint, addr: &RelayAddr) -> Result<(RelayConnection, PushReceiver), ProtoError> {
        Self::connect_with(endpoint, addr, DEFAULT_MAX_FRAME_SIZE, Duration::from_secs(30)).await
    }

    /// Like [`RelayConnection::connect`] with an explicit frame cap and timeout (applies to the
    /// connection handshake and to each request).
    pub async fn connect_with(
        endpoint: &Endpoint,
        addr: &RelayAddr,
        max_frame: usize,
        timeout: Duration,
    ) -> Result<(RelayConnection, PushReceiver), ProtoError> {
        let conn = tokio::time::timeout(timeout, endpoint.connect(EndpointAddr::from(addr), ALPN))
            .await
            .map_err(|_| ProtoError::Timeout)?
            .map_err(|e| ProtoError::Transport(format!("connect: {e}")))?;
        let (send, recv) = conn.open_bi().await.map_err(|e| ProtoError::Transport(format!("open stream: {e}")))?;
        let inner = Arc::new(Inner {
            conn,
            send: tokio::sync::Mutex::new(send),
            pending: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            close_code: Mutex::new(None),
            max_frame,
            timeout,
        });
        let (push_tx, push_rx) = mpsc::unbounded_channel();
        tokio::spawn(reader_task(inner.clone(), recv, push_tx));
        Ok((RelayConnection { inner }, PushReceiver { rx: push_rx }))
    }

    /// The relay's close code (e.g. `SKYTALE_AUTH_TIMEOUT`) once the connection is closed.
    pub fn close_code(&self) -> Option<String> {
        lock(&self.inner.close_code).clone()
    }

    /// Waits until the connection is closed and returns the relay's close code, if any.
    pub async fn closed(&self) -> Option<String> {
        let err = self.inner.conn.closed().await;
        if let Some(c) = close_code_of(&err) {
            let mut g = lock(&self.inner.close_code);
            if g.is_none() {
                *g = Some(c);
            }
        }
        self.close_code()
    }

    /// True once the QUIC connection is closed (by either side or by a timeout).
    pub fn is_closed(&self) -> bool {
        self.inner.conn.close_reason().is_some()
    }

    /// Closes the connection.
    pub fn close(&self) {
        self.inner.conn.close(0u32.into(), b"bye");
    }

    /// Writes raw bytes on the control stream (for tests of malformed/oversize frames).
    pub async fn send_raw(&self, bytes: &[u8]) -> Result<(), ProtoError> {
        let mut s = self.inner.send.lock().await;
        s.write_all(bytes).await.map_err(|e| ProtoError::Transport(e.to_string()))
    }

    /// Sends a request and waits for its terminal reply (collecting intermediate frames).
    /// An `Error` reply becomes [`ProtoError::Relay`], a `Nack` becomes [`ProtoError::WrongEpoch`].
    pub async fn request(&self, body: Body) -> Result<Reply, ProtoError> {
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, mut rx) = mpsc::unbounded_channel();
        lock(&self.inner.pending).insert(id, tx);
        let frame = Frame::new(id, body);
        let res = async {
            let bytes = encode_frame(&frame, self.inner.max_frame)?;
            {
                let mut s = self.inner.send.lock().await;
                s.write_all(&bytes).await.map_err(|e| ProtoError::Transport(e.to_string()))?;
            }
            collect_reply(self, None, &mut rx).await
        };
        let out = match tokio::time::timeout(self.inner.timeout, res).await {
            Ok(r) => r,
            Err(_) => Err(ProtoError::Timeout),
        };
        lock(&self.inner.pending).remove(&id);
        out
    }

    /// `Auth{jwt, identity}` → [`AuthOk`]. Also used to refresh the token on a live connection.
    pub async fn auth(&self, jwt: &str, identity: &str) -> Result<AuthOk, ProtoError> {
        match self.request(Body::Auth(Auth { jwt: jwt.to_string(), identity: identity.to_string() })).await?.last {
            Some(Body::AuthOk(ok)) => Ok(ok),
            _ => Err(ProtoError::Unexpected("expected AuthOk")),
        }
    }

    /// `Ping` → `Pong`.
    pub async fn ping(&self) -> Result<(), ProtoError> {
        match self.request(Body::Ping(Ping {})).await?.last {
            Some(Body::Pong(_)) => Ok(()),
            _ => Err(ProtoError::Unexpected("expected Pong")),
        }
    }

    async fn channel_info(&self, body: Body) -> Result<ChannelInfo, ProtoError> {
        match self.request(body).await?.last {
            Some(Body::ChannelInfo(i)) => Ok(i),
            _ => Err(ProtoError::Unexpected("expected ChannelInfo")),
        }
    }

    /// `CreateChannel` → [`ChannelInfo`] (idempotent).
    pub async fn create_channel(&self, channel: &str) -> Result<ChannelInfo, ProtoError> {
        self.channel_info(Body::CreateChannel(CreateChannel { channel: channel.to_string() })).await
    }

    /// `ChannelState` → [`ChannelInfo`].
    pub async fn channel_state(&self, channel: &str) -> Result<ChannelInfo, ProtoError> {
        self.channel_info(Body::ChannelState(ChannelState { channel: channel.to_string() })).await
    }

    /// `Subscribe{channel, after_seq}` → [`ChannelInfo`]; replayed and live items arrive as pushes.
    pub async fn subscribe(&self, channel: &str, after_seq: u64) -> Result<ChannelInfo, ProtoError> {
        self.channel_info(Body::Subscribe(Subscribe { channel: channel.to_string(), after_seq })).await
    }

    /// `Unsubscribe{channel}`.
    pub async fn unsubscribe(&self, channel: &str) -> Result<(), ProtoError> {
        match self.request(Body::Unsubscribe(Unsubscribe { channel: channel.to_string() })).await?.last {
            Some(Body::Done(_)) => Ok(()),
            _ => Err(ProtoError::Unexpected("expected Done")),
        }
    }

    /// `Send` → [`Ack`] (or [`ProtoError::WrongEpoch`]).
    pub async fn send(
        &self,
        channel: &str,
        client_msg_id: &str,
        kind: Kind,
        epoch: u64,
        payload: Vec<u8>,
    ) -> Result<Ack, ProtoError> {
        match self
            .request(Body::Send(Send {
                channel: channel.to_string(),
                client_msg_id: client_msg_id.to_string(),
                kind: kind as i32,
                epoch,
                payload,
                invite_id: String::new(),
                invite_auth: Vec::new(),
            }))
            .await?
            .last
        {
            Some(Body::Ack(a)) => Ok(a),
            _ => Err(ProtoError::Unexpected("expected Ack")),
        }
    }

    /// `Send{kind: JoinRequest, invite_id, invite_auth}` → [`Ack`]. For a non-member holding an
    /// invite: no epoch check; the item is archived and delivered to the channel's members.
    pub async fn send_join_request(
        &self,
        channel: &str,
        client_msg_id: &str,
        invite_id: &str,
        invite_auth: Vec<u8>,
        payload: Vec<u8>,
    ) -> Result<Ack, ProtoError> {
        match self
            .request(Body::Send(Send {
                channel: channel.to_string(),
                client_msg_id: client_msg_id.to_string(),
                kind: Kind::JoinRequest as i32,
                epoch: 0,
                payload,
                invite_id: invite_id.to_string(),
                invite_auth,
            }))
            .await?
            .last
        {
            Some(Body::Ack(a)) => Ok(a),
            _ => Err(ProtoError::Unexpected("expected Ack")),
        }
    }

    async fn done(&self, body: Body) -> Result<Done, ProtoError> {
        match self.request(body).await?.last {
            Some(Body::Done(d)) => Ok(d),
            _ => Err(ProtoError::Unexpected("expected Done")),
        }
    }

    /// `CreateInvite` → `Done`: registers an invite for an existing channel of the token's org.
    pub async fn create_invite(&self, invite: CreateInvite) -> Result<(), ProtoError> {
        self.done(Body::CreateInvite(invite)).await.map(|_| ())
    }

    /// `UpdateInvite{invite_id, group_info}` → `Done`: replaces the invite's group info.
    pub async fn update_invite(&self, invite_id: &str, group_info: Vec<u8>) -> Result<(), ProtoError> {
        self.done(Body::UpdateInvite(UpdateInvite { invite_id: invite_id.to_string(), group_info })).await.map(|_| ())
    }

    /// `RevokeInvite{invite_id}` → `Done`: the invite becomes invalid.
    pub async fn revoke_invite(&self, invite_id: &str) -> Result<(), ProtoError> {
        self.done(Body::RevokeInvite(RevokeInvite { invite_id: invite_id.to_string() })).await.map(|_| ())
    }

    /// `FetchInvite{channel, invite_id, invite_auth}` → [`InviteInfo`] (validates the invite and
    /// counts a use for this identity, like a join request).
    pub async fn fetch_invite(
        &self,
        channel: &str,
        invite_id: &str,
        invite_auth: Vec<u8>,
    ) -> Result<InviteInfo, ProtoError> {
        match self
            .request(Body::FetchInvite(FetchInvite {
                channel: channel.to_string(),
                invite_id: invite_id.to_string(),
                invite_auth,
            }))
            .await?
            .last
        {
            Some(Body::InviteInfo(i)) => Ok(i),
            _ => Err(ProtoError::Unexpected("expected InviteInfo")),
        }
    }

    /// `Commit` → [`Ack`] with the new epoch (or [`ProtoError::WrongEpoch`]).
    pub async fn commit(&self, commit: Commit) -> Result<Ack, ProtoError> {
        match self.request(Body::Commit(commit)).await?.last {
            Some(Body::Ack(a)) => Ok(a),
            _ => Err(ProtoError::Unexpected("expected Ack")),
        }
    }

    /// `Fetch` → archived items with `seq > after_seq` (not your own) and the closing [`Done`].
    pub async fn fetch(&self, channel: &str, after_seq: u64, limit: u32) -> Result<(Vec<Deliver>, Done), ProtoError> {
        let reply = self.request(Body::Fetch(Fetch { channel: channel.to_string(), after_seq, limit })).await?;
        let items = reply
            .items
            .into_iter()
            .filter_map(|b| match b {
                Body::Deliver(d) => Some(d),
                _ => None,
            })
            .collect();
        match reply.last {
            Some(Body::Done(d)) => Ok((items, d)),
            _ => Err(ProtoError::Unexpected("expected Done")),
        }
    }

    /// `PublishKeyPackages` → number of key packages now held for this identity.
    pub async fn publish_key_packages(&self, key_packages: Vec<Vec<u8>>) -> Result<u64, ProtoError> {
        match self.request(Body::PublishKeyPackages(PublishKeyPackages { key_packages })).await?.last {
            Some(Body::Done(d)) => Ok(d.count),
            _ => Err(ProtoError::Unexpected("expected Done")),
        }
    }

    /// `CountKeyPackages` → number of key packages held for this identity.
    pub async fn count_key_packages(&self) -> Result<u64, ProtoError> {
        match self.request(Body::CountKeyPackages(CountKeyPackages {})).await?.last {
            Some(Body::Done(d)) => Ok(d.count),
            _ => Err(ProtoError::Unexpected("expected Done")),
        }
    }

    /// `ClaimKeyPackage{identity}` → the key package bytes (removed from the relay).
    pub async fn claim_key_package(&self, identity: &str) -> Result<Vec<u8>, ProtoError> {
        match self.request(Body::ClaimKeyPackage(ClaimKeyPackage { identity: identity.to_string() })).await?.last {
            Some(Body::KeyPackage(k)) => Ok(k.key_package),
            _ => Err(ProtoError::Unexpected("expected KeyPackage")),
        }
    }

    /// `FetchWelcomes` → queued welcomes (they stay queued until [`RelayConnection::ack_welcome`]).
    pub async fn fetch_welcomes(&self) -> Result<Vec<Welcome>, ProtoError> {
        let reply = self.request(Body::FetchWelcomes(FetchWelcomes {})).await?;
        Ok(reply
            .items
            .into_iter()
            .filter_map(|b| match b {
                Body::Welcome(w) => Some(w),
                _ => None,
            })
            .collect())
    }

    /// `AckWelcome{welcome_id}`: deletes the welcome from the relay.
    pub async fn ack_welcome(&self, welcome_id: u64) -> Result<(), ProtoError> {
        match self.request(Body::AckWelcome(AckWelcome { welcome_id })).await?.last {
            Some(Body::Done(_)) => Ok(()),
            _ => Err(ProtoError::Unexpected("expected Done")),
        }
    }
}

async fn reader_task(inner: Arc<Inner>, mut recv: RecvStream, push_tx: mpsc::UnboundedSender<Frame>) {
    let max = inner.max_frame + RELAY_FRAME_ALLOWANCE;
    loop {
        let frame = match read_frame_bytes(&mut recv, max).await {
            Ok(Some(bytes)) => match decode_frame(&bytes) {
                Ok(f) => f,
                Err(_) => break,
            },
            _ => break,
        };
        if let Some(Body::Error(e)) = &frame.body {
            if e.fatal {
                *lock(&inner.close_code) = Some(e.code.clone());
            }
        }
        if frame.request_id == 0 {
            if matches!(frame.body, Some(Body::Deliver(_))) {
                crate::probe::mark("recv.frame");
            }
            let _ = push_tx.send(frame);
            continue;
        }
        let terminal = frame.body.as_ref().map(|b| !b.is_intermediate()).unwrap_or(true);
        let mut pending = lock(&inner.pending);
        let id = frame.request_id;
        if let Some(tx) = pending.get(&id) {
            let _ = tx.send(frame);
        }
        if terminal {
            pending.remove(&id);
        }
    }
    // Stream ended: learn the close reason (bounded wait), then fail all pending requests.
    if let Ok(err) = tokio::time::timeout(Duration::from_secs(2), inner.conn.closed()).await {
        if let Some(c) = close_code_of(&err) {
            let mut g = lock(&inner.close_code);
            if g.is_none() {
                *g = Some(c);
            }
        }
    }
    lock(&inner.pending).clear();
    drop(push_tx);
}
