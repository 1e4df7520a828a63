//! Forks and healing (issue #10). The core reports evidence (`SKYTALE_FORK_DETECTED`: another
//! authenticator of an epoch this agent holds, a second commit for a filled slot) and items
//! that are behind; this driver turns it into client events and repairs the channel:
//!
//! - **Report**: a [`ClientEvent::Fork`] names the channel and the epochs (once per remote
//!   epoch); [`Client::channel_stats`] counts forks, resyncs and skipped items.
//! - **Verify**: on evidence, the agent compares the commits it applied with the relay's
//!   archive. Only the side that cannot follow the relay's order resyncs; the other reports.
//! - **Resync**: the agent asks the members for a current GroupInfo (a signed request; the
//!   answer is HPKE-sealed to it, see `skytale_core` `resync`), rejoins by an external commit
//!   that replaces its own old leaf, and keeps its outbox: sends wait during the resync and
//!   are encrypted in the new epoch; messages it sent on the abandoned branch (acked by the
//!   relay but unreadable for the others) are sent again. Items it cannot process are kept
//!   (its position stays before them) and retried after the resync; what is truly lost is
//!   counted as skipped.

use std::collections::{BTreeSet, HashSet};
use std::sync::Weak;

use skytale_core::{ResyncItem, ResyncRequest};

use super::*;

/// How long one resync request waits for an answer.
const ANSWER_WAIT: Duration = Duration::from_secs(4);
/// Resync attempts before giving up (reported as an error; the next evidence starts again).
const HEAL_ATTEMPTS: u32 = 20;
/// Messages kept per channel until another member shows it shares their epoch.
const SENT_LOG_CAP: usize = 10_000;
/// Own seqs remembered per channel (to tell holes from this agent's own items).
const OWN_CAP: usize = 100_000;
/// Resync requests answered, remembered to answer each once.
const ANSWERED_CAP: usize = 256;
/// How many of the last filled slots are compared with the relay's archive.
const VERIFY_SLOTS: usize = 8;

/// Per-channel counters of the fork machinery (see [`Client::channel_stats`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ChannelStats {
    /// Items skipped as unprocessable (persisted): garbage, replays, another branch's
    /// messages, items from before a resync.
    pub skipped: u64,
    /// Forks reported since this client connected.
    pub forks: u64,
    /// Resyncs completed since this client connected.
    pub heals: u64,
}

/// A pending resync request, the relay epoch when it was sent (older answers come from members
/// that are behind themselves) and where its answer (`relay epoch`, `GroupInfo`) goes.
type Waiter = (Arc<ResyncRequest>, u64, oneshot::Sender<(u64, Vec<u8>)>);

struct SentEntry {
    relay_epoch: u64,
    data: Zeroizing<Vec<u8>>,
}

#[derive(Default)]
struct State {
    own: HashMap<String, BTreeSet<u64>>,
    in_flight: HashMap<String, usize>,
    healing: HashSet<String>,
    waiters: HashMap<String, Waiter>,
    answered: VecDeque<Vec<u8>>,
    sent: HashMap<String, VecDeque<SentEntry>>,
    forks: HashMap<String, u64>,
    heals: HashMap<String, u64>,
    reported: HashSet<(String, u64)>,
    verifying: HashSet<String>,
    active: HashMap<String, tokio::time::Instant>,
}

/// The fork machinery's in-memory state, one per client.
pub(super) struct ForkState {
    me: Weak<Shared>,
    state: StdMutex<State>,
    /// Woken when one of this agent's sends or commits was answered.
    pub(super) acked: Notify,
    healed: Notify,
}

