//! Commits: first commit at the current epoch wins; who may commit, and the roster changes a
//! commit makes.
//!
//! - A **member** (in the roster) may commit. Its declared `added` identities join the roster
//!   with `since_seq` = the commit's seq (they read only what comes after the commit that added
//!   them); its `removed` identities leave it, and their live subscriptions end at once. The
//!   welcome, stored once, is queued for its recipients (a subset of `added`, checked by the
//!   session).
//! - A **non-member** may commit only as an external join: `invite_id` names an invite of this
//!   channel that this identity has used (`FetchInvite` or a join request proved the invite's
//!   authenticator), that is neither revoked nor expired, and the commit adds exactly the
//!   committer and removes nobody. It joins the roster like an added member.
//! - Anything else is `SKYTALE_NOT_A_MEMBER` and changes nothing.
//!
//! The relay cannot see MLS membership or the group's policy (both are encrypted): the roster
//! is what authenticated committers declared. Members check every commit against the group's
//! policy and reject bogus ones; a bogus addition only lets an identity fetch ciphertext.

use skytale_proto::codec::encode_frame;
use skytale_proto::frames::{Ack, Body, Frame, Nack, Welcome};
use skytale_proto::ErrorCode;

use super::{busy, check_archive_quota, dup_ack, wire, Actor, Item, Outcome, MAX_CONFLICTS};
use crate::error::{RelayError, Result};
use crate::metrics::{Metrics, Refusal};
use crate::now_ms;
use crate::store::Store;
use crate::Relay;

/// Checks an external commit's invite: used by `identity`, of this channel, not revoked, not
/// expired. Someone who never used the invite learns nothing about it (`SKYTALE_NOT_A_MEMBER`).
fn check_external_invite(relay: &Relay, s: &dyn Store, channel: &str, invite_id: &str, identity: &str) -> Result<()> {
    let not_member = || {
        relay.metrics.refuse(
            Refusal::NotAMember,
            "a non-member may only commit an external join with an invite it used (FetchInvite or a join request)",
        )
    };
    let Some(inv) = s.invite(invite_id)? else {
        return Err(not_member());
    };
    if inv.channel != channel || !s.invite_used_by(&inv.id, identity)? {
        return Err(not_member());
    }
    if inv.revoked {
        Metrics::add(&relay.metrics.invite_refusals, 1);
        return Err(wire(ErrorCode::InviteInvalid, "invalid invite"));
    }
    if now_ms() / 1000 >= inv.expires_at {
        Metrics::add(&relay.metrics.invite_refusals, 1);
        return Err(wire(ErrorCode::InviteExpired, "the invite has expired"));
    }
    Ok(())
}

impl Actor {
    /// `Commit`: who may commit (see the module docs), then first commit at the current epoch
    /// wins (the channel moves to epoch + 1; the welcome and the roster changes are written in
    /// the same transaction); others are nacked.
    pub(super) async fn commit(&mut self, item: Item) -> Result<Outcome> {
        for _ in 0..MAX_CONFLICTS {
            if let Some(outcome) = self.try_commit(&item).await? {
                return Ok(outcome);
            }
        }
        Err(busy(&self.name))
    }

