//! Joining a channel with an invite token (join request, then external commit) or an
//! unchecked GroupInfo.

use super::*;

impl Client {
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
        if let Ok(mut expected) = self.shared.expected_welcomes.lock() {
            expected.insert(channel.to_string());
        }
        let mut events = self.shared.events.subscribe();
        let conn = self.shared.live_conn().await?;
        let kp = agent.generate_key_packages(1)?.into_iter().next().ok_or(ClientError::Closed)?;
        let sealed = invite.seal_join_request(agent.identity(), &kp, &agent.signature_public_key()?)?;
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
            // The commit carries this agent's proof of the invite; refused here already when the
            // channel policy says the invite is revoked, expired or used up (or used by us before).
            let (name, out) = match agent.join_with_invite(&group_info, &invite) {
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
                added: vec![agent.identity().to_string()],
                removed: Vec::new(),
                invite_id: invite.id_hex(),
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
                    // Record our use of the invite in the channel policy (members do it after a
                    // grace period if we cannot; noted in the keystore so a restart does it too).
                    if let Err(e) = agent.owe_invite_use(&name, &invite.id_hex(), agent.identity()) {
                        tracing::debug!(code = e.code(), "noting the invite use failed");
                    }
                    self.shared.schedule(FollowUp::RecordUse {
                        channel: name.clone(),
                        invite_id: invite.id_hex(),
                        identity: agent.identity().to_string(),
                        not_before: tokio::time::Instant::now(),
                    });
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
        let msg = Commit {
            channel: name.clone(),
            client_msg_id: random_id(),
            epoch,
            payload: out.commit,
            welcome: None,
            added: vec![agent.identity().to_string()],
            ..Default::default()
        };
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

    pub(super) fn remember_invite(&self, invite: &InviteToken) -> Result<()> {
        // The joiner keeps the invite too, so it can refresh the sealed GroupInfo after commits.
        let stored = StoredInvite { token: invite.encode().to_string(), max_uses: 0, expires_at: 0 };
        let json =
            Zeroizing::new(serde_json::to_vec(&stored).map_err(|e| ClientError::InvalidArgument(e.to_string()))?);
        self.shared.agent.kv_put(&invite_key(&invite.channel, &invite.id_hex()), &json)?;
        Ok(())
    }

    pub(super) async fn wait_joined(
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
}

/// Splits `relay epoch (8 bytes, big endian) ‖ GroupInfo` as sealed into invites.
pub(super) fn split_epoch(bytes: &[u8]) -> Option<(u64, Vec<u8>)> {
    if bytes.len() < 9 {
        return None;
    }
    let (e, gi) = bytes.split_at(8);
    Some((u64::from_be_bytes(e.try_into().ok()?), gi.to_vec()))
}
