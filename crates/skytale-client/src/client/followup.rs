//! Work found while processing items, done after the channel lock is released: admitting
//! invited joiners, removals, scheduled self-updates and invite refreshes.

use super::*;

pub(super) async fn followup_loop(shared: Arc<Shared>) {
    let mut closed = shared.closed.subscribe();
    loop {
        if *closed.borrow() {
            return;
        }
        let next = shared.followups.lock().ok().and_then(|mut q| q.pop_front());
        let Some(job) = next else {
            tokio::select! {
                _ = shared.followup_notify.notified() => {}
                _ = closed.changed() => {}
                _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            }
            continue;
        };
        match job {
            FollowUp::Admit { channel, joiner, key_package, invite_id, admission } => {
                let res = shared
                    .commit_op(&channel, Some(vec![joiner.clone()]), move |agent, name| {
                        agent.admit_with_invite(name, &key_package, &invite_id, &admission, CommitMode::Stage)
                    })
                    .await;
                match res {
                    Ok(_) => tracing::debug!(channel, "admitted a joiner"),
                    // Another member admitted it first (or it is no longer admissible).
                    Err(e)
                        if matches!(
                            e.code(),
                            "SKYTALE_INVALID_ARGUMENT"
                                | "SKYTALE_KEY_PACKAGE_USED"
                                | "SKYTALE_NOT_A_MEMBER"
                                | "SKYTALE_INVITE_USED_UP"
                        ) => {}
                    Err(e) => shared.emit_error(Some(&channel), e.code(), format!("admitting {joiner}: {e}")),
                }
            }
            FollowUp::CommitLeaves { channel } => {
                let res = shared
                    .commit_op(&channel, None, |agent, name| agent.commit_leave_requests(name, CommitMode::Stage))
                    .await;
                if let Err(e) = res {
                    // SKYTALE_INVALID_STATE: nothing pending (another member committed it first).
                    if !matches!(e.code(), "SKYTALE_INVALID_STATE" | "SKYTALE_NOT_A_MEMBER") {
                        shared.emit_error(Some(&channel), e.code(), format!("committing a leave request: {e}"));
                    }
                }
            }
            FollowUp::RecordUse { channel, invite_id, identity, not_before } => {
                if tokio::time::Instant::now() < not_before {
                    let later = shared.clone();
                    tokio::spawn(async move {
                        tokio::time::sleep_until(not_before).await;
                        later.schedule(FollowUp::RecordUse {
                            channel,
                            invite_id,
                            identity,
                            not_before: tokio::time::Instant::now(),
                        });
                    });
                    continue;
                }
                let recorded = |s: &Shared| {
                    s.agent
                        .policy(&channel)
                        .ok()
                        .flatten()
                        .and_then(|p| p.invites.get(&invite_id).map(|e| e.used.contains(&identity)))
                        .unwrap_or(true)
                };
                if recorded(&shared) || !shared.agent.is_member(&channel).unwrap_or(false) {
                    continue;
                }
                let (id, who) = (invite_id.clone(), identity.clone());
                let res = shared
                    .commit_op(&channel, None, move |agent, name| {
                        agent.record_invite_use(name, &id, &who, CommitMode::Stage)
                    })
                    .await;
                if let Err(e) = res {
                    if !recorded(&shared) {
                        shared.emit_error(Some(&channel), e.code(), format!("recording an invite use: {e}"));
                    }
                }
            }
            // Only while owed: a connect may have queued the same check again.
            FollowUp::SelfUpdate { channel } if !shared.self_update_owed(&channel) => {}
            FollowUp::SelfUpdate { channel } => match shared.agent.is_member(&channel) {
                Ok(true) if shared.self_update_due(&channel) => {
                    let res =
                        shared.commit_op(&channel, None, |agent, name| agent.rotate_key(name, CommitMode::Stage)).await;
                    match res {
                        Ok(_) => shared.self_update_settled(&channel),
                        // Still owed: checked again at the next connect.
                        Err(e) => shared.emit_error(Some(&channel), e.code(), format!("scheduled key update: {e}")),
                    }
                }
                Ok(_) => shared.self_update_settled(&channel),
                Err(e) => tracing::debug!(code = e.code(), "scheduled key update: membership unknown; left owed"),
            },
            FollowUp::RefreshInvites { channel } => {
                let invites = shared.invites_of(&channel);
                if invites.is_empty() || !shared.agent.is_member(&channel).unwrap_or(false) {
                    continue;
                }
                let Ok(conn) = shared.live_conn().await else { continue };
                let Ok(gi) = shared.group_info_with_epoch(&channel) else { continue };
                for (invite, _) in invites {
                    if let Ok(sealed) = invite.seal_group_info(&gi) {
                        if let Err(e) = conn.update_invite(&invite.id_hex(), sealed).await {
                            tracing::debug!(code = e.code(), "refreshing an invite failed");
                        }
                    }
                }
            }
        }
    }
}
