//! Request handlers of an authenticated session. Storage work goes to the storage thread,
//! ordering and membership (`CreateChannel`, `Send`, `Commit`, join requests, `Subscribe`) to
//! the channel's actor. Reads (`Subscribe` replay, `Fetch`) are in [`super::reads`].
//!
//! Every request that touches a channel needs the caller to be in the channel's roster
//! (`SKYTALE_NOT_A_MEMBER` otherwise, and nothing changes), except a join request and
//! `FetchInvite` with a valid invite, and an external commit with a used invite.

use std::collections::HashSet;

use bytes::Bytes;
use skytale_proto::codec::encode_frame;
use skytale_proto::frames::*;
use skytale_proto::names::{channel_org, validate_identity, MAX_CLIENT_MSG_ID_LEN};
use skytale_proto::{ErrorCode, RELAY_FRAME_ALLOWANCE};
use tokio::sync::{mpsc, oneshot};

use super::{wire, Session};
use crate::channel::{require_member, Cmd, Item, Outcome, Reply};
use crate::error::{RelayError, Result};
use crate::invites::{auth_hash, use_invite, validate_invite_id, MAX_INVITE_AUTH_LEN};
use crate::metrics::{Metrics, Refusal};
use crate::store::{InviteRow, Store};
use crate::{now_ms, Relay};

/// Max recipients of one welcome.
const MAX_WELCOME_RECIPIENTS: usize = 1000;
/// Items (`Send`, `Commit`) one connection may have in flight at its channel actors.
pub(super) const MAX_IN_FLIGHT: usize = 256;

fn error_body(e: &RelayError) -> Body {
    let code = e.code();
    Body::Error(Error { code: code.as_str().to_string(), message: e.client_message(), fatal: false, retry_after_ms: 0 })
}

fn done(count: u64) -> Body {
    Body::Done(Done { count, ..Default::default() })
}

/// Distinct, valid identities of a commit's `added`/`removed` list (at most `cap`).
fn identity_list(list: Vec<String>, cap: usize, what: &str) -> Result<Vec<String>> {
    if list.len() > cap {
        return Err(wire(ErrorCode::InvalidRequest, format!("a commit may list at most {cap} {what} identities")));
    }
    let mut seen = HashSet::with_capacity(list.len());
    let mut out = Vec::with_capacity(list.len());
    for who in list {
        validate_identity(&who)?;
        if seen.insert(who.clone()) {
            out.push(who);
        }
    }
    Ok(out)
}

/// An invite by id, for `UpdateInvite`/`RevokeInvite`: it must exist
/// (`SKYTALE_INVITE_INVALID`), belong to the caller's org (`SKYTALE_FORBIDDEN_CHANNEL`), and the
/// caller must be a member of its channel (`SKYTALE_NOT_A_MEMBER`). Runs on the storage thread.
fn invite_of_member(relay: &Relay, s: &dyn Store, org: &str, me: &str, id: &str) -> Result<InviteRow> {
    let inv = s.invite(id)?.ok_or_else(|| wire(ErrorCode::InviteInvalid, "invalid invite"))?;
    if channel_org(&inv.channel)? != org {
        return Err(wire(ErrorCode::ForbiddenChannel, "channel belongs to another org than the token"));
    }
    require_member(relay, s, &inv.channel, me)?;
    Ok(inv)
}

impl Session {
    pub(super) fn check_channel(&self, channel: &str) -> Result<()> {
        let org = channel_org(channel)?;
        match &self.peer {
            Some(p) if p.org == org => Ok(()),
            _ => Err(wire(ErrorCode::ForbiddenChannel, "channel belongs to another org than the token")),
        }
    }

