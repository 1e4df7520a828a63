//! Work found while processing items, done after the channel lock is released: admitting
//! invited joiners, removals, scheduled self-updates, invite refreshes and key-package
//! top-ups.

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
                if let Err(e) = shared.commit_leaves_now(&channel).await {
                    shared.emit_error(Some(&channel), e.code(), format!("committing a leave request: {e}"));
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
                let settle = |s: &Shared| {
                    if let Err(e) = s.agent.settle_invite_use(&channel, &invite_id, &identity) {
                        // Left behind, it only makes the next connect check again.
                        tracing::debug!(code = e.code(), "clearing an owed invite use failed");
                    }
                };
                if recorded(&shared) || !shared.agent.is_member(&channel).unwrap_or(false) {
                    settle(&shared);
                    continue;
                }
                let (id, who) = (invite_id.clone(), identity.clone());
                let res = shared
                    .commit_op(&channel, None, move |agent, name| {
                        agent.record_invite_use(name, &id, &who, CommitMode::Stage)
                    })
                    .await;
                match res {
                    Ok(_) => settle(&shared),
                    Err(_) if recorded(&shared) => settle(&shared),
                    Err(e) => {
                        // The invite is gone from the policy (or this agent from the channel):
                        // nothing left to record. Anything else stays owed for the next connect.
                        if matches!(e.code(), "SKYTALE_INVITE_INVALID" | "SKYTALE_NOT_A_MEMBER") {
                            settle(&shared);
                        }
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
            FollowUp::TopUpKeyPackages => {
                // Without a connection, the next connect tops up anyway.
                let conn = shared.conn.borrow().clone();
                if let Some(conn) = conn {
                    if let Err(e) = shared.top_up_key_packages(&conn).await {
                        tracing::warn!(
                            code = e.code(),
                            "publishing more key packages failed; the next connect tries again"
                        );
                    }
                }
            }
            FollowUp::RefreshInvites { channel } => refresh_invites(&shared, &channel).await,
            FollowUp::RemoveVoidedLeave { channel, identity } => {
                remove_voided_leave(&shared, &channel, &identity).await
            }
        }
    }
}

/// Re-seals the channel's current GroupInfo into each of its live invites on the relay (an
/// offline joiner needs one of the channel's current epoch). Once every invite took it, the
/// epoch is recorded ([`Shared::invites_refresh_owed`] compares it at connect); a failure
/// leaves the record behind, so the next connect refreshes again.
async fn refresh_invites(shared: &Shared, channel: &str) {
    let invites = shared.invites_of(channel);
    if invites.is_empty() || !shared.agent.is_member(channel).unwrap_or(false) {
        return;
    }
    let Ok(conn) = shared.live_conn().await else { return };
    let Ok(gi) = shared.group_info_with_epoch(channel) else { return };
    // The epoch the GroupInfo was sealed with (its first 8 bytes), read with it.
    let Some(epoch) = gi.get(..8).and_then(|b| <[u8; 8]>::try_from(b).ok()).map(u64::from_be_bytes) else {
        return;
    };
    let mut all = true;
    for (invite, _) in invites {
        let res = match invite.seal_group_info(&gi) {
            Ok(sealed) => conn.update_invite(&invite.id_hex(), sealed).await.map_err(|e| e.code().to_string()),
            Err(e) => Err(e.code().to_string()),
        };
        match res {
            Ok(()) => {}
            // Revoked (or unknown to the relay): it admits nobody any more, nothing to refresh.
            Err(code) if code == "SKYTALE_INVITE_INVALID" => {}
            Err(code) => {
                tracing::debug!(code, "refreshing an invite failed");
                all = false;
            }
        }
    }
    if all {
        shared.invites_refreshed(channel, epoch);
    }
}

/// Removes `identity`, whose leave request another member's commit voided: it left (its client
/// forgot the channel) but is still in the group. Only an agent with the remove role can; the
/// others leave it to an admin. Done or not this agent's to do, the note is cleared; anything
/// else keeps it for the next connect.
async fn remove_voided_leave(shared: &Shared, channel: &str, identity: &str) {
    let settle = || {
        if let Err(e) = shared.agent.settle_voided_leave(channel, identity) {
            // Left behind, it only makes the next connect check again.
            tracing::debug!(code = e.code(), "clearing a voided leave failed");
        }
    };
    let still_in = shared.agent.members(channel).map(|m| m.iter().any(|id| id == identity)).unwrap_or(false);
    if !still_in || !shared.agent.is_member(channel).unwrap_or(false) {
        settle();
        return;
    }
    let who = vec![identity.to_string()];
    let res =
        shared.commit_op(channel, None, move |agent, name| agent.remove_members(name, &who, CommitMode::Stage)).await;
    match res {
        Ok(_) => settle(),
        Err(e) if matches!(e.code(), "SKYTALE_POLICY_DENIED" | "SKYTALE_MEMBER_NOT_FOUND" | "SKYTALE_NOT_A_MEMBER") => {
            settle()
        }
        Err(e) => {
            shared.emit_error(Some(channel), e.code(), format!("removing {identity}, whose leave was voided: {e}"))
        }
    }
}
