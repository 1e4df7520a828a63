//! Request handlers of an authenticated session. Storage work goes to the storage thread,
//! ordering (`Send`, `Commit`, join requests, `Subscribe`) to the channel's actor.

use bytes::Bytes;
use skytale_proto::codec::encode_frame;
use skytale_proto::frames::*;
use skytale_proto::names::{channel_org, validate_identity, MAX_CLIENT_MSG_ID_LEN};
use skytale_proto::{ErrorCode, RELAY_FRAME_ALLOWANCE};
use tokio::sync::oneshot;

use super::{wire, Session};
use crate::channel::{Cmd, Item, Outcome};
use crate::error::{RelayError, Result};
use crate::hub::Subscriber;
use crate::invites::{auth_hash, use_invite, validate_invite_id, MAX_INVITE_AUTH_LEN};
use crate::metrics::Metrics;
use crate::now_ms;
use crate::store::InviteRow;

/// Max recipients of one welcome.
const MAX_WELCOME_RECIPIENTS: usize = 1000;
/// Rows read per storage round during replay.
const REPLAY_PAGE: usize = 256;
/// Items (`Send`, `Commit`) one connection may have in flight at its channel actors.
pub(super) const MAX_IN_FLIGHT: usize = 256;

fn error_body(e: &RelayError) -> Body {
    let code = e.code();
    Body::Error(Error { code: code.as_str().to_string(), message: e.client_message(), fatal: false, retry_after_ms: 0 })
}

fn done(count: u64) -> Body {
    Body::Done(Done { count, ..Default::default() })
}

impl Session {
    fn check_channel(&self, channel: &str) -> Result<()> {
        let org = channel_org(channel)?;
        match &self.peer {
            Some(p) if p.org == org => Ok(()),
            _ => Err(wire(ErrorCode::ForbiddenChannel, "channel belongs to another org than the token")),
        }
    }

    fn me(&self) -> (String, String) {
        self.peer.as_ref().map(|p| (p.org.clone(), p.identity.clone())).unwrap_or_default()
    }

