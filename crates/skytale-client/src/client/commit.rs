//! Commits through the relay: stage, send, merge on Ack or discard and retry; recovery of a
//! commit that was in flight when the process stopped.

use super::*;

impl Shared {
    /// Commits the members' leave requests of `channel` now (nothing to commit is not an
    /// error: another member did it). Boxed: [`Shared::commit_op`] calls it.
    pub(super) fn commit_leaves_now<'a>(
        &'a self,
        channel: &'a str,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<()>> + Send + 'a>> {
        Box::pin(async move {
            match self.commit_op(channel, None, commit_leaves).await {
                Ok(_) => Ok(()),
                Err(e) if matches!(e.code(), "SKYTALE_INVALID_STATE" | "SKYTALE_NOT_A_MEMBER") => {
                    tracing::debug!(code = e.code(), "no leave request left to commit");
                    Ok(())
                }
                Err(e) => Err(e),
            }
        })
    }

    /// Runs a commit through the relay: stage, send, merge on ack; on a lost race discard,
    /// catch up and retry.
    pub(super) async fn commit_op<F>(
        &self,
        channel: &str,
        recipients: Option<Vec<String>>,
        make: F,
    ) -> Result<CommitOutput>
    where
        F: Fn(&Agent, &str) -> skytale_core::Result<CommitOutput>,
    {
        const ATTEMPTS: usize = 8;
        let slot = self.slot(channel);
        let mut conn = self.live_conn().await?;
        for attempt in 0..ATTEMPTS {
            self.fork.wait_healed(channel).await;
            let _guard = slot.lock.lock().await;
            // Apply whatever arrived first, so the commit is made on the newest epoch.
            self.catch_up_locked(&conn, channel).await.ok();
            let relay_epoch = self.send_epoch(channel)?;
            let out = match make(&self.agent, channel) {
                Ok(out) => out,
                // This commit would void a member's leave request: commit the leave first.
                Err(CoreError::LeavePending(_)) => {
                    drop(_guard);
                    self.commit_leaves_now(channel).await?;
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
            let msg = Commit {
                channel: channel.to_string(),
                client_msg_id: random_id(),
                epoch: relay_epoch,
                payload: out.commit.clone(),
                welcome: match (&recipients, &out.welcome) {
                    (Some(r), Some(w)) => Some(WelcomeOut { recipients: r.clone(), payload: w.clone() }),
                    _ => None,
                },
                added: out.added.clone(),
                removed: out.removed.clone(),
                invite_id: String::new(),
            };
            // Remember what is in flight, so a restart can resend it (same client_msg_id: the
            // relay answers with the original Ack if it archived it) instead of forking.
            self.agent.kv_put(&pending_commit_key(channel), &encode_commit(&msg))?;
            loop {
                match conn.commit(msg.clone()).await {
                    Ok(ack) => {
                        self.apply_before_own_commit(&conn, channel, ack.seq).await;
                        self.agent.merge_pending_commit(channel)?;
                        self.agent.set_relay_epoch(channel, ack.epoch)?;
                        self.fork.note_own(channel, ack.seq);
                        self.agent.note_own_commit(channel, ack.epoch.saturating_sub(1), ack.seq, &msg.payload)?;
                        let _ = self.agent.kv_delete(&pending_commit_key(channel));
                        self.after_own_commit(channel, &out.added, &out.removed);
                        return Ok(out);
                    }
                    Err(ProtoError::WrongEpoch { current_epoch, .. }) => {
                        self.agent.clear_pending_commit(channel)?;
                        let _ = self.agent.kv_delete(&pending_commit_key(channel));
                        self.check_nack(channel, relay_epoch, current_epoch);
                        tracing::debug!(channel, attempt, "commit lost the epoch; catching up");
                        break;
                    }
                    Err(ProtoError::Relay { ref code, retry_after_ms, .. }) if code == "SKYTALE_RATE_LIMITED" => {
                        tokio::time::sleep(Duration::from_millis(retry_after_ms.clamp(10, 5_000))).await;
                    }
                    Err(e) if is_transport(&e) => {
                        // Same client_msg_id: the relay answers the original Ack if it got it.
                        conn = match self.next_conn(&conn).await {
                            Ok(c) => c,
                            Err(err) => {
                                // Closed while in flight: keep the pending commit and its record;
                                // the next start resends it and merges or discards it.
                                return Err(err);
                            }
                        };
                    }
                    Err(e) => {
                        self.agent.clear_pending_commit(channel)?;
                        let _ = self.agent.kv_delete(&pending_commit_key(channel));
                        return Err(e.into());
                    }
                }
            }
            let jitter = rand::thread_rng().gen_range(0..20u64 * (attempt as u64 + 1));
            drop(_guard);
            tokio::time::sleep(Duration::from_millis(jitter)).await;
        }
        Err(ClientError::CommitContention(channel.to_string()))
    }

    /// After this agent's own commit is merged: a commit without adds carried an update path
    /// (removes, rotations), so its leaf is fresh; an add did not, so the scheduled self-update
    /// follows it. Then refresh the channel's invites and report a membership change.
    fn after_own_commit(&self, channel: &str, added: &[String], removed: &[String]) {
        if added.is_empty() {
            self.mark_self_updated(channel);
        } else {
            self.owe_self_update(channel);
        }
        self.schedule(FollowUp::RefreshInvites { channel: channel.to_string() });
        if !added.is_empty() || !removed.is_empty() {
            self.emit(ClientEvent::MembersChanged {
                channel: channel.to_string(),
                added: added.to_vec(),
                removed: removed.to_vec(),
                by: self.agent.identity().to_string(),
            });
        }
    }
}

/// A commit of this agent was pending when the process stopped: resend it with its original
/// client_msg_id. The relay answers the original Ack if it had archived it (merge), accepts it
/// now (merge), or refuses it because the epoch moved on (discard). Never sent: discard.
pub(super) async fn recover_pending_commit(shared: &Arc<Shared>, conn: &RelayConnection, channel: &str) -> Result<()> {
    let key = pending_commit_key(channel);
    let record = shared.agent.kv_get(&key)?.and_then(|b| decode_commit(&b));
    match record {
        Some(commit) => match conn.commit(commit.clone()).await {
            Ok(ack) => {
                shared.apply_before_own_commit(conn, channel, ack.seq).await;
                shared.agent.merge_pending_commit(channel)?;
                shared.agent.set_relay_epoch(channel, ack.epoch)?;
                shared.fork.note_own(channel, ack.seq);
                shared.agent.note_own_commit(channel, ack.epoch.saturating_sub(1), ack.seq, &commit.payload)?;
                // As on the live path: an add carries no update path, so the scheduled
                // self-update follows it here too.
                shared.after_own_commit(channel, &commit.added, &commit.removed);
            }
            Err(ProtoError::WrongEpoch { .. }) => shared.agent.clear_pending_commit(channel)?,
            Err(e) if is_transport(&e) => return Err(e.into()),
            Err(e) => {
                shared.emit_error(Some(channel), e.code(), format!("pending commit refused: {e}"));
                shared.agent.clear_pending_commit(channel)?;
            }
        },
        None => shared.agent.clear_pending_commit(channel)?,
    }
    shared.agent.kv_delete(&key)?;
    Ok(())
}

/// The commit of the pending leave requests (a plain fn, so that [`Shared::commit_op`] can call
/// itself for it without an endless chain of closure types).
fn commit_leaves(agent: &Agent, name: &str) -> skytale_core::Result<CommitOutput> {
    agent.commit_leave_requests(name, CommitMode::Stage)
}