impl ForkState {
    pub(super) fn new(me: Weak<Shared>) -> Self {
        ForkState { me, state: StdMutex::new(State::default()), acked: Notify::new(), healed: Notify::new() }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A send or commit of this agent is written and not answered yet.
    pub(super) fn begin_send(&self, channel: &str) {
        let mut s = self.lock();
        *s.in_flight.entry(channel.to_string()).or_default() += 1;
        s.active.insert(channel.to_string(), tokio::time::Instant::now());
    }

    /// Notes traffic on `channel` (see [`ForkState::active_channels`]).
    pub(super) fn touch(&self, channel: &str) {
        self.lock().active.insert(channel.to_string(), tokio::time::Instant::now());
    }

    /// Channels with traffic within `within` (older ones are forgotten).
    pub(super) fn active_channels(&self, within: Duration) -> Vec<String> {
        let mut s = self.lock();
        let now = tokio::time::Instant::now();
        s.active.retain(|_, at| now.duration_since(*at) < within);
        s.active.keys().cloned().collect()
    }

    /// The relay answered one of this agent's items; `seq` if it archived it.
    pub(super) fn end_send(&self, channel: &str, seq: Option<u64>) {
        {
            let mut s = self.lock();
            if let Some(n) = s.in_flight.get_mut(channel) {
                *n = n.saturating_sub(1);
            }
            if let Some(seq) = seq {
                let own = s.own.entry(channel.to_string()).or_default();
                own.insert(seq);
                while own.len() > OWN_CAP {
                    own.pop_first();
                }
            }
        }
        self.acked.notify_waiters();
    }

    /// Records an item of this agent archived under `seq` (outside the send path).
    pub(super) fn note_own(&self, channel: &str, seq: u64) {
        self.begin_send(channel);
        self.end_send(channel, Some(seq));
    }

    pub(super) fn in_flight(&self, channel: &str) -> usize {
        self.lock().in_flight.get(channel).copied().unwrap_or(0)
    }

    /// This agent's own seqs after `last` (older ones are forgotten).
    pub(super) fn own_after(&self, channel: &str, last: u64) -> BTreeSet<u64> {
        let mut s = self.lock();
        match s.own.get_mut(channel) {
            Some(own) => {
                *own = own.split_off(&(last + 1));
                own.clone()
            }
            None => BTreeSet::new(),
        }
    }

    pub(super) fn forget_own_through(&self, channel: &str, seq: u64) {
        if let Some(own) = self.lock().own.get_mut(channel) {
            *own = own.split_off(&(seq + 1));
        }
    }

    pub(super) fn is_healing(&self, channel: &str) -> bool {
        self.lock().healing.contains(channel)
    }

    /// Waits until no resync of `channel` is running.
    pub(super) async fn wait_healed(&self, channel: &str) {
        loop {
            let healed = self.healed.notified();
            if !self.is_healing(channel) {
                return;
            }
            tokio::select! {
                _ = healed => {}
                _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            }
        }
    }

    /// Keeps a sent message until another member shows it shares the epoch it was sent in.
    pub(super) fn note_sent(&self, channel: &str, relay_epoch: u64, data: &[u8]) {
        let mut s = self.lock();
        let log = s.sent.entry(channel.to_string()).or_default();
        log.push_back(SentEntry { relay_epoch, data: Zeroizing::new(data.to_vec()) });
        while log.len() > SENT_LOG_CAP {
            log.pop_front();
        }
    }

    /// Another member's item of relay epoch `relay_epoch` was processed here: what this
    /// agent sent up to that epoch is on the shared branch.
    pub(super) fn confirm(&self, channel: &str, relay_epoch: u64) {
        if let Some(log) = self.lock().sent.get_mut(channel) {
            while log.front().map(|e| e.relay_epoch <= relay_epoch).unwrap_or(false) {
                log.pop_front();
            }
        }
    }

    /// Takes the messages sent after relay slot `slot` (on a branch the others do not have).
    fn take_unconfirmed(&self, channel: &str, slot: Option<u64>) -> Vec<Zeroizing<Vec<u8>>> {
        let mut s = self.lock();
        let Some(log) = s.sent.remove(channel) else { return Vec::new() };
        match slot {
            Some(slot) => log.into_iter().filter(|e| e.relay_epoch > slot).map(|e| e.data).collect(),
            None => Vec::new(),
        }
    }

    fn begin_heal(&self, channel: &str) -> bool {
        self.lock().healing.insert(channel.to_string())
    }

    fn end_heal(&self, channel: &str, healed: bool) {
        {
            let mut s = self.lock();
            s.healing.remove(channel);
            s.waiters.remove(channel);
            if healed {
                *s.heals.entry(channel.to_string()).or_default() += 1;
                s.reported.retain(|(c, _)| c != channel);
            }
        }
        self.healed.notify_waiters();
    }

    /// Whether a fork of `channel` at `remote_epoch` is reported for the first time.
    fn first_report(&self, channel: &str, remote_epoch: u64) -> bool {
        let mut s = self.lock();
        let first = s.reported.insert((channel.to_string(), remote_epoch));
        if first {
            *s.forks.entry(channel.to_string()).or_default() += 1;
        }
        first
    }

    fn counters(&self, channel: &str) -> (u64, u64) {
        let s = self.lock();
        (s.forks.get(channel).copied().unwrap_or(0), s.heals.get(channel).copied().unwrap_or(0))
    }
}

impl Shared {
    /// Emits a [`ClientEvent::Fork`] the first time a fork of `channel` at `remote_epoch` is
    /// seen; returns whether it was the first time.
    fn report_fork(&self, channel: &str, local_epoch: u64, remote_epoch: u64, reason: String) -> bool {
        let first = self.fork.first_report(channel, remote_epoch);
        if first {
            tracing::warn!(channel, local_epoch, remote_epoch, "fork detected");
            self.emit(ClientEvent::Fork { channel: channel.to_string(), local_epoch, remote_epoch, reason });
        }
        first
    }