    /// One attempt; `None` if a cluster store reported that the channel moved meanwhile.
    async fn try_commit(&mut self, item: &Item) -> Result<Option<Outcome>> {
        if !self.exists() || self.member(&item.sender).is_none() {
            // maybe created, or the sender added, on another relay node a moment ago
            self.roster = None;
            self.load_roster().await?;
        }
        if !self.exists() {
            return Err(wire(ErrorCode::ChannelNotFound, "no such channel: create it first (CreateChannel)"));
        }
        let external = self.member(&item.sender).is_none();
        if external
            && (item.invite_id.is_empty()
                || item.added.as_slice() != std::slice::from_ref(&item.sender)
                || !item.removed.is_empty()
                || item.welcome.is_some())
        {
            return Err(self.relay.metrics.refuse(
                Refusal::NotAMember,
                format!(
                    "{} is not a member of {}; an external join adds exactly its committer",
                    item.sender, self.name
                ),
            ));
        }
        let (name, org, me, cmid) =
            (self.name.clone(), item.org.clone(), item.sender.clone(), item.client_msg_id.clone());
        let invite_id = item.invite_id.clone();
        let recipients: Vec<String> = item.welcome.as_ref().map(|(r, _)| r.clone()).unwrap_or_default();
        let size = item.payload.len() as u64 + item.welcome.as_ref().map(|(_, p)| p.len() as u64).unwrap_or(0);
        let relay = self.relay.clone();
        let epoch = item.epoch;
        let checked = self
            .relay
            .storage
            .call(move |s| {
                if external {
                    check_external_invite(&relay, s, &name, &invite_id, &me)?;
                }
                let row = s.channel(&name)?.ok_or_else(|| wire(ErrorCode::ChannelNotFound, "no such channel"))?;
                if let Some(d) = s.find_dup(&name, &me, &cmid)? {
                    return Ok(Err(dup_ack(&name, d)));
                }
                if epoch != row.epoch {
                    return Ok(Err(Outcome::Nack(Nack {
                        channel: name.clone(),
                        current_epoch: row.epoch,
                        last_seq: row.last_seq,
                    })));
                }
                let limit = relay.config.limits.max_pending_welcomes;
                for r in &recipients {
                    if s.pending_welcomes(&org, r)? >= limit {
                        return Err(wire(
                            ErrorCode::RecipientQueueFull,
                            format!("welcome queue of recipient {r} is full"),
                        ));
                    }
                }
                check_archive_quota(&relay, s, &org, size)?;
                Ok(Ok(row))
            })
            .await?;
        let row = match checked {
            Err(outcome) => {
                if matches!(outcome, Outcome::Nack(_)) {
                    Metrics::add(&self.relay.metrics.commits_nacked, 1);
                }
                return Ok(Some(outcome));
            }
            Ok(row) => row,
        };
        let seq = row.last_seq + 1;
        let new_epoch = row.epoch + 1;
        let welcome = item.welcome.clone();
        let (added, removed) = (item.added.clone(), item.removed.clone());
        let (org, sender) = (item.org.clone(), item.sender.clone());
        let ids = match self.archive(vec![self.append_of(item, seq, new_epoch, now_ms())]).await {
            Ok(ids) => ids,
            Err(RelayError::Conflict(_)) => return Ok(None),
            Err(e) => return Err(RelayError::Storage(e.to_string())),
        };
        let outcome = Outcome::Ack(Ack { channel: self.name.clone(), seq, epoch: new_epoch, duplicate: false });
        Metrics::add(&self.relay.metrics.commits_acked, 1);
        // Archived: the roster cache follows the store.
        self.apply_roster(seq, &added, &removed);
        let ids = ids.into_iter().next().unwrap_or_default();
        if let Some((recipients, payload)) = welcome {
            for (recipient, id) in recipients.into_iter().zip(ids) {
                // Encoded only for recipients that are online (the rest fetch it on connect).
                if !self.relay.online.is_online(&org, &recipient) {
                    continue;
                }
                let frame = Frame::new(
                    0,
                    Body::Welcome(Welcome {
                        welcome_id: id,
                        channel: self.name.clone(),
                        sender: sender.clone(),
                        payload: payload.to_vec(),
                        commit_seq: seq,
                        commit_epoch: new_epoch,
                    }),
                );
                if let Ok(bytes) = encode_frame(&frame, usize::MAX) {
                    self.relay.online.push(&org, &recipient, &bytes);
                }
            }
        }
        tracing::info!(channel = %self.name, seq, epoch = new_epoch, added = added.len(), removed = removed.len(), "commit accepted");
        Ok(Some(outcome))
    }

    /// Applies an archived commit's roster changes to the cache (removals first, like the
    /// store) and ends the live subscriptions of identities that are no longer members.
    fn apply_roster(&mut self, seq: u64, added: &[String], removed: &[String]) {
        let Some(roster) = self.roster.as_mut() else {
            return;
        };
        for who in removed {
            roster.members.remove(who);
        }
        for who in added {
            roster.members.entry(who.clone()).or_insert(seq);
        }
        if !removed.is_empty() {
            self.drop_non_members();
        }
    }
}
