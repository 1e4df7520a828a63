//! The channel policy from the driver's side: invites (registered in the policy by a commit,
//! shared with the members, kept on the relay for offline joins, revoked), roles, and leaving
//! by a self-remove proposal that any member commits.

use super::*;
use skytale_core::policy::{Action, ChannelPolicy, Role};

/// An invite of a channel as its policy records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InviteInfo {
    /// Invite id (32 hex characters).
    pub id: String,
    /// Who created it.
    pub created_by: String,
    /// Expiry, unix seconds.
    pub expires_at: u64,
    /// Distinct identities it admits.
    pub max_uses: u32,
    /// Identities that used it.
    pub used: Vec<String>,
    /// Revoked.
    pub revoked: bool,
}

impl Client {
    /// Creates an invite for `channel`: `max_uses` joins, valid for `ttl`. Needs the `invite`
    /// role (`SKYTALE_POLICY_DENIED` otherwise). The invite's public key is registered in the
    /// channel policy by a commit (so every member can check a joiner's proof, and an add with
    /// it counts as this admin's decision whoever commits it); the token is shared with the
    /// members through the channel so any online member admits the joiner, and a sealed, current
    /// GroupInfo is kept on the relay so the joiner also gets in when nobody is online. Returns
    /// the token (`skt_inv_…`) to hand to the joiner.
    pub async fn create_invite(&self, channel: &str, max_uses: u32, ttl: Duration) -> Result<Zeroizing<String>> {
        if max_uses == 0 || ttl.is_zero() {
            return Err(ClientError::InvalidArgument("maxUses and ttl must be positive".into()));
        }
        let agent = self.shared.agent.clone();
        if !agent.is_member(channel)? {
            return Err(CoreError::NotAMember(channel.to_string()).into());
        }
        if !agent.may(channel, Action::Invite)? {
            return Err(
                CoreError::PolicyDenied(format!("{} may not create invites in {channel}", agent.identity())).into()
            );
        }
        let relay = self.shared.relay_addr.lock().map(|r| r.clone()).unwrap_or_default();
        let invite = InviteToken::generate(channel, &relay);
        let expires_at = now_secs() + ttl.as_secs().max(1);
        let reg = invite.clone();
        self.shared
            .commit_op(channel, None, move |agent, name| {
                agent.register_invite(name, &reg, expires_at, max_uses, CommitMode::Stage)
            })
            .await?;
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
        let framed = frame_control(&control)?;
        self.shared.enqueue(channel, framed.to_vec()).await?;
        Ok(token)
    }

    /// Revokes an invite of `channel` (its creator or an admin): recorded in the channel policy
    /// by a commit, so every member refuses it from then on, and revoked on the relay.
    /// `invite_id` may also be the token itself.
    pub async fn revoke_invite(&self, channel: &str, invite_id: &str) -> Result<()> {
        let id = if invite_id.starts_with(skytale_core::invite::TOKEN_PREFIX) {
            InviteToken::parse(invite_id)?.id_hex()
        } else {
            invite_id.to_string()
        };
        let invite_id = id.as_str();
        let id = id.clone();
        self.shared
            .commit_op(channel, None, move |agent, name| agent.revoke_invite(name, &id, CommitMode::Stage))
            .await?;
        let conn = self.shared.live_conn().await?;
        conn.revoke_invite(invite_id).await?;
        self.shared.agent.kv_delete(&invite_key(channel, invite_id))?;
        Ok(())
    }

    /// The invites of `channel`, as its policy records them.
    pub fn invites(&self, channel: &str) -> Result<Vec<InviteInfo>> {
        let policy = self.shared.agent.policy(channel)?.unwrap_or_default();
        Ok(policy
            .invites
            .into_iter()
            .map(|(id, e)| InviteInfo {
                id,
                created_by: e.created_by,
                expires_at: e.expires_at,
                max_uses: e.max_uses,
                used: e.used,
                revoked: e.revoked,
            })
            .collect())
    }

    /// Gives a member a role (`admin` or `member`) by a commit; needs the `policy` role.
    pub async fn set_role(&self, channel: &str, identity: &str, role: Role) -> Result<()> {
        let who = identity.to_string();
        self.shared
            .commit_op(channel, None, move |agent, name| agent.set_role(name, &who, role, CommitMode::Stage))
            .await
            .map(|_| ())
    }

    /// The channel's policy (roles, rules, invites); `None` for a channel made before policies.
    pub fn policy(&self, channel: &str) -> Result<Option<ChannelPolicy>> {
        Ok(self.shared.agent.policy(channel)?)
    }

    /// Leaves `channel`: sends a self-remove proposal that any member commits (no role needed),
    /// then forgets the channel locally.
    pub async fn leave(&self, channel: &str) -> Result<()> {
        let agent = self.shared.agent.clone();
        if agent.is_member(channel)? {
            let slot = self.shared.slot(channel);
            let mut conn = self.shared.live_conn().await?;
            let mut attempts = 0;
            loop {
                let guard = slot.lock.lock().await;
                let epoch = self.shared.send_epoch(channel)?;
                let proposal = agent.leave_proposal(channel)?;
                match conn.send(channel, &random_id(), Kind::Proposal, epoch, proposal).await {
                    Ok(_) => break,
                    Err(ProtoError::WrongEpoch { .. }) if attempts < 8 => {
                        attempts += 1;
                        self.shared.catch_up_locked(&conn, channel).await?;
                    }
                    Err(e) if is_transport(&e) => {
                        drop(guard);
                        conn = self.shared.next_conn(&conn).await?;
                    }
                    Err(e) => return Err(e.into()),
                }
            }
        }
        if let Ok(conn) = self.shared.live_conn().await {
            if let Err(e) = conn.unsubscribe(channel).await {
                tracing::debug!(code = e.code(), "unsubscribe after leave failed");
            }
        }
        for (key, _) in agent.kv_list(&format!("invite/{channel}/"))? {
            agent.kv_delete(&key)?;
        }
        agent.forget_channel(channel)?;
        self.shared.note_membership(channel);
        Ok(())
    }
}
