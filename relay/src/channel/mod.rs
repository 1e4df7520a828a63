//! Channel actors: one tokio task per active channel owns the channel's ordering, its roster
//! cache and its subscriber list. Requests of one channel are processed in arrival order by its
//! actor, so sequence numbers, the first-wins commit rule and roster changes need no global
//! lock; channels run in parallel and share the storage thread's group commits.
//!
//! An actor takes every queued request at once. Consecutive `Send`s form one batch: one
//! storage round for the channel row, the org's usage and the dedupe lookups, one append
//! (group-committed), then, only after the commit, fan-out in `seq` order and the replies
//! (`Ack` = archived). Creation, commits, join requests and subscriptions are handled one at a
//! time between batches, so a new subscriber's high-water mark is always the last committed and
//! fanned-out item.
//!
//! **Only members touch a channel.** The actor loads the channel's roster from the store once
//! (when it starts) and keeps it in memory: `Send` and `Subscribe` of a non-member are refused
//! with `SKYTALE_NOT_A_MEMBER` by a hash lookup, never by a store round. Commits change the
//! roster in the same transaction that archives them ([`commit`]); the cache follows only after
//! that transaction committed. Removed identities' live subscriptions end at once.
//!
//! **A relay cluster** (a store shared by several relay nodes): other nodes append to the same
//! channels. Their items arrive as [`Cmd::Remote`] ([`fanout`]), with the roster when a commit
//! changed it; an append may be refused with [`RelayError::Conflict`] when the channel moved
//! meanwhile, and the actor then decides again on the fresh state (dedupe, epoch check, new
//! sequence numbers). Fan-out follows a watermark: before pushing item `n` the actor pushes
//! anything up to `n - 1` it has not pushed (read from the store), so local subscribers see every
//! node's items in one order, once. A roster miss is checked against the store once more before
//! a refusal (a member added on another node a moment ago).

mod commit;
mod failed_sends;
mod fanout;
mod join;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use skytale_proto::frames::{Ack, Kind, Nack};
use skytale_proto::ErrorCode;
use tokio::sync::{mpsc, oneshot};

use crate::error::{RelayError, Result};
use crate::hub::Subscriber;
use crate::metrics::Refusal;
use crate::storage::PlanReads;
use crate::store::{Append, ChannelRow, Dup, Remote, Store};
use crate::{now_ms, Relay};
use failed_sends::FailedSends;

/// Most requests one actor takes per round.
const MAX_BATCH: usize = 512;
/// An actor without subscribers stops after this long without requests (it is restarted on
/// the next request; its state is in the store).
const IDLE_EXIT: std::time::Duration = std::time::Duration::from_secs(30);
/// Attempts of one request when a cluster store keeps reporting that the channel moved.
const MAX_CONFLICTS: u32 = 64;

/// Reply to an item: accepted (or a duplicate) or refused for its epoch.
pub enum Outcome {
    /// Archived (or found archived).
    Ack(Ack),
    /// Wrong epoch.
    Nack(Nack),
}

/// An item to order: `Send` (Application/Proposal), a join request or a commit.
pub struct Item {
    /// Org of the channel (the sender's org).
    pub org: String,
    /// Sender identity (authenticated by the session's token).
    pub sender: String,
    /// Client message id ("" = none).
    pub client_msg_id: String,
    /// Kind (wire value).
    pub kind: Kind,
    /// Epoch the sender is at.
    pub epoch: u64,
    /// Ciphertext.
    pub payload: Bytes,
    /// Join requests: (invite id, invite authenticator).
    pub invite: Option<(String, Vec<u8>)>,
    /// Commits: the welcome to queue once for its recipients (a subset of `added`).
    pub welcome: Option<(Vec<String>, Bytes)>,
    /// Commits: identities the commit adds (distinct, valid).
    pub added: Vec<String>,
    /// Commits: identities the commit removes (distinct, valid).
    pub removed: Vec<String>,
    /// Commits: the invite an external commit by a non-member joins with ("" = none).
    pub invite_id: String,
}