    /// Fork evidence from a delivered item: report it, then check which side is off.
    pub(super) fn on_fork(&self, d: &Deliver, e: &CoreError) {
        if let CoreError::Fork { local_epoch, remote_epoch, reason, .. } = e {
            let reason = format!("item {} from {}: {reason}", d.seq, d.sender);
            if self.report_fork(&d.channel, *local_epoch, *remote_epoch, reason) {
                self.verify_against_archive(&d.channel);
            }
        }
    }

    /// Starts a resync of `channel` unless one runs. `fork_slot`: the first relay slot this
    /// agent's state disagrees with the relay's archive on, if known (what it sent after that
    /// slot is sent again).
    /// `remote_epoch`: where the relay's order is (reported in the event).
    pub(super) fn start_heal(&self, channel: &str, fork_slot: Option<u64>, remote_epoch: u64, reason: String) {
        let Some(shared) = self.fork.me.upgrade() else { return };
        if *self.closed.borrow() || !self.fork.begin_heal(channel) {
            return;
        }
        let local = self.agent.epoch(channel).unwrap_or(0);
        self.report_fork(channel, local, remote_epoch, reason);
        let channel = channel.to_string();
        tokio::spawn(async move { heal(shared, channel, fork_slot).await });
    }

    /// Compares the commits this agent applied in the last slots with the relay's archive
    /// (in the background); a difference means this agent is off the relay's order: resync.
    fn verify_against_archive(&self, channel: &str) {
        let Some(shared) = self.fork.me.upgrade() else { return };
        if !self.fork.lock().verifying.insert(channel.to_string()) {
            return;
        }
        let channel = channel.to_string();
        tokio::spawn(async move {
            match off_the_archive(&shared, &channel).await {
                Ok(Some(slot)) => shared.start_heal(
                    &channel,
                    Some(slot),
                    slot,
                    format!("the relay's archive has another commit in slot {slot} than this member applied"),
                ),
                Ok(None) => tracing::debug!(channel, "this member follows the relay's archive"),
                Err(e) => tracing::debug!(channel, code = e.code(), "verifying against the archive failed"),
            }
            shared.fork.lock().verifying.remove(&channel);
        });
    }

    /// A resync request or answer delivered in a channel. `in_order`: its position is recorded.
    pub(super) fn handle_resync_item(&self, d: &Deliver, in_order: bool) {
        if in_order {
            if let Err(e) = self.agent.set_last_seq(&d.channel, d.seq) {
                tracing::debug!(code = e.code(), "recording a resync item's position failed");
            }
        }
        match skytale_core::resync_item_kind(&d.payload) {
            Some(ResyncItem::Request) => self.answer_request(d),
            Some(ResyncItem::Response) => {
                let waiter = self.fork.lock().waiters.remove(&d.channel);
                if let Some((req, at_least, tx)) = waiter {
                    match self.agent.open_resync(&req, &d.payload) {
                        Ok(Some(answer)) if answer.0 >= at_least => {
                            // The waiting attempt may have given up meanwhile: then it asks again.
                            let _ = tx.send(answer);
                        }
                        // An answer to another request, from a member that is behind itself, or
                        // one that does not open: keep waiting.
                        _ => {
                            self.fork.lock().waiters.insert(d.channel.clone(), (req, at_least, tx));
                        }
                    }
                }
            }
            None => {}
        }
    }