    pub(super) async fn dispatch(&mut self, rid: u64, body: Body) -> Result<bool> {
        let (org, me) = self.me();
        let relay = self.relay.clone();
        let storage = &relay.storage;
        match body {
            Body::Auth(a) => {
                self.authenticate(rid, a).await?;
                Ok(true)
            }
            Body::Ping(_) => Ok(self.reply(rid, Body::Pong(Pong {})).await),
            Body::CreateChannel(c) => {
                self.check_channel(&c.channel)?;
                let name = c.channel.clone();
                let (row, created) = storage.call(move |s| s.ensure_channel(&name, &org, now_ms())).await?;
                if created {
                    tracing::info!(channel = %c.channel, "channel created");
                }
                let info = ChannelInfo { channel: c.channel, epoch: row.epoch, last_seq: row.last_seq, created };
                Ok(self.reply(rid, Body::ChannelInfo(info)).await)
            }
            Body::ChannelState(c) => {
                self.check_channel(&c.channel)?;
                let name = c.channel.clone();
                let row = storage
                    .call(move |s| s.channel(&name))
                    .await?
                    .ok_or_else(|| wire(ErrorCode::ChannelNotFound, "no such channel"))?;
                let info = ChannelInfo { channel: c.channel, epoch: row.epoch, last_seq: row.last_seq, created: false };
                Ok(self.reply(rid, Body::ChannelInfo(info)).await)
            }
            Body::Subscribe(s) => self.subscribe(rid, s).await,
            Body::Unsubscribe(u) => {
                self.check_channel(&u.channel)?;
                if self.subscribed.remove(&u.channel) {
                    relay.channels.unsubscribe(&u.channel, self.conn_id);
                }
                Ok(self.reply(rid, done(0)).await)
            }
            Body::Send(m) => self.send_item(rid, m).await,
            Body::Commit(c) => self.commit(rid, c).await,
            Body::Fetch(f) => self.fetch(rid, f).await,
            Body::CreateInvite(c) => self.create_invite(rid, c).await,
            Body::UpdateInvite(u) => {
                if u.group_info.len() > relay.config.limits.max_frame_bytes {
                    return Err(wire(ErrorCode::InvalidRequest, "group_info exceeds the frame cap"));
                }
                let inv = self.own_invite(&u.invite_id).await?;
                if inv.revoked {
                    return Err(wire(ErrorCode::InviteInvalid, "invalid invite"));
                }
                storage.call(move |s| s.update_invite(&inv.id, &u.group_info)).await?;
                Ok(self.reply(rid, done(0)).await)
            }
            Body::RevokeInvite(r) => {
                let inv = self.own_invite(&r.invite_id).await?;
                storage.call(move |s| s.revoke_invite(&inv.id)).await?;
                tracing::info!(conn = self.conn_id, "invite revoked");
                Ok(self.reply(rid, done(0)).await)
            }
            Body::FetchInvite(f) => {
                self.check_channel(&f.channel)?;
                let r = relay.clone();
                let (inv, uses, row) = storage
                    .call(move |s| use_invite(&r.metrics, s, &f.channel, &f.invite_id, &f.invite_auth, &me))
                    .await?;
                let info = InviteInfo {
                    channel: inv.channel,
                    invite_id: inv.id,
                    group_info: inv.group_info,
                    expires_at: inv.expires_at,
                    max_uses: inv.max_uses,
                    uses,
                    epoch: row.epoch,
                    last_seq: row.last_seq,
                };
                Ok(self.reply(rid, Body::InviteInfo(info)).await)
            }
            Body::PublishKeyPackages(p) => {
                if p.key_packages.iter().any(|k| k.is_empty()) {
                    return Err(wire(ErrorCode::InvalidRequest, "empty key package"));
                }
                let max = relay.config.limits.max_key_packages;
                let count = storage
                    .call(move |s| {
                        let have = s.count_key_packages(&org, &me)?;
                        let total = have + p.key_packages.len() as u64;
                        if total > max {
                            return Err(wire(
                                ErrorCode::KeyPackageLimit,
                                format!("at most {max} key packages per identity"),
                            ));
                        }
                        s.add_key_packages(&org, &me, &p.key_packages, now_ms())?;
                        Ok(total)
                    })
                    .await?;
                Ok(self.reply(rid, done(count)).await)
            }
            Body::CountKeyPackages(_) => {
                let count = storage.call(move |s| s.count_key_packages(&org, &me)).await?;
                Ok(self.reply(rid, done(count)).await)
            }
            Body::ClaimKeyPackage(c) => {
                validate_identity(&c.identity)?;
                let who = c.identity.clone();
                let kp = storage
                    .call(move |s| s.claim_key_package(&org, &who))
                    .await?
                    .ok_or_else(|| wire(ErrorCode::KeyPackageNotFound, "no key package available for this identity"))?;
                let body = Body::KeyPackage(KeyPackage { identity: c.identity, key_package: kp });
                Ok(self.reply(rid, body).await)
            }
            Body::FetchWelcomes(_) => {
                let n = self.push_pending_welcomes(rid).await?;
                Ok(self.reply(rid, done(n)).await)
            }
            Body::AckWelcome(a) => {
                let deleted = storage.call(move |s| s.delete_welcome(&org, &me, a.welcome_id)).await?;
                Ok(self.reply(rid, done(u64::from(deleted))).await)
            }
            _ => Err(wire(ErrorCode::MalformedFrame, "not a client request")),
        }
    }

