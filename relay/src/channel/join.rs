//! Join requests: `Send{kind: JoinRequest}` by a non-member holding an invite.

use skytale_proto::frames::{Ack, Kind};

use super::{busy, check_archive_quota, dup_ack, Actor, Item, Outcome, MAX_CONFLICTS};
use crate::error::{RelayError, Result};
use crate::now_ms;

impl Actor {
    /// `Send{kind: JoinRequest}`: validate the invite and count the use, then order the item
    /// at the channel's current epoch (no epoch check, no membership: the invite is the right).
    pub(super) async fn join(&mut self, mut item: Item) -> Result<Outcome> {
        for _ in 0..MAX_CONFLICTS {
            if let Some(outcome) = self.try_join(&mut item).await? {
                return Ok(outcome);
            }
        }
        Err(busy(&self.name))
    }

    /// One attempt; `None` if a cluster store reported that the channel moved meanwhile (the
    /// invite use counted already is this identity's, so a retry does not count it again).
    async fn try_join(&mut self, item: &mut Item) -> Result<Option<Outcome>> {
        let (invite_id, invite_auth) = item.invite.clone().unwrap_or_default();
        let (name, me, cmid) = (self.name.clone(), item.sender.clone(), item.client_msg_id.clone());
        let (org, size) = (item.org.clone(), item.payload.len() as u64);
        let relay = self.relay.clone();
        let checked = self
            .relay
            .storage
            .call(move |s| {
                let dup = s.find_dup(&name, &me, &cmid)?;
                // A retry of an accepted join request: its original Ack, even if the invite
                // has since expired, been used up or revoked.
                if let Some(d) = dup.filter(|d| d.kind == Kind::JoinRequest as i32) {
                    return Ok(Err(d));
                }
                let (_, _, row) = crate::invites::use_invite(&relay.metrics, s, &name, &invite_id, &invite_auth, &me)?;
                if let Some(d) = dup {
                    return Ok(Err(d));
                }
                check_archive_quota(&relay, s, &org, size)?;
                Ok(Ok(row))
            })
            .await?;
        let row = match checked {
            Err(d) => return Ok(Some(dup_ack(&self.name, d))),
            Ok(row) => row,
        };
        item.epoch = row.epoch;
        let seq = row.last_seq + 1;
        match self.archive(vec![self.append_of(item, seq, row.epoch, now_ms())]).await {
            Ok(_) => {}
            Err(RelayError::Conflict(_)) => return Ok(None),
            Err(e) => return Err(RelayError::Storage(e.to_string())),
        }
        tracing::info!(channel = %self.name, seq, "join request accepted");
        Ok(Some(Outcome::Ack(Ack { channel: self.name.clone(), seq, epoch: row.epoch, duplicate: false })))
    }
}