    fn answer_request(&self, d: &Deliver) {
        if self.fork.is_healing(&d.channel) || d.payload.len() < 40 {
            return;
        }
        {
            let mut s = self.fork.lock();
            let nonce = d.payload[8..40].to_vec();
            if s.answered.contains(&nonce) {
                return;
            }
            s.answered.push_back(nonce);
            while s.answered.len() > ANSWERED_CAP {
                s.answered.pop_front();
            }
        }
        let Ok(epoch) = self.send_epoch(&d.channel) else { return };
        let answer = match self.agent.answer_resync(&d.channel, &d.payload, &d.sender, epoch, now_secs()) {
            Ok(Some(a)) => a,
            Ok(None) => return,
            Err(e) => {
                self.emit_error(Some(&d.channel), e.code(), format!("resync request from {}: {e}", d.sender));
                return;
            }
        };
        let (Some(shared), Some(conn)) = (self.fork.me.upgrade(), self.conn.borrow().clone()) else { return };
        let channel = d.channel.clone();
        tokio::spawn(async move {
            shared.fork.begin_send(&channel);
            let res = conn.send(&channel, &random_id(), Kind::Application, epoch, answer).await;
            shared.fork.end_send(&channel, res.as_ref().ok().map(|a| a.seq));
            if let Err(e) = res {
                tracing::debug!(
                    channel,
                    code = e.code(),
                    "answering a resync request failed; the requester asks again"
                );
            }
        });
    }

