//! One client connection: accept, authenticate within the auth timeout, then serve requests in
//! order while forwarding pushes (deliveries, welcomes) from the hub. Enforces the connection
//! caps (relay-wide, per IP, unauthenticated, per org: [`crate::limits`]), the frame cap, rate
//! limit, idle timeout, token expiry and slow-consumer limit. Never logs tokens or payloads.
//! Request handlers live in [`requests`]; channel ordering and membership are delegated to the
//! channel actors, reads to the storage thread.

mod reads;
mod requests;
mod send_order;

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use iroh::endpoint::{Incoming, IncomingAddr, RecvStream, SendStream};
use skytale_proto::codec::{decode_frame, encode_frame, read_frame_bytes};
use skytale_proto::frames::*;
use skytale_proto::names::validate_identity;
use skytale_proto::{ErrorCode, ProtoError, RELAY_FRAME_ALLOWANCE};
use tokio::sync::{mpsc, Notify, Semaphore};
use tokio::time::Instant;

use crate::error::{RelayError, Result};
use crate::hub::{SessionCtl, Subscriber};
use crate::limits::ConnSlot;
use crate::metrics::{Metrics, Refusal};
use crate::{now_ms, Relay};

pub use crate::invites::{MAX_INVITE_AUTH_LEN, MAX_INVITE_ID_LEN};

struct Guard {
    relay: Arc<Relay>,
}

impl Drop for Guard {
    fn drop(&mut self) {
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
    /// Channels this connection subscribed to (unsubscribed when it ends).
    subscribed: HashSet<String>,
    /// Bounds the items in flight at channel actors (replies come through the push queue).
    in_flight: Arc<Semaphore>,
    /// This connection's place in the per-IP / per-org / unauthenticated counts.
    slot: Option<ConnSlot>,
    /// Sends held back behind a rate-limited one of the same channel (order of a pipeline).
    send_order: send_order::SendOrder,
}

impl Drop for Session {
    fn drop(&mut self) {
        if let Some(p) = &self.peer {
            self.relay.online.remove(&p.org, &p.identity, self.conn_id);
        }
        for ch in self.subscribed.drain() {
            self.relay.channels.unsubscribe(&ch, self.conn_id);
        }
    }
}

fn wire(code: ErrorCode, msg: impl Into<String>) -> RelayError {
    RelayError::wire(code, msg)
}

/// Handles one incoming QUIC connection to completion.
pub async fn handle_incoming(relay: Arc<Relay>, incoming: Incoming, shutdown: Arc<Notify>) {
    let remote_ip = match incoming.remote_addr() {
        IncomingAddr::Ip(addr) => Some(addr.ip()),
        _ => None,
    };
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
    let _guard = Guard { relay: relay.clone() };
    Metrics::add(&relay.metrics.connections_total, 1);
    let auth_deadline = Instant::now() + Duration::from_millis(limits.auth_timeout_ms);
    // Admission right after the handshake: the connection counts (per IP, unauthenticated)
    // from now on, also while the client has not opened its stream yet.
    let admitted = if open as usize >= limits.max_connections {
        Err(Refusal::ConnectionsRelay)
    } else {
        relay.connections.open(remote_ip, &limits)
    };
    let slot = match admitted {
        Ok(slot) => Some(slot),
        Err(why) => {
            Metrics::add(&relay.metrics.connections_refused, 1);
            relay.metrics.count_refusal(why);
            tracing::debug!(reason = why.reason(), "connection refused");
            None
        }
    };

    let (send, recv) = match tokio::time::timeout_at(auth_deadline, conn.accept_bi()).await {
        Ok(Ok(s)) => s,
        Ok(Err(_)) => return,
        Err(_) => {
            let code = if slot.is_some() { ErrorCode::AuthTimeout } else { ErrorCode::TooManyConnections };
            if slot.is_some() {
                Metrics::add(&relay.metrics.auth_failures, 1);
            }
            conn.close(1u32.into(), code.as_str().as_bytes());
            return;
        }
    };
    let (push_tx, push_rx) = mpsc::channel(limits.outbound_queue);
    let refused = slot.is_none();
    let mut s = Session {
        relay: relay.clone(),
        conn: conn.clone(),
        send,
        conn_id,
        ctl: Arc::new(SessionCtl::default()),
        push_tx,
        peer: None,
        subscribed: HashSet::new(),
        in_flight: Arc::new(Semaphore::new(requests::MAX_IN_FLIGHT)),
        slot,
        send_order: send_order::SendOrder::default(),
    };
    if refused {
        s.fatal(0, ErrorCode::TooManyConnections, "connection limit reached").await;
        return;
    }
    let (in_tx, in_rx) = mpsc::channel(16);
    let reader = tokio::spawn(reader_task(recv, limits.max_frame_bytes, in_tx, relay.clone()));
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
                let frame = decode_frame(&bytes).map_err(RelayError::from);
                if let Ok(Frame { body: Some(Body::Send(s)), .. }) = &frame {
                    if s.kind == Kind::Application as i32 {
                        skytale_proto::probe::mark("relay.read");
                    }
                }
                frame
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
            Body::Error(Error { code: code.as_str().to_string(), message, fatal: code.is_fatal(), retry_after_ms }),
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
            if e.code() != ErrorCode::TooManyConnections {
                Metrics::add(&self.relay.metrics.auth_failures, 1);
            }
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
        let exp_ms = exp.saturating_add(self.relay.config.auth.leeway_secs).saturating_mul(1000);
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
                return Err(wire(ErrorCode::AuthInvalid, "re-auth must keep the same org and identity"));
            }
        } else {
            if let Some(slot) = self.slot.as_mut() {
                slot.authenticate(&claims.org, &self.relay.config.limits).map_err(|why| {
                    Metrics::add(&self.relay.metrics.connections_refused, 1);
                    self.relay.metrics.refuse(why, format!("connection limit of the org reached ({})", why.reason()))
                })?;
            }
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
        self.relay.online.register(&claims.org, &identity, self.conn_id, sub);
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
            self.fatal(rid, ErrorCode::MalformedFrame, "requests need a non-zero request_id and a client body").await;
            return false;
        }
        let (org, identity) = match &self.peer {
            Some(p) => (p.org.clone(), p.identity.clone()),
            None => return false,
        };
        let now = Instant::now();
        let held = match &body {
            Body::Send(s) => self.send_order.admit(&s.channel, &s.client_msg_id, now),
            _ => Ok(()),
        };
        if let Err(retry) = held.and_then(|()| self.relay.rate_check(&org, &identity)) {
            if let Body::Send(s) = &body {
                self.send_order.refused(&s.channel, &s.client_msg_id, now);
            }
            Metrics::add(&self.relay.metrics.rate_limited, 1);
            self.relay.metrics.count_refusal(Refusal::RateLimited);
            return self.error(rid, ErrorCode::RateLimited, "too many frames per second".to_string(), retry).await;
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
            return self.error(rid, ErrorCode::ScopeForbidden, format!("a channels:r token cannot {name}"), 0).await;
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
}