/// Where an item's outcome goes: called once, on the actor's task (so it must not block). A
/// reply dropped unanswered (the actor stopped) answers that the channel actor stopped, so no
/// caller waits for ever.
pub struct Reply(Option<Box<dyn FnOnce(Result<Outcome>) + Send>>);

impl Reply {
    /// A reply handled by `answer`.
    pub fn new(answer: impl FnOnce(Result<Outcome>) + Send + 'static) -> Reply {
        Reply(Some(Box::new(answer)))
    }

    /// Answers the item.
    pub fn send(mut self, res: Result<Outcome>) {
        if let Some(answer) = self.0.take() {
            answer(res);
        }
    }
}

impl Drop for Reply {
    fn drop(&mut self) {
        if let Some(answer) = self.0.take() {
            answer(Err(RelayError::Storage("channel actor stopped".to_string())));
        }
    }
}

/// A request to a channel actor.
pub enum Cmd {
    /// Order an item; the reply comes after it was archived.
    Item(Box<Item>, Reply),
    /// `CreateChannel`: creates the channel with the caller as its first member, or answers
    /// the state to a member; `SKYTALE_CHANNEL_EXISTS` for anyone else.
    Create {
        /// Org of the channel.
        org: String,
        /// The caller.
        identity: String,
        /// (state, created).
        reply: oneshot::Sender<Result<(ChannelRow, bool)>>,
    },
    /// Register a member's subscriber; replies with the state whose `last_seq` is the replay
    /// high-water mark, and the member's `since_seq` (nothing at or before it is replayed).
    Subscribe {
        /// Connection id.
        conn_id: u64,
        /// Push handle (its identity is the subscriber).
        sub: Subscriber,
        /// (state, since_seq).
        reply: oneshot::Sender<Result<(ChannelRow, u64)>>,
    },
    /// Drop a connection's subscription.
    Unsubscribe(u64),
    /// Items another relay node archived.
    Remote(Remote),
}

impl Cmd {
    /// Answers the request with an error (nothing was done).
    fn fail(self, e: &RelayError) {
        let err = || RelayError::wire(e.code(), e.client_message());
        match self {
            Cmd::Item(_, reply) => reply.send(Err(err())),
            Cmd::Create { reply, .. } => {
                let _ = reply.send(Err(err()));
            }
            Cmd::Subscribe { reply, .. } => {
                let _ = reply.send(Err(err()));
            }
            Cmd::Unsubscribe(_) | Cmd::Remote(_) => {}
        }
    }
}

/// The actors by channel name.
#[derive(Default)]
pub struct Channels {
    map: Mutex<HashMap<String, mpsc::UnboundedSender<Cmd>>>,
}

impl Channels {
    /// Sends a request to the channel's actor (starting it if needed).
    pub fn send(&self, relay: &Arc<Relay>, channel: &str, cmd: Cmd) {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        let cmd = match map.get(channel) {
            Some(tx) => match tx.send(cmd) {
                Ok(()) => return,
                Err(mpsc::error::SendError(cmd)) => cmd,
            },
            None => cmd,
        };
        let (tx, rx) = mpsc::unbounded_channel();
        // The receiver is alive (it is moved into the actor below), so this cannot fail.
        let _ = tx.send(cmd);
        map.insert(channel.to_string(), tx);
        let actor = Actor {
            relay: relay.clone(),
            name: channel.to_string(),
            subs: HashMap::new(),
            roster: None,
            delivered: None,
            last_local: std::time::Instant::now(),
            failed: FailedSends::default(),
        };
        tokio::spawn(actor.run(rx));
    }

    /// Removes an idle actor's mailbox if nothing is queued in it. Every send happens under
    /// the map lock, so nothing can arrive between the check and the removal.
    fn retire(&self, channel: &str, rx: &mpsc::UnboundedReceiver<Cmd>) -> bool {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        if !rx.is_empty() {
            return false;
        }
        map.remove(channel);
        true
    }

