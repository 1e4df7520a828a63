//! Following the relay's order (issue #10): deliveries are applied in seq order with no hole
//! the client cannot explain. A pushed burst whose seqs skip an item that is not this agent's
//! own (the relay never echoes those) is not applied as is: the client fetches from its last
//! position instead, so a dropped, reordered or withheld push is filled from the relay's
//! archive. An item built on an epoch the agent does not have stops processing (nothing after
//! it is skipped) and is fetched again with what precedes it; if the archive still does not
//! give the missing commit, the agent resyncs (see `heal.rs`).

use super::*;
use incoming::delivery_of;

/// How long a burst with an unexplained hole waits for this agent's own acks (an Ack can
/// reach the client after pushes of later items) before the client fetches.
const OWN_ACK_WAIT: Duration = Duration::from_millis(300);

/// Longest hole checked item by item (a longer one is filled by a fetch).
const MAX_HOLE: u64 = 4096;

/// Fetches retried (with a growing pause) when their reply lacks items (lost or late on the
/// way) before it is used as is.
const MAX_SHORT_FETCHES: u32 = 6;

/// How often channels with recent traffic are compared with the relay's last seq: a dropped
/// last item is otherwise only noticed with the next one.
const RECONCILE_EVERY: Duration = Duration::from_secs(2);

/// Channels are reconciled while they had traffic this recently.
const ACTIVE_FOR: Duration = Duration::from_secs(60);

/// How a run of deliveries went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Applied {
    /// Everything was processed (or recorded as what it is).
    Done,
    /// An item is behind: a commit before it is missing; it and what follows wait.
    Behind,
}

impl Shared {
    /// Applies pushed deliveries of one channel (a burst that arrived together).
    pub(super) async fn handle_delivers(&self, channel: &str, ds: &[Deliver]) {
        skytale_proto::probe::mark_n("recv.apply", ds.len());
        self.fork.touch(channel);
        // A hole this agent's own sends in flight may explain: wait for their acks first,
        // without the channel lock (sends encrypt under it).
        let deadline = tokio::time::Instant::now() + OWN_ACK_WAIT;
        while self.fork.in_flight(channel) > 0 && tokio::time::Instant::now() < deadline {
            let acked = self.fork.acked.notified();
            let Ok(last) = self.agent.last_seq(channel) else { return };
            let fresh: Vec<Deliver> = ds.iter().filter(|d| d.seq > last && d.channel == channel).cloned().collect();
            if fresh.is_empty() || !self.unexplained_hole(channel, last, &fresh) {
                break;
            }
            tokio::select! {
                _ = acked => {}
                _ = tokio::time::sleep_until(deadline) => {}
            }
        }
        let slot = self.slot(channel);
        let _guard = slot.lock.lock().await;
        if self.fork.is_healing(channel) {
            // The state is being replaced: only answers to this agent's resync request matter
            // now; everything else is fetched once the resync is done.
            for d in ds.iter().filter(|d| d.channel == channel) {
                if skytale_core::resync_item_kind(&d.payload).is_some() {
                    self.handle_resync_item(d, false);
                }
            }
            return;
        }
        let last = match self.agent.last_seq(channel) {
            Ok(s) => s,
            Err(_) => return, // not our channel (anymore)
        };
        let fresh: Vec<Deliver> = ds.iter().filter(|d| d.seq > last && d.channel == channel).cloned().collect();
        if fresh.is_empty() {
            return;
        }
        let hole = self.unexplained_hole(channel, last, &fresh);
        let applied = if hole { Applied::Behind } else { self.apply_run_locked(channel, &fresh) };
        skytale_proto::probe::mark_n("recv.applied", fresh.len());
        if applied == Applied::Behind {
            // Fill the hole (or the missing commit) from the relay's archive.
            let conn = self.conn.borrow().clone();
            if let Some(conn) = conn {
                if let Err(e) = self.catch_up_locked(&conn, channel).await {
                    tracing::debug!(channel, code = e.code(), "catch-up after a hole failed");
                }
            }
        }
    }

    /// Whether the seqs of `ds` (in arrival order) skip an item after `last` that is not one
    /// of this agent's own.
    fn unexplained_hole(&self, channel: &str, last: u64, ds: &[Deliver]) -> bool {
        let own = self.fork.own_after(channel, last);
        let mut expected = last + 1;
        for d in ds {
            if d.seq < expected {
                return true; // out of order
            }
            if d.seq - expected > MAX_HOLE {
                return true;
            }
            if (expected..d.seq).any(|s| !own.contains(&s)) {
                return true;
            }
            expected = d.seq + 1;
        }
        false
    }