    pub(super) fn me(&self) -> (String, String) {
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
                let (tx, rx) = oneshot::channel();
                relay.channels.send(&relay, &c.channel, Cmd::Create { org, identity: me, reply: tx });
                let (row, created) =
                    rx.await.map_err(|_| RelayError::Storage("channel actor stopped".to_string()))??;
                let info = ChannelInfo { channel: c.channel, epoch: row.epoch, last_seq: row.last_seq, created };
                Ok(self.reply(rid, Body::ChannelInfo(info)).await)
            }
            Body::ChannelState(c) => {
                self.check_channel(&c.channel)?;
                let name = c.channel.clone();
                let r = relay.clone();
                let row = storage
                    .call(move |s| {
                        let row =
                            s.channel(&name)?.ok_or_else(|| wire(ErrorCode::ChannelNotFound, "no such channel"))?;
                        require_member(&r, s, &name, &me)?;
                        Ok(row)
                    })
                    .await?;
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
                let r = relay.clone();
                storage
                    .call(move |s| {
                        let inv = invite_of_member(&r, s, &org, &me, &u.invite_id)?;
                        if inv.revoked {
                            return Err(wire(ErrorCode::InviteInvalid, "invalid invite"));
                        }
                        s.update_invite(&inv.id, &u.group_info)
                    })
                    .await?;
                Ok(self.reply(rid, done(0)).await)
            }
            Body::RevokeInvite(rv) => {
                let r = relay.clone();
                storage
                    .call(move |s| {
                        let inv = invite_of_member(&r, s, &org, &me, &rv.invite_id)?;
                        s.revoke_invite(&inv.id)
                    })
                    .await?;
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
                let limits = relay.config.limits.clone();
                let r = relay.clone();
                let count = storage
                    .call(move |s| {
                        let n = p.key_packages.len() as u64;
                        let have = s.count_key_packages(&org, &me)?;
                        let total = have + n;
                        let max = limits.max_key_packages;
                        if total > max {
                            return Err(wire(
                                ErrorCode::KeyPackageLimit,
                                format!("at most {max} key packages per identity"),
                            ));
                        }
                        let org_max = limits.max_key_packages_per_org;
                        if s.org_usage(&org)?.key_packages.saturating_add(n) > org_max {
                            return Err(r.metrics.refuse(
                                Refusal::QuotaKeyPackages,
                                format!("the org's key-package quota ({org_max}) is used up"),
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

    fn check_item(&self, channel: &str, client_msg_id: &str) -> Result<()> {
        self.check_channel(channel)?;
        if client_msg_id.len() > MAX_CLIENT_MSG_ID_LEN {
            return Err(wire(ErrorCode::InvalidRequest, "client_msg_id too long"));
        }
        Ok(())
    }

    async fn create_invite(&mut self, rid: u64, c: CreateInvite) -> Result<bool> {
        self.check_channel(&c.channel)?;
        validate_invite_id(&c.invite_id)?;
        let limits = self.relay.config.limits.clone();
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
        let relay = self.relay.clone();
        self.relay
            .storage
            .call(move |s| {
                require_member(&relay, s, &inv.channel, &me)?;
                let max = limits.max_invites_per_org;
                if s.org_usage(&inv.org)?.invites >= max {
                    return Err(relay
                        .metrics
                        .refuse(Refusal::QuotaInvites, format!("the org's invite quota ({max}) is used up")));
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
        let out = self.push_tx.clone();
        let max = relay.config.limits.max_frame_bytes + RELAY_FRAME_ALLOWANCE;
        // Answered on the actor's task, straight into the push queue (no task per item).
        let reply = Reply::new(move |res| {
            let body = match res {
                Ok(Outcome::Ack(a)) => Body::Ack(a),
                Ok(Outcome::Nack(n)) => Body::Nack(n),
                Err(e) => error_body(&e),
            };
            let Ok(bytes) = encode_frame(&Frame::new(rid, body), max) else { return };
            match out.try_send(bytes) {
                Ok(()) => drop(permit),
                // The queue is full of pushes: wait for room on a task of its own (the actor
                // must not wait for one connection), then release the in-flight slot.
                Err(mpsc::error::TrySendError::Full(bytes)) => {
                    if let Ok(rt) = tokio::runtime::Handle::try_current() {
                        rt.spawn(async move {
                            // The session may end meanwhile; then nobody waits for the reply.
                            let _ = out.send(bytes).await;
                            drop(permit);
                        });
                    }
                }
                // The session ended: nobody waits for the reply.
                Err(mpsc::error::TrySendError::Closed(_)) => {}
            }
        });
        relay.channels.send(&relay, channel, Cmd::Item(Box::new(item), reply));
        Ok(true)
    }

    /// `Send`: Application/Proposal (epoch-checked, members only) or JoinRequest
    /// (invite-checked).
    async fn send_item(&mut self, rid: u64, m: Send) -> Result<bool> {
        let kind = Kind::try_from(m.kind).unwrap_or(Kind::Unspecified);
        if kind == Kind::Application {
            skytale_proto::probe::mark("relay.session");
        }
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
            welcome: None,
            added: Vec::new(),
            removed: Vec::new(),
            invite_id: String::new(),
        };
        self.order(rid, &m.channel, item).await
    }

    /// `Commit`: checks the declared roster changes (valid identities, at most
    /// `max_commit_added` each, welcome recipients among `added`), then orders it.
    async fn commit(&mut self, rid: u64, c: Commit) -> Result<bool> {
        self.check_item(&c.channel, &c.client_msg_id)?;
        let cap = self.relay.config.limits.max_commit_added;
        let added = identity_list(c.added, cap, "added")?;
        let removed = identity_list(c.removed, cap, "removed")?;
        let welcome = match c.welcome {
            Some(w) => {
                if w.recipients.is_empty() || w.recipients.len() > MAX_WELCOME_RECIPIENTS {
                    return Err(wire(
                        ErrorCode::InvalidRequest,
                        format!("a welcome needs 1..={MAX_WELCOME_RECIPIENTS} recipients"),
                    ));
                }
                let recipients = identity_list(w.recipients, MAX_WELCOME_RECIPIENTS, "welcome recipient")?;
                let added_set: HashSet<&str> = added.iter().map(String::as_str).collect();
                if let Some(r) = recipients.iter().find(|r| !added_set.contains(r.as_str())) {
                    return Err(wire(
                        ErrorCode::InvalidRequest,
                        format!("welcome recipient {r} is not among the commit's added identities"),
                    ));
                }
                Some((recipients, Bytes::from(w.payload)))
            }
            None => None,
        };
        if !c.invite_id.is_empty() {
            validate_invite_id(&c.invite_id)?;
        }
        let (org, me) = self.me();
        let item = Item {
            org,
            sender: me,
            client_msg_id: c.client_msg_id,
            kind: Kind::Commit,
            epoch: c.epoch,
            payload: Bytes::from(c.payload),
            invite: None,
            welcome,
            added,
            removed,
            invite_id: c.invite_id,
        };
        self.order(rid, &c.channel, item).await
    }
}