    /// Drops a connection's subscription (if the actor is running).
    pub fn unsubscribe(&self, channel: &str, conn_id: u64) {
        let map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(tx) = map.get(channel) {
            // A stopped actor has no subscriptions to drop.
            let _ = tx.send(Cmd::Unsubscribe(conn_id));
        }
    }

    /// Hands items another node archived to the channel's actor, if it runs here (an actor
    /// that is not running has no subscribers to push to and reads its roster when it starts).
    pub fn remote(&self, r: Remote) {
        let map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(tx) = map.get(&r.channel) {
            // A stopped actor has nothing to push to.
            let _ = tx.send(Cmd::Remote(r));
        }
    }

    /// Orders an item on its channel and waits for the outcome.
    pub async fn item(&self, relay: &Arc<Relay>, channel: &str, item: Item) -> Result<Outcome> {
        let (tx, rx) = oneshot::channel();
        let reply = Reply::new(move |res| {
            // The caller may have stopped waiting.
            let _ = tx.send(res);
        });
        self.send(relay, channel, Cmd::Item(Box::new(item), reply));
        rx.await.map_err(|_| RelayError::Storage("channel actor stopped".to_string()))?
    }
}

/// The channel's roster as the actor knows it (loaded once, then kept in step with commits).
struct Roster {
    /// Whether the channel exists.
    exists: bool,
    /// identity → since_seq.
    members: HashMap<String, u64>,
}

struct Actor {
    relay: Arc<Relay>,
    name: String,
    subs: HashMap<u64, Subscriber>,
    roster: Option<Roster>,
    /// Highest seq pushed to the subscribers; `None` while there are none.
    delivered: Option<u64>,
    /// Last request from this node (items of other nodes alone do not keep an actor alive).
    last_local: std::time::Instant,
    /// Senders whose later sends wait for the retry of one the store failed to archive.
    failed: FailedSends,
}

/// What a batched `Send` comes to before the append.
enum Plan {
    /// Answered without archiving (refused, duplicate of an archived item, or wrong epoch).
    Ready(Result<Outcome>),
    /// Archived by this batch.
    Staged(Ack),
    /// A duplicate of an item staged in this batch.
    SameAs(Dup),
}

/// Decides a batch of `Send`s of `channel` (where the store runs it, against the channel's row
/// `row`): a duplicate of an archived item is answered with its ack, one of an item earlier in
/// the batch with that one's, a wrong epoch with a `Nack`, an item over the org's archive
/// quota with `SKYTALE_QUOTA_EXCEEDED`; the rest get the next sequence numbers. Returns the
/// answer plan per item and the appends (`templates` with seq and epoch filled in).
fn plan_sends(
    s: &mut dyn PlanReads,
    relay: &Relay,
    channel: &str,
    org: &str,
    mut row: ChannelRow,
    templates: Vec<Append>,
) -> Result<(Vec<Plan>, Vec<Append>)> {
    let mut used = s.org_usage(org)?.archive_bytes;
    let quota = relay.config.limits.max_archive_bytes_per_org;
    let mut plans = Vec::with_capacity(templates.len());
    let mut appends = Vec::new();
    // in-batch dedupe: (sender, client_msg_id) → the staged item
    let mut fresh: HashMap<(String, String), Dup> = HashMap::new();
    for mut a in templates {
        if let Some(d) = s.find_dup(channel, &a.sender, &a.client_msg_id)? {
            plans.push(Plan::Ready(Ok(dup_ack(channel, d))));
            continue;
        }
        let key = (a.sender.clone(), a.client_msg_id.clone());
        if let Some(d) = fresh.get(&key) {
            plans.push(Plan::SameAs(*d));
            continue;
        }
        if a.epoch != row.epoch {
            let nack = Nack { channel: channel.to_string(), current_epoch: row.epoch, last_seq: row.last_seq };
            plans.push(Plan::Ready(Ok(Outcome::Nack(nack))));
            continue;
        }
        let size = a.payload.len() as u64;
        if used.saturating_add(size) > quota {
            let e = relay
                .metrics
                .refuse(Refusal::QuotaArchiveBytes, format!("the org's archive quota ({quota} bytes) is used up"));
            plans.push(Plan::Ready(Err(e)));
            continue;
        }
        used += size;
        row.last_seq += 1;
        if !a.client_msg_id.is_empty() {
            fresh.insert(key, Dup { seq: row.last_seq, epoch: row.epoch, kind: a.kind });
        }
        plans.push(Plan::Staged(Ack {
            channel: channel.to_string(),
            seq: row.last_seq,
            epoch: row.epoch,
            duplicate: false,
        }));
        a.seq = row.last_seq;
        a.new_epoch = row.epoch;
        appends.push(a);
    }
    Ok((plans, appends))
}