    /// Applies delivered items of one channel, in relay order; the channel lock must be held.
    /// Runs of MLS items are processed in one keystore transaction each (one fsync per run).
    pub(super) fn apply_run_locked(&self, channel: &str, ds: &[Deliver]) -> Applied {
        let last = match self.agent.last_seq(channel) {
            Ok(s) => s,
            Err(_) => return Applied::Done, // not our channel (anymore)
        };
        let mut run: Vec<&Deliver> = Vec::new();
        let items: Vec<&Deliver> = ds.iter().filter(|d| d.seq > last && d.channel == channel).collect();
        for (i, d) in items.iter().enumerate() {
            let resync = skytale_core::resync_item_kind(&d.payload).is_some();
            if d.kind == Kind::JoinRequest as i32 || resync {
                if self.process_run(channel, &run) == Applied::Behind {
                    self.answers_ahead(&items[i..]);
                    return Applied::Behind;
                }
                run.clear();
                if resync {
                    self.handle_resync_item(d, true);
                } else {
                    self.handle_join_request(d);
                }
            } else {
                run.push(d);
            }
        }
        self.process_run(channel, &run)
    }

    /// Handles the resync answers among items that wait behind a missing commit (out of
    /// order: answers to this agent's request must get through while the channel waits; they
    /// change no MLS state, and their position is not recorded).
    fn answers_ahead(&self, items: &[&Deliver]) {
        for d in items {
            if skytale_core::resync_item_kind(&d.payload) == Some(skytale_core::ResyncItem::Response) {
                self.handle_resync_item(d, false);
            }
        }
    }

    /// Processes a run of MLS items in one keystore batch and follows each one up.
    pub(super) fn process_run(&self, channel: &str, run: &[&Deliver]) -> Applied {
        if run.is_empty() {
            return Applied::Done;
        }
        let items: Vec<(Vec<u8>, Delivery)> = run.iter().map(|d| (d.payload.clone(), delivery_of(d))).collect();
        match self.agent.process_delivered_batch(channel, &items) {
            Ok(results) => {
                let processed = results.len();
                for (d, res) in run.iter().zip(results) {
                    match res {
                        Err(e) if skytale_core::failure_kind(&e) == skytale_core::Failure::Behind => {
                            tracing::debug!(channel, seq = d.seq, "an item is behind; fetching what precedes it");
                            return Applied::Behind;
                        }
                        Err(e) if skytale_core::failure_kind(&e) == skytale_core::Failure::Fork => self.on_fork(d, &e),
                        res => {
                            if res.is_ok() {
                                // Another member's item decrypted here: we share its epoch.
                                self.fork.confirm(channel, d.epoch);
                            }
                            self.after_processed(d, res)
                        }
                    }
                }
                if processed < run.len() {
                    return Applied::Behind;
                }
                Applied::Done
            }
            Err(e) => {
                self.emit_error(Some(channel), e.code(), format!("processing {} items failed: {e}", run.len()));
                Applied::Done
            }
        }
    }

    /// Fetches and applies everything after the channel's last seq; the channel lock must be
    /// held. An item still behind after the fetch means the relay's archive, as this agent
    /// sees it, does not have a commit it needs: the agent resyncs.
    pub(super) async fn catch_up_locked(&self, conn: &RelayConnection, channel: &str) -> Result<()> {
        let mut short = 0;
        loop {
            let after = self.agent.last_seq(channel)?;
            let (mut items, done) = conn.fetch(channel, after, 0).await?;
            // The reply's items arrive as frames of their own: put them back in relay order, and
            // ask again if some went missing on the way (up to a few times).
            items.sort_by_key(|d| d.seq);
            items.dedup_by_key(|d| d.seq);
            let complete = (items.len() as u64) >= done.count;
            if !complete && short < MAX_SHORT_FETCHES {
                short += 1;
                tokio::time::sleep(Duration::from_millis(50 * u64::from(short))).await;
                continue;
            }
            if !complete {
                // Withheld from every fetch: go on without it (a missing commit shows as an item
                // that is behind, and leads to a resync), and say so.
                self.emit_error(
                    Some(channel),
                    "SKYTALE_FORK_DETECTED",
                    format!("the relay keeps back {} items after seq {after}", done.count - items.len() as u64),
                );
            }
            if self.apply_run_locked(channel, &items) == Applied::Behind {
                let local = self.agent.epoch(channel).unwrap_or(0);
                self.start_heal(
                    channel,
                    None,
                    local + 1,
                    format!("a commit this member needs after epoch {local} is not in the relay's archive"),
                );
                return Ok(());
            }
            if !done.more {
                if done.last_seq > after && complete {
                    self.agent.set_last_seq(channel, done.last_seq)?;
                }
                // Caught up: if nothing arrived meanwhile, the relay's epoch is ours (this fixes
                // a joiner whose Welcome did not say it).
                if let Ok(info) = conn.channel_state(channel).await {
                    if info.last_seq == self.agent.last_seq(channel)? {
                        self.agent.set_relay_epoch(channel, info.epoch)?;
                    }
                }
                self.fork.forget_own_through(channel, self.agent.last_seq(channel)?);
                return Ok(());
            }
        }
    }

