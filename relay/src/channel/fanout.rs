//! Fan-out: archiving a channel's items and pushing them to its local subscribers in seq order
//! behind a watermark, including items other relay nodes archived (a cluster store): those come
//! as [`Remote`]s, and whatever the actor has not seen pushed is read from the store first.

use skytale_proto::codec::encode_frame;
use skytale_proto::frames::{Body, Deliver, Error, Frame};
use skytale_proto::{ErrorCode, RELAY_FRAME_ALLOWANCE};

use super::{Actor, Roster};
use crate::error::{RelayError, Result};
use crate::metrics::Metrics;
use crate::store::{Append, Remote};

/// Items read per storage round when catching up subscribers.
const CATCH_UP_PAGE: usize = 256;
/// Payload bytes read per storage round when catching up subscribers.
const CATCH_UP_BYTES: usize = 4 * 1024 * 1024;

impl Actor {
    /// Appends items of this channel (one transaction with whatever else is queued), then pushes
    /// them in order; returns the welcome ids per item. [`RelayError::Conflict`] (a cluster store:
    /// the channel moved on another node) leaves everything as it was.
    pub(super) async fn archive(&mut self, appends: Vec<Append>) -> Result<Vec<Vec<u64>>> {
        let Some(first) = appends.first().map(|a| a.seq) else { return Ok(Vec::new()) };
        let ids = match self.relay.storage.append(appends.clone()).await {
            Ok(ids) => ids,
            Err(RelayError::Conflict(c)) => return Err(RelayError::Conflict(c)),
            Err(e) => {
                tracing::error!(channel = %self.name, error = %e, "archive failed");
                return Err(e);
            }
        };
        self.archived(first, appends).await;
        Ok(ids)
    }

    /// After `appends` (first seq `first`) were archived: counts them and pushes them to the
    /// subscribers, after anything before them not pushed yet.
    pub(super) async fn archived(&mut self, first: u64, appends: Vec<Append>) {
        if self.delivered.is_some_and(|d| d + 1 < first) {
            self.catch_up(first - 1).await;
        }
        let m = &self.relay.metrics;
        for a in appends {
            Metrics::add(&m.messages_archived, 1);
            Metrics::add(&m.archive_items, 1);
            Metrics::add(&m.archive_bytes, a.payload.len() as u64);
            if self.delivered.is_some() {
                let seq = a.seq;
                self.push(Deliver {
                    channel: self.name.clone(),
                    seq,
                    epoch: a.epoch,
                    kind: a.kind,
                    sender: a.sender,
                    payload: a.payload.to_vec(),
                    timestamp_ms: a.now_ms,
                });
                self.delivered = Some(seq);
            }
        }
    }

    /// Pushes one item to every subscriber except connections of its sender.
    pub(super) fn push(&self, d: Deliver) {
        if self.subs.is_empty() {
            return;
        }
        skytale_proto::probe::mark("relay.fanout");
        let sender = d.sender.clone();
        let frame = Frame::new(0, Body::Deliver(d));
        let max = self.relay.config.limits.max_frame_bytes + RELAY_FRAME_ALLOWANCE;
        let Ok(bytes) = encode_frame(&frame, max) else {
            return;
        };
        for sub in self.subs.values() {
            if sub.identity != sender {
                sub.push(bytes.clone());
            }
        }
    }

    /// Items of another node: pushed after anything before them not pushed yet; then the
    /// roster follows (a removed member got the commit that removed it, and nothing after).
    pub(super) async fn remote(&mut self, r: Remote) {
        if let Some(d) = self.delivered.filter(|_| !self.subs.is_empty()) {
            if r.last_seq > d {
                match r.items.first() {
                    Some(f) if f.seq <= d + 1 => {
                        for item in r.items.into_iter().filter(|i| i.seq > d) {
                            self.push(item);
                        }
                        self.delivered = Some(r.last_seq);
                    }
                    _ => self.catch_up(r.last_seq).await,
                }
            }
        }
        if let Some(members) = r.roster {
            self.roster = Some(Roster { exists: true, members: members.into_iter().collect() });
            self.drop_non_members();
        } else if r.roster_changed && self.roster.is_some() {
            self.roster = None;
            match self.load_roster().await {
                Ok(()) => self.drop_non_members(),
                Err(e) => tracing::warn!(channel = %self.name, error = %e, "could not reload the roster"),
            }
        }
    }

    /// Pushes the archived items after the watermark up to `upto` (other nodes' items this
    /// actor has not pushed; never happens with a single-node store). Never moves the watermark
    /// past what the store holds (a later notice brings the rest).
    pub(super) async fn catch_up(&mut self, upto: u64) {
        let Some(mut at) = self.delivered else { return };
        if self.subs.is_empty() {
            self.delivered = None;
            return;
        }
        let mut known = upto;
        while at < known {
            let name = self.name.clone();
            let page = self
                .relay
                .storage
                .call(move |s| {
                    let last = s.channel(&name)?.map_or(at, |r| r.last_seq).min(upto);
                    Ok((last, s.read_range(&name, at, last, "", CATCH_UP_PAGE, CATCH_UP_BYTES)?))
                })
                .await;
            let page = match page {
                Ok((last, p)) => {
                    known = last;
                    p
                }
                Err(e) => {
                    // Pushed with the next notice or append (the watermark stays here).
                    tracing::warn!(channel = %self.name, error = %e, "could not read items to push");
                    known = at;
                    break;
                }
            };
            let Some(last) = page.last().map(|d| d.seq) else { break };
            for d in page {
                self.push(d);
            }
            at = last;
        }
        self.delivered = Some(known.max(at));
    }

    /// Ends the live subscriptions of identities no longer in the roster: each gets a non-fatal
    /// `Error{SKYTALE_NOT_A_MEMBER}` push (request id 0) and no more items.
    pub(super) fn drop_non_members(&mut self) {
        let Some(roster) = self.roster.as_ref() else { return };
        let ended: Vec<u64> =
            self.subs.iter().filter(|(_, s)| !roster.members.contains_key(&s.identity)).map(|(id, _)| *id).collect();
        for conn_id in ended {
            let Some(sub) = self.subs.remove(&conn_id) else { continue };
            let frame = Frame::new(
                0,
                Body::Error(Error {
                    code: ErrorCode::NotAMember.as_str().to_string(),
                    message: format!("removed from {}: its subscription ended", self.name),
                    fatal: false,
                    retry_after_ms: 0,
                }),
            );
            if let Ok(bytes) = encode_frame(&frame, usize::MAX) {
                sub.push(bytes);
            }
            tracing::info!(channel = %self.name, conn = conn_id, "subscription of a removed member ended");
        }
        if self.subs.is_empty() {
            self.delivered = None;
        }
    }
}
