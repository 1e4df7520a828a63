//! Channel actors: one tokio task per active channel owns the channel's ordering and its
//! subscriber list. Requests of one channel are processed in arrival order by its actor, so
//! sequence numbers and the first-wins commit rule need no global lock; channels run in
//! parallel and share the storage thread's group commits.
//!
//! An actor takes every queued request at once. Consecutive `Send`s form one batch: one
//! storage round for the channel row and the dedupe lookups, one append (group-committed),
//! then, only after the commit, fan-out in `seq` order and the replies (`Ack` = archived).
//! Commits, join requests and subscriptions are handled one at a time between batches, so a
//! new subscriber's high-water mark is always the last committed and fanned-out item.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use skytale_proto::codec::encode_frame;
use skytale_proto::frames::{Ack, Body, Deliver, Frame, Kind, Nack, Welcome};
use skytale_proto::{ErrorCode, RELAY_FRAME_ALLOWANCE};
use tokio::sync::{mpsc, oneshot};

use crate::error::{RelayError, Result};
use crate::hub::Subscriber;
use crate::metrics::Metrics;
use crate::store::{Append, ChannelRow, Dup};
use crate::{now_ms, Relay};

/// Most requests one actor takes per round.
const MAX_BATCH: usize = 512;
/// An actor without subscribers stops after this long without requests (it is restarted on
/// the next request; its state is in the store).
const IDLE_EXIT: std::time::Duration = std::time::Duration::from_secs(30);

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
    /// Sender identity.
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
    /// Commits: welcomes to queue `(recipient, payload)`.
    pub welcomes: Vec<(String, Vec<u8>)>,
}

/// A request to a channel actor.
pub enum Cmd {
    /// Order an item; the reply comes after it was archived.
    Item(Item, oneshot::Sender<Result<Outcome>>),
    /// Create the channel if needed and register a subscriber; replies with the state whose
    /// `last_seq` is the replay high-water mark.
    Subscribe {
        /// Org of the channel.
        org: String,
        /// Connection id.
        conn_id: u64,
        /// Push handle.
        sub: Subscriber,
        /// (state, created).
        reply: oneshot::Sender<Result<(ChannelRow, bool)>>,
    },
    /// Drop a connection's subscription.
    Unsubscribe(u64),
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
        let _ = tx.send(cmd);
        map.insert(channel.to_string(), tx);
        let actor = Actor { relay: relay.clone(), name: channel.to_string(), subs: HashMap::new() };
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
            let _ = tx.send(Cmd::Unsubscribe(conn_id));
        }
    }

    /// Orders an item on its channel and waits for the outcome.
    pub async fn item(&self, relay: &Arc<Relay>, channel: &str, item: Item) -> Result<Outcome> {
        let (tx, rx) = oneshot::channel();
        self.send(relay, channel, Cmd::Item(item, tx));
        rx.await.map_err(|_| RelayError::Storage("channel actor stopped".to_string()))?
    }
}

struct Actor {
    relay: Arc<Relay>,
    name: String,
    subs: HashMap<u64, Subscriber>,
}

type Reply = oneshot::Sender<Result<Outcome>>;

/// A staged item of a batch: its append, its delivery, its reply.
struct Staged {
    append: Append,
    reply: Reply,
}

fn wire(code: ErrorCode, msg: impl Into<String>) -> RelayError {
    RelayError::wire(code, msg)
}

fn dup_ack(channel: &str, d: Dup) -> Outcome {
    let epoch = if d.kind == Kind::Commit as i32 { d.epoch + 1 } else { d.epoch };
    Outcome::Ack(Ack { channel: channel.to_string(), seq: d.seq, epoch, duplicate: true })
}