fn busy(channel: &str) -> RelayError {
    wire(ErrorCode::RateLimited, format!("channel {channel} is busy on other relay nodes; retry"))
}

fn wire(code: ErrorCode, msg: impl Into<String>) -> RelayError {
    RelayError::wire(code, msg)
}

fn dup_ack(channel: &str, d: Dup) -> Outcome {
    let epoch = if d.kind == Kind::Commit as i32 { d.epoch + 1 } else { d.epoch };
    Outcome::Ack(Ack { channel: channel.to_string(), seq: d.seq, epoch, duplicate: true })
}

/// Requires `identity` to be in `channel`'s roster, on the storage thread (for requests that
/// do not go through the channel's actor: `Fetch`, `ChannelState`, invites). Returns its
/// `since_seq`; `SKYTALE_CHANNEL_NOT_FOUND` if the channel does not exist,
/// `SKYTALE_NOT_A_MEMBER` (counted) if the identity is not a member.
pub fn require_member(relay: &Relay, store: &dyn Store, channel: &str, identity: &str) -> Result<u64> {
    if let Some(since) = store.member(channel, identity)? {
        return Ok(since);
    }
    if store.channel(channel)?.is_none() {
        return Err(wire(ErrorCode::ChannelNotFound, "no such channel"));
    }
    Err(relay.metrics.refuse(Refusal::NotAMember, format!("{identity} is not a member of {channel}")))
}

/// Refuses `adding` more payload bytes once the org's archive quota would be exceeded.
fn check_archive_quota(relay: &Relay, store: &dyn Store, org: &str, adding: u64) -> Result<()> {
    let max = relay.config.limits.max_archive_bytes_per_org;
    let used = store.org_usage(org)?.archive_bytes;
    if used.saturating_add(adding) > max {
        return Err(relay
            .metrics
            .refuse(Refusal::QuotaArchiveBytes, format!("the org's archive quota ({max} bytes) is used up")));
    }
    Ok(())
}