    pub(super) async fn push_pending_welcomes(&mut self, rid: u64) -> Result<u64> {
        let (org, me) = self.me();
        let welcomes = self.relay.storage.call(move |s| s.welcomes_for(&org, &me)).await?;
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
        // The actor registers us between batches and answers with the high-water mark: live
        // items (> hw) queue up in the push queue while we replay (after_seq, hw] directly.
        let sub = Subscriber {
            identity: me.clone(),
            tx: self.push_tx.clone(),
            ctl: self.ctl.clone(),
            akid: self.peer.as_ref().and_then(|p| p.akid.clone()),
            iat: self.peer.as_ref().map(|p| p.iat).unwrap_or(0),
        };
        let (tx, rx) = oneshot::channel();
        let cmd = Cmd::Subscribe { org, conn_id: self.conn_id, sub, reply: tx };
        // Remembered first, so the subscription is dropped with the session even if the
        // session ends while waiting for the actor.
        self.subscribed.insert(s.channel.clone());
        relay.channels.send(&relay, &s.channel, cmd);
        let (row, created) = rx.await.map_err(|_| RelayError::Storage("channel actor stopped".to_string()))??;
        let info = ChannelInfo { channel: s.channel.clone(), epoch: row.epoch, last_seq: row.last_seq, created };
        if !self.reply(rid, Body::ChannelInfo(info)).await {
            return Ok(false);
        }
        let mut after = s.after_seq;
        while after < row.last_seq {
            let (name, me, hw) = (s.channel.clone(), me.clone(), row.last_seq);
            let page = relay.storage.call(move |st| st.read_range(&name, after, hw, &me, REPLAY_PAGE)).await?;
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
        let (name, after) = (f.channel.clone(), f.after_seq);
        let (mut items, row) = self
            .relay
            .storage
            .call(move |s| {
                let row = s.channel(&name)?.ok_or_else(|| wire(ErrorCode::ChannelNotFound, "no such channel"))?;
                Ok((s.read_range(&name, after, u64::MAX >> 1, &me, limit + 1)?, row))
            })
            .await?;
        let more = items.len() > limit;
        items.truncate(limit);
        let last_seq =
            if more { items.last().map(|d| d.seq).unwrap_or(f.after_seq) } else { row.last_seq.max(f.after_seq) };
        let count = items.len() as u64;
        for d in items {
            if !self.reply(rid, Body::Deliver(d)).await {
                return Ok(false);
            }
        }
        Ok(self.reply(rid, Body::Done(Done { count, last_seq, more })).await)
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
    async fn own_invite(&self, invite_id: &str) -> Result<InviteRow> {
        let id = invite_id.to_string();
        let inv = self
            .relay
            .storage
            .call(move |s| s.invite(&id))
            .await?
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
        let (channel, max_uses, expires_at) = (inv.channel.clone(), inv.max_uses, inv.expires_at);
        self.relay
            .storage
            .call(move |s| {
                if s.channel(&inv.channel)?.is_none() {
                    return Err(wire(ErrorCode::ChannelNotFound, "no such channel"));
                }
                if !s.create_invite(&inv, &me, now_ms())? {
                    return Err(wire(ErrorCode::InvalidRequest, "invite id already exists"));
                }
                Ok(())
            })
            .await?;
        Metrics::add(&self.relay.metrics.invites_created, 1);
        tracing::info!(conn = self.conn_id, channel = %channel, max_uses, expires_at, "invite created");
        Ok(self.reply(rid, done(0)).await)
    }

    /// Hands an item to its channel's actor and returns at once: the reply (`Ack`, `Nack` or
    /// `Error`) is written through the push queue when the actor answers, so one connection
    /// can have up to [`MAX_IN_FLIGHT`] items in flight (they batch into group commits).
    /// Items of one connection reach the actor in arrival order.
    async fn order(&mut self, rid: u64, channel: &str, item: Item) -> Result<bool> {
        let relay = self.relay.clone();
        let permit = self
            .in_flight
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| RelayError::Storage("session closing".to_string()))?;
        let (tx, rx) = oneshot::channel();
        relay.channels.send(&relay, channel, Cmd::Item(item, tx));
        let out = self.push_tx.clone();
        let max = relay.config.limits.max_frame_bytes + RELAY_FRAME_ALLOWANCE;
        tokio::spawn(async move {
            let body = match rx.await {
                Ok(Ok(Outcome::Ack(a))) => Body::Ack(a),
                Ok(Ok(Outcome::Nack(n))) => Body::Nack(n),
                Ok(Err(e)) => error_body(&e),
                Err(_) => error_body(&RelayError::Storage("channel actor stopped".to_string())),
            };
            if let Ok(bytes) = encode_frame(&Frame::new(rid, body), max) {
                let _ = out.send(bytes).await;
            }
            drop(permit);
        });
        Ok(true)
    }

    /// `Send`: Application/Proposal (epoch-checked) or JoinRequest (invite-checked).
    async fn send_item(&mut self, rid: u64, m: Send) -> Result<bool> {
        let kind = Kind::try_from(m.kind).unwrap_or(Kind::Unspecified);
        self.check_item(&m.channel, &m.client_msg_id)?;
        let invite = if kind == Kind::JoinRequest {
            Some((m.invite_id, m.invite_auth))
        } else {
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
            None
        };
        let (org, me) = self.me();
        let item = Item {
            org,
            sender: me,
            client_msg_id: m.client_msg_id,
            kind,
            epoch: m.epoch,
            payload: Bytes::from(m.payload),
            invite,
            welcomes: Vec::new(),
        };
        self.order(rid, &m.channel, item).await
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
        let item = Item {
            org,
            sender: me,
            client_msg_id: c.client_msg_id,
            kind: Kind::Commit,
            epoch: c.epoch,
            payload: Bytes::from(c.payload),
            invite: None,
            welcomes,
        };
        self.order(rid, &c.channel, item).await
    }
}