    /// Sends again, first in the outbox, what this agent sent on an abandoned branch.
    fn resend(&self, channel: &str, lost: Vec<Zeroizing<Vec<u8>>>) {
        if lost.is_empty() {
            return;
        }
        tracing::info!(channel, count = lost.len(), "sending again what was sent on the abandoned branch");
        if let Ok(mut outbox) = self.outbox.lock() {
            for data in lost.into_iter().rev() {
                let (done, _) = oneshot::channel();
                outbox.push_front(OutItem { channel: channel.to_string(), client_msg_id: random_id(), data, done });
            }
        }
        self.outbox_notify.notify_one();
    }
}

/// The first of the last filled slots where the relay's archive disagrees with this agent
/// (another commit in it, or the relay behind this agent's slots); `None` if it agrees.
async fn off_the_archive(shared: &Arc<Shared>, channel: &str) -> Result<Option<u64>> {
    let conn = shared.live_conn().await?;
    let info = conn.channel_state(channel).await?;
    let filled = shared.agent.relay_epoch(channel)?.unwrap_or(0);
    if info.epoch < filled {
        return Ok(Some(info.epoch));
    }
    let slots = shared.agent.commit_slots(channel)?;
    let recent = &slots[slots.len().saturating_sub(VERIFY_SLOTS)..];
    let Some(first) = recent.first() else { return Ok(None) };
    let resynced_at = shared.agent.resynced_at(channel)?;
    let mut after = first.1.saturating_sub(1).max(resynced_at);
    loop {
        let (items, done) = conn.fetch(channel, after, 0).await?;
        for d in items.iter().filter(|d| d.kind == Kind::Commit as i32 && d.seq > resynced_at) {
            match recent.iter().find(|s| s.0 == d.epoch) {
                Some(s) if s.2 == skytale_core::commit_hash(&d.payload) => {}
                Some(_) => return Ok(Some(d.epoch)),
                None if d.epoch >= first.0 && d.epoch < filled => return Ok(Some(d.epoch)),
                None => {}
            }
        }
        after = items.last().map(|d| d.seq).unwrap_or(done.last_seq);
        if !done.more || items.is_empty() {
            return Ok(None);
        }
    }
}

async fn heal(shared: Arc<Shared>, channel: String, fork_slot: Option<u64>) {
    let mut closed = shared.closed.subscribe();
    // Where this agent left the relay's order, if it did (rather than only falling behind):
    // what it sent after that slot was acked but is unreadable for the others.
    let fork_slot = match fork_slot {
        Some(s) => Some(s),
        None => off_the_archive(&shared, &channel).await.ok().flatten(),
    };
    for attempt in 0..HEAL_ATTEMPTS {
        if *closed.borrow() {
            break;
        }
        match heal_once(&shared, &channel).await {
            Ok(Some(epoch)) => {
                let lost = shared.fork.take_unconfirmed(&channel, fork_slot);
                shared.fork.end_heal(&channel, true);
                shared.emit(ClientEvent::Healed { channel: channel.clone(), epoch });
                shared.resend(&channel, lost);
                // Apply what came meanwhile (items from before the resync are skipped as such).
                let slot = shared.slot(&channel);
                let _guard = slot.lock.lock().await;
                if let Ok(conn) = shared.live_conn().await {
                    if let Err(e) = shared.catch_up_locked(&conn, &channel).await {
                        tracing::debug!(channel, code = e.code(), "catch-up after resync failed");
                    }
                }
                return;
            }
            Ok(None) => tracing::debug!(channel, attempt, "no usable resync answer yet"),
            Err(e) => tracing::debug!(channel, attempt, code = e.code(), "resync attempt failed"),
        }
        tokio::select! {
            _ = tokio::time::sleep(connection::backoff(attempt.min(4))) => {}
            _ = closed.changed() => {}
        }
    }
    shared.fork.end_heal(&channel, false);
    shared.emit_error(
        Some(&channel),
        "SKYTALE_FORK_DETECTED",
        format!("could not resync {channel}; will retry on new evidence"),
    );
}

/// One resync attempt: request, wait for an answer, rejoin, commit. `Some(new epoch)` once
/// the relay accepted the rejoin; `None` to try again.
async fn heal_once(shared: &Arc<Shared>, channel: &str) -> Result<Option<u64>> {
    let conn = shared.live_conn().await?;
    let request = Arc::new(shared.agent.resync_request(channel, now_secs())?);
    let (tx, rx) = oneshot::channel();
    let info = conn.channel_state(channel).await?;
    shared.fork.lock().waiters.insert(channel.to_string(), (request.clone(), info.epoch, tx));
    shared.fork.begin_send(channel);
    let sent = conn.send(channel, &random_id(), Kind::Application, info.epoch, request.bytes().to_vec()).await;
    shared.fork.end_send(channel, sent.as_ref().ok().map(|a| a.seq));
    match sent {
        Ok(_) => {}
        Err(ProtoError::WrongEpoch { .. }) => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    let Ok(Ok((relay_epoch, group_info))) = tokio::time::timeout(ANSWER_WAIT, rx).await else {
        return Ok(None);
    };
    let slot = shared.slot(channel);
    let _guard = slot.lock.lock().await;
    let info = conn.channel_state(channel).await?;
    if info.epoch != relay_epoch {
        return Ok(None); // a stale GroupInfo: ask again
    }
    let out = shared.agent.rejoin_by_external_commit(channel, &group_info)?;
    let msg = Commit {
        channel: channel.to_string(),
        client_msg_id: random_id(),
        epoch: info.epoch,
        payload: out.commit.clone(),
        ..Default::default()
    };
    match conn.commit(msg).await {
        Ok(ack) => {
            shared.fork.note_own(channel, ack.seq);
            shared.agent.mark_resynced(channel, ack.seq, ack.epoch, &out.commit)?;
            shared.note_membership(channel);
            shared.mark_self_updated(channel);
            shared.schedule(FollowUp::RefreshInvites { channel: channel.to_string() });
            Ok(Some(out.epoch))
        }
        Err(ProtoError::WrongEpoch { .. }) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

impl Client {
    /// Counters of the fork machinery for `channel` (skipped items, forks, resyncs).
    pub fn channel_stats(&self, channel: &str) -> Result<ChannelStats> {
        let skipped = self.shared.agent.skipped(channel)?;
        let (forks, heals) = self.shared.fork.counters(channel);
        Ok(ChannelStats { skipped, forks, heals })
    }

    /// The channel's current epoch authenticator (the same for every member in the same state).
    pub fn epoch_authenticator(&self, channel: &str) -> Result<Vec<u8>> {
        Ok(self.shared.agent.epoch_authenticator(channel)?)
    }
}