impl Actor {
    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Cmd>) {
        let mut cmds = Vec::with_capacity(MAX_BATCH);
        loop {
            let wait = IDLE_EXIT.saturating_sub(self.last_local.elapsed()).max(std::time::Duration::from_millis(10));
            let first = match tokio::time::timeout(wait, rx.recv()).await {
                Ok(Some(c)) => c,
                Ok(None) => return,
                Err(_) => {
                    if self.subs.is_empty() && self.relay.channels.retire(&self.name, &rx) {
                        return;
                    }
                    self.last_local = std::time::Instant::now();
                    continue;
                }
            };
            cmds.push(first);
            while cmds.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(c) => cmds.push(c),
                    Err(_) => break,
                }
            }
            if let Err(e) = self.load_roster().await {
                tracing::error!(channel = %self.name, error = %e, "loading the roster failed");
                for cmd in cmds.drain(..) {
                    cmd.fail(&e);
                }
                continue;
            }
            let mut sends: Vec<(Item, Reply)> = Vec::new();
            for cmd in cmds.drain(..) {
                if !matches!(cmd, Cmd::Remote(_)) {
                    self.last_local = std::time::Instant::now();
                }
                match cmd {
                    Cmd::Item(item, reply) if item.invite.is_none() && item.kind != Kind::Commit => {
                        sends.push((*item, reply));
                    }
                    Cmd::Item(item, reply) => {
                        self.send_batch(std::mem::take(&mut sends)).await;
                        let res =
                            if item.kind == Kind::Commit { self.commit(*item).await } else { self.join(*item).await };
                        reply.send(res);
                    }
                    Cmd::Create { org, identity, reply } => {
                        self.send_batch(std::mem::take(&mut sends)).await;
                        let _ = reply.send(self.create(org, identity).await);
                    }
                    Cmd::Subscribe { conn_id, sub, reply } => {
                        self.send_batch(std::mem::take(&mut sends)).await;
                        let _ = reply.send(self.subscribe(conn_id, sub).await);
                    }
                    Cmd::Unsubscribe(conn_id) => {
                        self.subs.remove(&conn_id);
                        if self.subs.is_empty() {
                            self.delivered = None;
                        }
                    }
                    // Pushes do not depend on the batch being staged: the watermark orders them.
                    Cmd::Remote(r) => self.remote(r).await,
                }
            }
            self.send_batch(sends).await;
        }
    }

    /// Loads the roster once (the actor keeps it in step with what it commits afterwards).
    async fn load_roster(&mut self) -> Result<()> {
        if self.roster.is_some() {
            return Ok(());
        }
        let name = self.name.clone();
        let (exists, members) =
            self.relay.storage.call(move |s| Ok((s.channel(&name)?.is_some(), s.roster(&name)?))).await?;
        self.roster = Some(Roster { exists, members: members.into_iter().collect() });
        Ok(())
    }

    /// `Some(since_seq)` if `identity` is in the roster.
    fn member(&self, identity: &str) -> Option<u64> {
        self.roster.as_ref().and_then(|r| r.members.get(identity).copied())
    }

    fn exists(&self) -> bool {
        self.roster.as_ref().is_some_and(|r| r.exists)
    }

    /// [`Actor::check_member`], but a miss is checked once more against the store (a cluster
    /// store may have seen a commit of another node that this actor has not been told about).
    async fn check_member_fresh(&mut self, identity: &str) -> Result<u64> {
        if self.exists() && self.member(identity).is_some() {
            return self.check_member(identity);
        }
        self.roster = None;
        self.load_roster().await?;
        self.check_member(identity)
    }

    /// Refuses a caller that is not in the roster (`SKYTALE_CHANNEL_NOT_FOUND` if the channel
    /// does not exist at all). Returns the caller's `since_seq`.
    fn check_member(&self, identity: &str) -> Result<u64> {
        if !self.exists() {
            return Err(wire(ErrorCode::ChannelNotFound, "no such channel"));
        }
        self.member(identity).ok_or_else(|| {
            self.relay.metrics.refuse(Refusal::NotAMember, format!("{identity} is not a member of {}", self.name))
        })
    }

    /// `CreateChannel`: create with the caller as the first member; a member gets the state;
    /// anyone else `SKYTALE_CHANNEL_EXISTS`. A channel that exists but has neither a roster nor
    /// any history (from before rosters; see the store's migration notes) is claimed.
    async fn create(&mut self, org: String, identity: String) -> Result<(ChannelRow, bool)> {
        let name = self.name.clone();
        let relay = self.relay.clone();
        let is_member = self.member(&identity).is_some();
        let roster_empty = self.roster.as_ref().is_none_or(|r| r.members.is_empty());
        let me = identity.clone();
        let (row, created, joined) = self
            .relay
            .storage
            .call(move |s| {
                if let Some(row) = s.channel(&name)? {
                    if is_member {
                        return Ok((row, false, false));
                    }
                    if roster_empty && row.last_seq == 0 {
                        s.create_channel(&name, &org, &me, now_ms())?;
                        return Ok((row, false, true));
                    }
                    return Err(relay
                        .metrics
                        .refuse(Refusal::ChannelExists, "the channel was created by someone else"));
                }
                let max = relay.config.limits.max_channels_per_org;
                if s.org_usage(&org)?.channels >= max {
                    return Err(relay
                        .metrics
                        .refuse(Refusal::QuotaChannels, format!("the org's channel quota ({max}) is used up")));
                }
                let created = s.create_channel(&name, &org, &me, now_ms())?;
                Ok((ChannelRow::default(), created, true))
            })
            .await?;
        if let Some(r) = self.roster.as_mut() {
            r.exists = true;
            if joined {
                r.members.entry(identity).or_insert(0);
            }
        }
        if created {
            tracing::info!(channel = %self.name, "channel created");
        }
        Ok((row, created))
    }

    /// `Subscribe` of a member: registers the subscriber and answers the high-water mark.
    /// The high-water mark is what has been pushed so far (the rest comes live).
    async fn subscribe(&mut self, conn_id: u64, sub: Subscriber) -> Result<(ChannelRow, u64)> {
        let since = self.check_member_fresh(&sub.identity).await?;
        let name = self.name.clone();
        let row = self
            .relay
            .storage
            .call(move |s| s.channel(&name))
            .await?
            .ok_or_else(|| wire(ErrorCode::ChannelNotFound, "no such channel"))?;
        match self.delivered {
            Some(d) if row.last_seq > d => self.catch_up(row.last_seq).await,
            Some(_) => {}
            None => self.delivered = Some(row.last_seq),
        }
        self.subs.insert(conn_id, sub);
        let hw = self.delivered.unwrap_or(row.last_seq);
        Ok((ChannelRow { epoch: row.epoch, last_seq: hw }, since))
    }

    /// Orders a batch of `Send`s: one storage round for row + usage + dedupe, one
    /// group-committed append, then fan-out and replies. A conflict (cluster store) decides the
    /// batch anew.
    async fn send_batch(&mut self, sends: Vec<(Item, Reply)>) {
        if sends.is_empty() {
            return;
        }
        // Members only: a hash lookup per item (a miss is checked against the store once).
        let now = std::time::Instant::now();
        let mut allowed = Vec::with_capacity(sends.len());
        for (item, reply) in sends {
            match self.check_member_fresh(&item.sender).await {
                // A send of this sender failed to archive: its later ones wait for its retry.
                Ok(_) if !self.failed.admit(&item.sender, &item.client_msg_id, now) => {
                    reply.send(Err(RelayError::Storage(
                        "an earlier send of this sender was not archived and goes first".into(),
                    )));
                }
                Ok(_) => allowed.push((item, reply)),
                Err(e) => reply.send(Err(e)),
            }
        }
        if allowed.is_empty() {
            return;
        }
        let (items, replies): (Vec<Item>, Vec<Reply>) = allowed.into_iter().unzip();
        skytale_proto::probe::mark_n("relay.actor", items.len());
        let results = self.order_sends(&items).await;
        for ((item, reply), res) in items.iter().zip(replies).zip(results) {
            // Not archived this time, and retried by the client (a refusal for good, such as
            // the archive quota, holds nothing).
            let retried = match &res {
                Err(e) => matches!(e, RelayError::Storage(_)) || e.code() == ErrorCode::RateLimited,
                Ok(_) => false,
            };
            if retried {
                self.failed.failed(&item.sender, &item.client_msg_id, now);
            }
            reply.send(res);
        }
    }

    async fn order_sends(&mut self, items: &[Item]) -> Vec<Result<Outcome>> {
        let all = |e: &dyn Fn() -> RelayError| items.iter().map(|_| Err(e())).collect();
        let bytes = items.iter().map(|i| i.payload.len()).sum();
        for _ in 0..MAX_CONFLICTS {
            // One storage round: the lookups, the plan and the append (group-committed).
            let now = now_ms();
            let templates: Vec<Append> = items.iter().map(|i| append_of(&self.name, i, 0, 0, now)).collect();
            let (name, relay) = (self.name.clone(), self.relay.clone());
            let org = items.first().map(|i| i.org.clone()).unwrap_or_default();
            let planned = self
                .relay
                .storage
                .plan_append(items.len(), bytes, move |s| {
                    skytale_proto::probe::mark_n("relay.store", templates.len());
                    let Some(row) = s.channel(&name)? else { return Ok((None, Vec::new())) };
                    let (plans, appends) = plan_sends(s, &relay, &name, &org, row, templates)?;
                    let copy = appends.clone();
                    Ok((Some((plans, copy)), appends))
                })
                .await;
            skytale_proto::probe::mark_n("relay.resumed", items.len());
            let (planned, archived) = match planned {
                Ok(x) => x,
                Err(e) => return all(&|| RelayError::Storage(e.to_string())),
            };
            let Some((plans, appended)) = planned else {
                return all(&|| wire(ErrorCode::ChannelNotFound, "no such channel"));
            };
            let archived = match archived {
                Ok(_) => {
                    if let Some(first) = appended.first().map(|a| a.seq) {
                        self.archived(first, appended).await;
                    }
                    Ok(())
                }
                Err(RelayError::Conflict(_)) => continue,
                Err(e) => {
                    tracing::error!(channel = %self.name, error = %e, "archive failed");
                    Err(e.to_string())
                }
            };
            return plans
                .into_iter()
                .map(|p| match (p, &archived) {
                    (Plan::Ready(o), _) => o,
                    (Plan::Staged(a), Ok(())) => Ok(Outcome::Ack(a)),
                    (Plan::SameAs(d), Ok(())) => Ok(dup_ack(&self.name, d)),
                    (_, Err(e)) => Err(RelayError::Storage(e.clone())),
                })
                .collect();
        }
        all(&|| busy(&self.name))
    }

    fn append_of(&self, item: &Item, seq: u64, new_epoch: u64, now: u64) -> Append {
        append_of(&self.name, item, seq, new_epoch, now)
    }
}