impl Actor {
    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Cmd>) {
        let mut cmds = Vec::with_capacity(MAX_BATCH);
        loop {
            let first = match tokio::time::timeout(IDLE_EXIT, rx.recv()).await {
                Ok(Some(c)) => c,
                Ok(None) => return,
                Err(_) => {
                    if self.subs.is_empty() && self.relay.channels.retire(&self.name, &rx) {
                        return;
                    }
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
            let mut sends: Vec<(Item, Reply)> = Vec::new();
            for cmd in cmds.drain(..) {
                match cmd {
                    Cmd::Item(item, reply) if item.invite.is_none() && item.kind != Kind::Commit => {
                        sends.push((item, reply));
                    }
                    Cmd::Item(item, reply) => {
                        self.send_batch(std::mem::take(&mut sends)).await;
                        let res =
                            if item.kind == Kind::Commit { self.commit(item).await } else { self.join(item).await };
                        let _ = reply.send(res);
                    }
                    Cmd::Subscribe { org, conn_id, sub, reply } => {
                        self.send_batch(std::mem::take(&mut sends)).await;
                        let name = self.name.clone();
                        let res = self.relay.storage.call(move |s| s.ensure_channel(&name, &org, now_ms())).await;
                        if res.is_ok() {
                            self.subs.insert(conn_id, sub);
                        }
                        let _ = reply.send(res);
                    }
                    Cmd::Unsubscribe(conn_id) => {
                        self.subs.remove(&conn_id);
                    }
                }
            }
            self.send_batch(sends).await;
        }
    }

    /// Orders a batch of `Send`s: one storage round for row + dedupe, one group-committed
    /// append, then fan-out and replies.
    async fn send_batch(&mut self, sends: Vec<(Item, Reply)>) {
        if sends.is_empty() {
            return;
        }
        let name = self.name.clone();
        let keys: Vec<(String, String)> =
            sends.iter().map(|(i, _)| (i.sender.clone(), i.client_msg_id.clone())).collect();
        let looked = self
            .relay
            .storage
            .call(move |s| {
                let row = s.channel(&name)?;
                let mut dups = Vec::with_capacity(keys.len());
                for (sender, id) in &keys {
                    dups.push(if row.is_some() { s.find_dup(&name, sender, id)? } else { None });
                }
                Ok((row, dups))
            })
            .await;
        let (row, dups) = match looked {
            Ok(x) => x,
            Err(e) => {
                for (_, reply) in sends {
                    let _ = reply.send(Err(RelayError::Storage(e.to_string())));
                }
                return;
            }
        };
        let Some(mut row) = row else {
            for (_, reply) in sends {
                let _ = reply.send(Err(wire(ErrorCode::ChannelNotFound, "no such channel")));
            }
            return;
        };
        let mut staged: Vec<Staged> = Vec::new();
        // in-batch dedupe: (sender, client_msg_id) → index in `staged`
        let mut fresh: HashMap<(String, String), Dup> = HashMap::new();
        // replies that wait for the append: (reply, outcome, refers to an item of this batch)
        let mut later: Vec<(Reply, Outcome, bool)> = Vec::new();
        let now = now_ms();
        for ((item, reply), dup) in sends.into_iter().zip(dups) {
            let key = (item.sender.clone(), item.client_msg_id.clone());
            let in_batch = dup.is_none() && fresh.contains_key(&key);
            let dup = dup.or_else(|| fresh.get(&key).copied());
            if let Some(d) = dup {
                later.push((reply, dup_ack(&self.name, d), in_batch));
                continue;
            }
            if item.epoch != row.epoch {
                let nack = Nack { channel: self.name.clone(), current_epoch: row.epoch, last_seq: row.last_seq };
                later.push((reply, Outcome::Nack(nack), false));
                continue;
            }
            row.last_seq += 1;
            if !item.client_msg_id.is_empty() {
                fresh.insert(key, Dup { seq: row.last_seq, epoch: row.epoch, kind: item.kind as i32 });
            }
            staged.push(Staged { append: self.append_of(item, row.last_seq, row.epoch, now), reply });
        }
        let archived = self.archive_and_deliver(staged).await.is_some();
        for (reply, outcome, in_batch) in later {
            let res = if in_batch && !archived {
                Err(RelayError::Storage("archive failed".to_string()))
            } else {
                Ok(outcome)
            };
            let _ = reply.send(res);
        }
    }

    fn append_of(&self, item: Item, seq: u64, new_epoch: u64, now: u64) -> Append {
        Append {
            channel: self.name.clone(),
            org: item.org,
            seq,
            epoch: item.epoch,
            new_epoch,
            kind: item.kind as i32,
            sender: item.sender,
            client_msg_id: item.client_msg_id,
            payload: item.payload,
            now_ms: now,
            welcomes: item.welcomes,
        }
    }

    /// Appends the staged items (one transaction with whatever else is queued), then fans
    /// them out in order and acks them; on failure every staged item gets the error.
    async fn archive_and_deliver(&mut self, staged: Vec<Staged>) -> Option<Vec<Vec<u64>>> {
        if staged.is_empty() {
            return Some(Vec::new());
        }
        let appends: Vec<Append> = staged.iter().map(|s| s.append.clone()).collect();
        let ids = match self.relay.storage.append(appends).await {
            Ok(ids) => ids,
            Err(e) => {
                tracing::error!(channel = %self.name, error = %e, "archive failed");
                for s in staged {
                    let _ = s.reply.send(Err(RelayError::Storage(e.to_string())));
                }
                return None;
            }
        };
        let m = &self.relay.metrics;
        for s in staged {
            let a = s.append;
            Metrics::add(&m.messages_archived, 1);
            Metrics::add(&m.archive_items, 1);
            Metrics::add(&m.archive_bytes, a.payload.len() as u64);
            let ack = Ack { channel: self.name.clone(), seq: a.seq, epoch: a.new_epoch, duplicate: false };
            self.fan_out(&a);
            let _ = s.reply.send(Ok(Outcome::Ack(ack)));
        }
        Some(ids)
    }

    /// Pushes one encoded frame to every subscriber except connections of the sender.
    fn fan_out(&self, a: &Append) {
        if self.subs.is_empty() {
            return;
        }
        let frame = Frame::new(
            0,
            Body::Deliver(Deliver {
                channel: self.name.clone(),
                seq: a.seq,
                epoch: a.epoch,
                kind: a.kind,
                sender: a.sender.clone(),
                payload: a.payload.to_vec(),
                timestamp_ms: a.now_ms,
            }),
        );
        let max = self.relay.config.limits.max_frame_bytes + RELAY_FRAME_ALLOWANCE;
        let Ok(bytes) = encode_frame(&frame, max) else {
            return;
        };
        for sub in self.subs.values() {
            if sub.identity != a.sender {
                sub.push(bytes.clone());
            }
        }
    }

    /// `Send{kind: JoinRequest}`: validate the invite and count the use, then order the item
    /// at the channel's current epoch (no epoch check).
    async fn join(&mut self, item: Item) -> Result<Outcome> {
        let (invite_id, invite_auth) = item.invite.clone().unwrap_or_default();
        let (name, me, cmid) = (self.name.clone(), item.sender.clone(), item.client_msg_id.clone());
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
                Ok(match dup {
                    Some(d) => Err(d),
                    None => Ok(row),
                })
            })
            .await?;
        let row = match checked {
            Err(d) => return Ok(dup_ack(&self.name, d)),
            Ok(row) => row,
        };
        let mut item = item;
        item.epoch = row.epoch;
        let seq = row.last_seq + 1;
        let (tx, rx) = oneshot::channel();
        let staged = Staged { append: self.append_of(item, seq, row.epoch, now_ms()), reply: tx };
        self.archive_and_deliver(vec![staged]).await;
        tracing::info!(channel = %self.name, seq, "join request accepted");
        rx.await.map_err(|_| RelayError::Storage("reply lost".to_string()))?
    }

    /// `Commit`: first commit at the current epoch wins (the channel moves to epoch + 1 and
    /// the welcomes are queued in the same transaction); others are nacked.
    async fn commit(&mut self, item: Item) -> Result<Outcome> {
        let (name, org, me, cmid) =
            (self.name.clone(), item.org.clone(), item.sender.clone(), item.client_msg_id.clone());
        let recipients: Vec<String> = item.welcomes.iter().map(|(r, _)| r.clone()).collect();
        let limit = self.relay.config.limits.max_pending_welcomes;
        let epoch = item.epoch;
        let checked = self
            .relay
            .storage
            .call(move |s| {
                let (row, _) = s.ensure_channel(&name, &org, now_ms())?;
                if let Some(d) = s.find_dup(&name, &me, &cmid)? {
                    return Ok(Err(dup_ack(&name, d)));
                }
                if epoch != row.epoch {
                    return Ok(Err(Outcome::Nack(Nack {
                        channel: name.clone(),
                        current_epoch: row.epoch,
                        last_seq: row.last_seq,
                    })));
                }
                for r in &recipients {
                    if s.pending_welcomes(&org, r)? >= limit {
                        return Err(wire(
                            ErrorCode::RecipientQueueFull,
                            format!("welcome queue of recipient {r} is full"),
                        ));
                    }
                }
                Ok(Ok(row))
            })
            .await?;
        let row = match checked {
            Err(outcome) => {
                if matches!(outcome, Outcome::Nack(_)) {
                    Metrics::add(&self.relay.metrics.commits_nacked, 1);
                }
                return Ok(outcome);
            }
            Ok(row) => row,
        };
        let seq = row.last_seq + 1;
        let new_epoch = row.epoch + 1;
        let welcomes = item.welcomes.clone();
        let (org, sender) = (item.org.clone(), item.sender.clone());
        let (tx, rx) = oneshot::channel();
        let staged = Staged { append: self.append_of(item, seq, new_epoch, now_ms()), reply: tx };
        let ids = self.archive_and_deliver(vec![staged]).await;
        let outcome = rx.await.map_err(|_| RelayError::Storage("reply lost".to_string()))??;
        Metrics::add(&self.relay.metrics.commits_acked, 1);
        let ids = ids.and_then(|v| v.into_iter().next()).unwrap_or_default();
        for ((recipient, payload), id) in welcomes.into_iter().zip(ids) {
            let frame = Frame::new(
                0,
                Body::Welcome(Welcome {
                    welcome_id: id,
                    channel: self.name.clone(),
                    sender: sender.clone(),
                    payload,
                    commit_seq: seq,
                    commit_epoch: new_epoch,
                }),
            );
            if let Ok(bytes) = encode_frame(&frame, usize::MAX) {
                self.relay.online.push(&org, &recipient, &bytes);
            }
        }
        tracing::info!(channel = %self.name, seq, epoch = new_epoch, "commit accepted");
        Ok(outcome)
    }
}
