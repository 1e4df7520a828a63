//! What arrives from the relay: follow-ups of applied deliveries (see `sync.rs` for the
//! order), control messages, join requests, external-join checks and Welcomes.

use super::*;

/// How long members wait before recording an external joiner's invite use themselves (the
/// joiner records its own first).
pub(super) const RECORD_USE_GRACE: Duration = Duration::from_secs(3);

impl Shared {
    /// Handles a control message; the channel lock is held.
    pub(super) fn handle_control(&self, channel: &str, sender: &str, body: &[u8]) {
        match parse_control(body) {
            Ok(Control::Invite { token, max_uses, expires_at }) => {
                if let Ok(t) = InviteToken::parse(&token) {
                    if t.channel == channel {
                        let stored = StoredInvite { token, max_uses, expires_at };
                        if let Ok(json) = serde_json::to_vec(&stored) {
                            let json = Zeroizing::new(json);
                            if let Err(e) = self.agent.kv_put(&invite_key(channel, &t.id_hex()), &json) {
                                self.emit_error(
                                    Some(channel),
                                    e.code(),
                                    format!("storing a shared invite failed: {e}"),
                                );
                            }
                        }
                    }
                }
            }
            Err(e) => self.emit_error(Some(channel), e.code(), format!("control message from {sender}: {e}")),
        }
    }

    /// A join request item (not an MLS message); the channel lock is held.
    pub(super) fn handle_join_request(&self, d: &Deliver) {
        let _ = self.agent.set_last_seq(&d.channel, d.seq);
        let Some(id) = InviteToken::join_request_id(&d.payload) else { return };
        let id_hex = hex::encode(id);
        let Some((invite, _)) = self.invites_of(&d.channel).into_iter().find(|(t, _)| t.id_hex() == id_hex) else {
            return; // not an invite we know (or expired): another member may admit
        };
        match invite.open_join_request(&d.sender, &d.payload) {
            Some((kp, admission)) => {
                let already = self.agent.members(&d.channel).map(|m| m.contains(&d.sender)).unwrap_or(true);
                if let Err(e) = self.agent.verify_key_package(&d.channel, &kp, &d.sender, now_secs()) {
                    self.emit_error(Some(&d.channel), e.code(), format!("join request from {}: {e}", d.sender));
                    return;
                }
                // The policy decides (the same verdict every member reaches): a revoked, expired
                // or used-up invite, or one this identity used before, admits nobody.
                let usable = match self.agent.policy(&d.channel) {
                    Ok(Some(p)) => p.usable_invite(&id_hex, &d.sender, now_secs()).map(|_| ()),
                    Ok(None) => Ok(()),
                    Err(e) => Err(e),
                };
                if let Err(e) = usable {
                    self.emit_error(Some(&d.channel), e.code(), format!("join request from {}: {e}", d.sender));
                    return;
                }
                if !already {
                    self.schedule(FollowUp::Admit {
                        channel: d.channel.clone(),
                        joiner: d.sender.clone(),
                        key_package: kp,
                        invite_id: id_hex,
                        admission,
                    });
                }
            }
            None => self.emit_error(
                Some(&d.channel),
                "SKYTALE_INVITE_INVALID",
                format!("join request from {} does not open with the invite (wrong secret or replayed for another identity)", d.sender),
            ),
        }
    }

    /// Follow-up of one processed item (events, control messages, invite checks).
    pub(super) fn after_processed(&self, d: &Deliver, res: skytale_core::Result<Incoming>) {
        let agent = &self.agent;
        match res {
            Ok(Incoming::Proposal { proposal, .. }) => {
                // A member asked to leave (a self-remove proposal): any member commits it.
                if proposal == "remove" {
                    self.schedule(FollowUp::CommitLeaves { channel: d.channel.clone() });
                }
            }
            Ok(Incoming::Message { data, sender, .. }) if data.first() == Some(&ENVELOPE_CONTROL) => {
                let _ = agent.inbox_remove(&d.channel, d.seq);
                self.handle_control(&d.channel, &sender, &data[1..]);
            }
            Ok(Incoming::Commit { external, authenticated_data, sender, self_removed, added, removed, .. }) => {
                if !added.is_empty() || !removed.is_empty() {
                    self.emit(ClientEvent::MembersChanged {
                        channel: d.channel.clone(),
                        added,
                        removed,
                        by: sender.clone(),
                    });
                }
                if external {
                    // Every member already judged the joiner's proof (core policy check: a join
                    // without a valid one is rejected, never merged). Record the invite's use in
                    // the policy unless the joiner (who goes first) or another member did.
                    let proofs = skytale_core::policy::CommitProofs::from_aad(&authenticated_data);
                    if let Some(p) = proofs.external {
                        self.schedule(FollowUp::RecordUse {
                            channel: d.channel.clone(),
                            invite_id: p.id,
                            identity: sender.clone(),
                            not_before: tokio::time::Instant::now() + RECORD_USE_GRACE,
                        });
                    }
                }
                if !self_removed {
                    self.schedule(FollowUp::RefreshInvites { channel: d.channel.clone() });
                    self.schedule_voided_leaves(&d.channel);
                } else {
                    self.note_membership(&d.channel);
                }
                self.slot(&d.channel).notify.notify_waiters();
            }
            Ok(_) => self.slot(&d.channel).notify.notify_waiters(),
            Err(e) => {
                // The item was recorded as skipped (it can never be processed); say so. A
                // rejected commit still consumed its relay slot: every member skips it alike.
                if e.code() != "SKYTALE_REPLAY" {
                    let what = if d.kind == Kind::Commit as i32 { "commit" } else { "item" };
                    self.emit_error(
                        Some(&d.channel),
                        e.code(),
                        format!("{what} {} from {} refused: {e}", d.seq, d.sender),
                    );
                }
            }
        }
    }