    /// Before this agent merges its own commit, which the relay archived at `commit_seq`:
    /// applies what the relay ordered before it that this agent has not processed yet (other
    /// members' messages sent in the epoch the commit ends, archived between this agent's last
    /// catch-up and its commit). After the merge they would not decrypt: channels keep no past
    /// epochs' secrets. The channel lock must be held. Best effort: whatever the relay does not
    /// give now is found by the hole checks afterwards (and is then undecryptable, as anything
    /// a relay holds back past a commit).
    pub(super) async fn apply_before_own_commit(&self, conn: &RelayConnection, channel: &str, commit_seq: u64) {
        let mut short = 0;
        loop {
            let Ok(after) = self.agent.last_seq(channel) else { return };
            let own = self.fork.own_after(channel, after);
            if (after + 1..commit_seq).all(|s| own.contains(&s)) {
                return; // nothing of another member's before the commit
            }
            let limit = u32::try_from(commit_seq.saturating_sub(after + 1)).unwrap_or(u32::MAX).max(1);
            let (mut items, done) = match conn.fetch(channel, after, limit).await {
                Ok(r) => r,
                Err(e) => {
                    tracing::debug!(channel, code = e.code(), "fetch before merging an own commit failed");
                    return;
                }
            };
            let complete = (items.len() as u64) >= done.count;
            if !complete && short < MAX_SHORT_FETCHES {
                short += 1;
                tokio::time::sleep(Duration::from_millis(50 * u64::from(short))).await;
                continue;
            }
            items.retain(|d| d.seq < commit_seq);
            items.sort_by_key(|d| d.seq);
            items.dedup_by_key(|d| d.seq);
            if items.is_empty() || self.apply_run_locked(channel, &items) == Applied::Behind {
                return;
            }
            if self.agent.last_seq(channel).ok() == Some(after) {
                return; // no progress
            }
        }
    }

    /// A `Nack` said the relay's epoch is `current` while this agent sent at `sent`: an epoch
    /// lower than one the relay acked to this agent means the relay's archive does not have a
    /// commit this agent merged (acked but never archived): the agent resyncs.
    pub(super) fn check_nack(&self, channel: &str, sent: u64, current: u64) {
        if current < sent {
            self.start_heal(
                channel,
                Some(current),
                current,
                format!("the relay is at slot {current} but acked this member's commits up to slot {sent}"),
            );
        }
    }
}

/// Compares each channel with recent traffic with the relay's last seq; a channel that stays
/// behind by items that are not this agent's own across two checks is caught up.
pub(super) async fn reconcile_loop(shared: Arc<Shared>) {
    let mut closed = shared.closed.subscribe();
    let mut behind: HashMap<String, u64> = HashMap::new();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(RECONCILE_EVERY) => {}
            _ = closed.changed() => {}
        }
        if *closed.borrow() {
            return;
        }
        let Some(conn) = shared.conn.borrow().clone() else { continue };
        for channel in shared.fork.active_channels(ACTIVE_FOR) {
            if shared.fork.is_healing(&channel) {
                continue;
            }
            let (Ok(info), Ok(last)) = (conn.channel_state(&channel).await, shared.agent.last_seq(&channel)) else {
                continue;
            };
            let own = shared.fork.own_after(&channel, last);
            let missing = info.last_seq > last
                && (info.last_seq - last > MAX_HOLE || (last + 1..=info.last_seq).any(|s| !own.contains(&s)));
            if !missing {
                behind.remove(&channel);
                continue;
            }
            // Behind at the same position twice in a row: not just items on their way.
            if behind.insert(channel.clone(), last) != Some(last) {
                continue;
            }
            let slot = shared.slot(&channel);
            let _guard = slot.lock.lock().await;
            if shared.agent.last_seq(&channel).ok() == Some(last) {
                tracing::debug!(
                    channel,
                    last,
                    relay_last = info.last_seq,
                    "items missing after the last one; fetching"
                );
                if let Err(e) = shared.catch_up_locked(&conn, &channel).await {
                    tracing::debug!(channel, code = e.code(), "reconcile fetch failed");
                }
            }
            behind.remove(&channel);
        }
    }
}