/// The archive row of `item` in `channel` at `seq`.
fn append_of(channel: &str, item: &Item, seq: u64, new_epoch: u64, now: u64) -> Append {
    Append {
        channel: channel.to_string(),
        org: item.org.clone(),
        seq,
        epoch: item.epoch,
        new_epoch,
        kind: item.kind as i32,
        sender: item.sender.clone(),
        client_msg_id: item.client_msg_id.clone(),
        payload: item.payload.clone(),
        now_ms: now,
        welcome: item.welcome.clone(),
        added: item.added.clone(),
        removed: item.removed.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn capture() -> (Reply, std::sync::mpsc::Receiver<Result<Outcome>>) {
        let (tx, rx) = std::sync::mpsc::channel();
        (
            Reply::new(move |res| {
                tx.send(res).unwrap();
            }),
            rx,
        )
    }

    #[test]
    fn a_reply_answers_once_with_what_it_is_given() {
        let (reply, rx) = capture();
        let ack = Ack { channel: "acme/c".into(), seq: 7, epoch: 2, duplicate: false };
        reply.send(Ok(Outcome::Ack(ack)));
        match rx.try_recv().unwrap() {
            Ok(Outcome::Ack(a)) => assert_eq!((a.seq, a.epoch), (7, 2)),
            _ => panic!("expected the ack"),
        }
        assert!(rx.try_recv().is_err(), "answered twice");
    }

    #[test]
    fn a_reply_dropped_unanswered_says_the_actor_stopped() {
        let (reply, rx) = capture();
        drop(reply);
        match rx.try_recv().unwrap() {
            Err(e) => assert!(e.to_string().contains("channel actor stopped"), "{e}"),
            Ok(_) => panic!("expected an error"),
        }
        assert!(rx.try_recv().is_err(), "answered twice");
    }
}