    /// Handles one pushed frame other than a burst of deliveries.
    pub(super) async fn handle_push(&self, conn: &RelayConnection, f: Frame) {
        match f.body {
            Some(Body::Deliver(d)) => {
                let channel = d.channel.clone();
                self.handle_delivers(&channel, std::slice::from_ref(&d)).await
            }
            Some(Body::Welcome(w)) => self.handle_welcome(conn, w).await,
            Some(Body::Error(e)) => self.emit_error(None, &e.code, e.message),
            _ => {}
        }
    }

    pub(super) async fn handle_welcome(&self, conn: &RelayConnection, w: Welcome) {
        let expected = self.expected_welcomes.lock().map(|mut e| e.remove(&w.channel)).unwrap_or(false);
        if !expected && self.config.accept_welcomes == AcceptWelcomes::None {
            self.emit_error(
                Some(&w.channel),
                "SKYTALE_WELCOME_REFUSED",
                format!("refused a Welcome into {} (acceptWelcomes is 'none' and no invite was used)", w.channel),
            );
            if let Err(e) = conn.ack_welcome(w.welcome_id).await {
                tracing::debug!(code = e.code(), "ack of a refused welcome failed; it will be redelivered");
            }
            return;
        }
        match self.agent.join_channel_from(&w.payload) {
            Ok((name, _)) if name != w.channel => {
                // The relay queued it for another channel than the group it leads into: a
                // look-alike group under a name its committer does not hold there. Undo.
                if let Err(e) = self.agent.forget_channel(&name) {
                    tracing::debug!(code = e.code(), "forgetting a refused look-alike group failed");
                }
                self.emit_error(
                    Some(&w.channel),
                    "SKYTALE_WELCOME_REFUSED",
                    format!("refused a Welcome for {} that leads into a group named {name}", w.channel),
                );
            }
            Ok((name, adder)) => {
                let position = self.agent.set_last_seq(&name, w.commit_seq).and_then(|()| {
                    if w.commit_epoch > 0 {
                        self.agent.set_relay_epoch(&name, w.commit_epoch)
                    } else {
                        Ok(())
                    }
                });
                if let Err(e) = position {
                    // Resuming from an older position only re-fetches items (skipped, not lost).
                    self.emit_error(Some(&name), e.code(), format!("recording the join position failed: {e}"));
                }
                self.slot(&name);
                self.note_membership(&name);
                self.mark_self_updated(&name);
                if let Err(e) = conn.subscribe(&name, w.commit_seq).await {
                    self.emit_error(Some(&name), e.code(), format!("subscribe after join: {e}"));
                }
                // Who added us, as MLS authenticates it (the relay's sender field is not trusted).
                self.emit(ClientEvent::Joined { channel: name, by: adder });
                // The add used one of this agent's key packages on the relay: publish more
                // before they run out, or further adds fail until the next connect.
                self.schedule_key_package_top_up();
            }
            Err(CoreError::ChannelExists(name)) => {
                // A Welcome we already joined from (redelivered after a crash) is fine; any other
                // Welcome into a name we hold is a look-alike group: refused, and said so.
                let redelivered = self.agent.last_seq(&name).map(|s| s >= w.commit_seq).unwrap_or(false);
                if !redelivered {
                    self.emit_error(
                        Some(&name),
                        "SKYTALE_CHANNEL_EXISTS",
                        format!("refused a Welcome into {name}: this agent is already in a channel of that name"),
                    );
                }
            }
            Err(e) => self.emit_error(Some(&w.channel), e.code(), format!("welcome from {}: {e}", w.sender)),
        }
        if let Err(e) = conn.ack_welcome(w.welcome_id).await {
            tracing::debug!(code = e.code(), "ack welcome failed; it will be redelivered");
        }
    }
}

pub(super) fn to_event(item: skytale_core::InboxItem) -> ChannelEvent {
    if item.kind == "commit" {
        let v: serde_json::Value = serde_json::from_slice(&item.data).unwrap_or_default();
        let list = |k: &str| -> Vec<String> {
            v.get(k)
                .and_then(|x| x.as_array())
                .map(|a| a.iter().filter_map(|s| s.as_str().map(str::to_string)).collect())
                .unwrap_or_default()
        };
        ChannelEvent::Commit {
            seq: item.seq,
            sender: item.sender,
            epoch: item.epoch,
            added: list("added"),
            removed: list("removed"),
            self_removed: v.get("selfRemoved").and_then(|b| b.as_bool()).unwrap_or(false),
        }
    } else {
        let data = match item.data.first() {
            Some(&ENVELOPE_DATA) => item.data[1..].to_vec(),
            _ => item.data,
        };
        ChannelEvent::Message { seq: item.seq, sender: item.sender, data, epoch: item.epoch }
    }
}

/// Where a delivered item sits in the relay's order (a commit takes slot `epoch`).
pub(super) fn delivery_of(d: &Deliver) -> Delivery {
    let relay_epoch = if d.kind == Kind::Commit as i32 { d.epoch + 1 } else { d.epoch };
    Delivery { seq: d.seq, relay_epoch, at_secs: d.timestamp_ms / 1000 }
}
