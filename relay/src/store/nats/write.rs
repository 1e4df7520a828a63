//! The channel archive on JetStream, write side: creating channels, appending records (one per
//! run of a channel's items, split at the server's payload limit) with the expected last subject
//! sequence and the record's predecessor, and what follows an append (the roster copy, welcome
//! pointers, usage).

use std::collections::HashMap;
use std::sync::Arc;

use async_nats::jetstream::context::PublishErrorKind;
use async_nats::jetstream::message::PublishMessage;
use prost::Message;

use super::record::{Member, RecItem, Record, RosterSnap};
use super::usage::Count;
use super::{nats_err, Inner};
use crate::error::{RelayError, Result};
use crate::store::Append;

/// Attempts of `create_channel` when other nodes keep changing the channel.
const CREATE_ATTEMPTS: u32 = 32;

fn conflict(channel: &str) -> RelayError {
    RelayError::Conflict(format!("channel {channel} moved on another relay node"))
}

fn members(roster: &HashMap<String, u64>) -> Vec<Member> {
    let mut v: Vec<Member> = roster.iter().map(|(i, s)| Member { identity: i.clone(), since: *s }).collect();
    v.sort_by(|a, b| a.identity.cmp(&b.identity));
    v
}

impl Inner {
    /// Publishes `rec` on `subject` if the subject's last record is still `expected`.
    async fn publish(&self, subject: &str, expected: u64, rec: &Record) -> std::result::Result<u64, PublishErrorKind> {
        let msg = PublishMessage::build().payload(rec.encode_to_vec().into()).expected_last_subject_sequence(expected);
        let ack = self.js.send_publish(subject.to_string(), msg).await.map_err(|e| e.kind())?;
        ack.await.map(|a| a.sequence).map_err(|e| e.kind())
    }

    /// Appends `rec`, built on the channel state of record `base` (its `last_stream` when the
    /// record's seqs, epoch and roster were taken from the cache), after that record. `Some(stream
    /// seq)` once it is the channel's valid next record; `None` if the channel moved meanwhile (a
    /// record of another node arrived, or got there first: the cache is then current again).
    async fn publish_record(&self, name: &str, mut rec: Record, base: u64) -> Result<Option<u64>> {
        let subject = self.subject(name);
        // Checked in the same look as the predecessor is taken: the feed may have applied
        // another node's record since `rec` was built.
        let Some((expected, prev)) = self.cache().get(name).map(|c| (c.last_subject, c.last_stream)) else {
            return Ok(None);
        };
        if prev != base {
            return Ok(None);
        }
        rec.prev = prev;
        self.maybe_yield(name).await;
        let seq = match self.publish(&subject, expected, &rec).await {
            Ok(seq) if self.verify(&subject, prev, seq).await? => {
                if let Some(c) = self.cache().get(name) {
                    c.apply(seq, &rec);
                }
                seq
            }
            Ok(seq) => {
                tracing::warn!(channel = %name, seq, "the server accepted a second record for one predecessor; ignored, retrying");
                self.lost_race(name).await;
                self.refresh(name).await?;
                return Ok(None);
            }
            Err(PublishErrorKind::WrongLastSequence) => {
                self.lost_race(name).await;
                self.refresh(name).await?;
                return Ok(None);
            }
            Err(e) => {
                // Unclear whether it landed: look.
                let fresh = self.refresh(name).await?;
                match fresh.iter().find(|(_, r)| r.id == rec.id) {
                    Some((seq, _)) => *seq,
                    None => return Err(nats_err("publish", e)),
                }
            }
        };
        if rec.roster_full {
            self.save_roster(name, seq, &rec.roster).await?;
        }
        Ok(Some(seq))
    }

    /// Keeps a copy of the roster of the record at `seq` (unless a newer one is kept).
    pub(super) async fn save_roster(&self, name: &str, seq: u64, roster: &[Member]) -> Result<()> {
        let key = super::record::esc(name);
        super::kv::change(&self.rost, &self.js, &key, |snap: &mut RosterSnap, _| {
            if snap.as_of >= seq {
                return Ok(super::kv::Step::Done(()));
            }
            *snap = RosterSnap { as_of: seq, members: roster.to_vec() };
            Ok(super::kv::Step::Write(()))
        })
        .await
    }

    /// Creates a channel with `creator` in its roster (first of racing nodes wins); on an
    /// existing channel adds `creator` to the roster if missing. Returns whether it was created.
    pub(super) async fn create_channel(&self, name: &str, org: &str, creator: &str, now_ms: u64) -> Result<bool> {
        let subject = self.subject(name);
        for _ in 0..CREATE_ATTEMPTS {
            if self.row(name).await?.is_some() {
                let Some((state, mut roster, base)) = self
                    .cache()
                    .get(name)
                    .map(|c| ((c.org.clone(), c.epoch, c.last_seq), c.roster.clone(), c.last_stream))
                else {
                    continue;
                };
                if roster.contains_key(creator) {
                    return Ok(false);
                }
                roster.insert(creator.to_string(), 0);
                let rec = Record {
                    org: state.0,
                    epoch: state.1,
                    last_seq: state.2,
                    node: self.node.clone(),
                    id: rand::random(),
                    created_ms: now_ms,
                    roster_full: true,
                    roster: members(&roster),
                    ..Default::default()
                };
                if self.publish_record(name, rec, base).await?.is_some() {
                    return Ok(false);
                }
                continue;
            }
            let rec = Record {
                org: org.to_string(),
                node: self.node.clone(),
                id: rand::random(),
                created_ms: now_ms,
                roster_full: true,
                roster: vec![Member { identity: creator.to_string(), since: 0 }],
                ..Default::default()
            };
            match self.publish(&subject, 0, &rec).await {
                Ok(seq) if self.verify(&subject, 0, seq).await? => {
                    self.cache().begin(name);
                    self.cache().finish(name, None, Vec::new(), &[(seq, rec.clone())]);
                    self.save_roster(name, seq, &rec.roster).await?;
                    self.usage_add(org, Count::Channels, now_ms, 1);
                    return Ok(true);
                }
                Ok(_) | Err(PublishErrorKind::WrongLastSequence) => {
                    self.load(name).await?;
                }
                Err(e) => return Err(nats_err("create channel", e)),
            }
        }
        Err(conflict(name))
    }

    /// Appends items (of any channels) as records: one per run of items of a channel, split
    /// where a record would exceed the server's payload limit. Returns welcome ids per item.
    /// [`RelayError::Conflict`] if a channel moved meanwhile (the cache is then current).
    pub(super) async fn append(self: &Arc<Self>, items: &[Append]) -> Result<Vec<Vec<u64>>> {
        let mut out = Vec::with_capacity(items.len());
        let mut start = 0;
        while start < items.len() {
            let channel = &items[start].channel;
            let end = items[start..].iter().position(|a| &a.channel != channel).map_or(items.len(), |n| start + n);
            out.extend(self.append_run(&items[start..end]).await?);
            start = end;
        }
        Ok(out)
    }

    async fn append_run(&self, run: &[Append]) -> Result<Vec<Vec<u64>>> {
        let Some(first) = run.first() else { return Ok(Vec::new()) };
        let name = &first.channel;
        if self.row(name).await?.is_none() {
            return Err(RelayError::Storage(format!("append to unknown channel {name}")));
        }
        let mut out = Vec::with_capacity(run.len());
        for chunk in self.chunks(run) {
            let Some(last) = chunk.last() else { continue };
            let Some((last_seq, mut roster, base)) =
                self.cache().get(name).map(|c| (c.last_seq, c.roster.clone(), c.last_stream))
            else {
                return Err(conflict(name));
            };
            if chunk[0].seq != last_seq + 1 {
                return Err(conflict(name));
            }
            // Roster changes of commits, applied like the SQLite store: removals, then additions.
            let mut changed = false;
            for a in chunk.iter().filter(|a| !a.added.is_empty() || !a.removed.is_empty()) {
                changed = true;
                for who in &a.removed {
                    roster.remove(who);
                }
                for who in &a.added {
                    roster.entry(who.clone()).or_insert(a.seq);
                }
            }
            let rec = Record {
                org: first.org.clone(),
                epoch: last.new_epoch,
                last_seq: last.seq,
                items: chunk.iter().map(rec_item).collect(),
                node: self.node.clone(),
                id: rand::random(),
                created_ms: last.now_ms,
                roster_full: changed,
                roster: if changed { members(&roster) } else { Vec::new() },
                ..Default::default()
            };
            let Some(stream_seq) = self.publish_record(name, rec.clone(), base).await? else {
                return Err(conflict(name));
            };
            let bytes: usize = chunk.iter().map(|a| a.payload.len()).sum();
            self.usage_add(&first.org, Count::Archive, last.now_ms, bytes as i64);
            for (item, it) in chunk.iter().zip(&rec.items) {
                if it.welcome_recipients.is_empty() {
                    out.push(Vec::new());
                    continue;
                }
                self.queue_welcomes(stream_seq, name, &rec.org, item.new_epoch, it).await?;
                out.push(vec![stream_seq; it.welcome_recipients.len()]);
            }
        }
        Ok(out)
    }

    /// Splits a run into chunks that fit one record.
    fn chunks<'a>(&self, run: &'a [Append]) -> Vec<&'a [Append]> {
        let mut out = Vec::new();
        let (mut start, mut size) = (0, 0);
        for (i, a) in run.iter().enumerate() {
            let roster: usize = a.added.iter().chain(&a.removed).map(|w| w.len() + 8).sum();
            let welcome = a.welcome.as_ref().map_or(0, |(r, p)| p.len() + r.iter().map(|x| x.len() + 2).sum::<usize>());
            let n = a.payload.len() + a.sender.len() + a.client_msg_id.len() + roster + welcome + 48;
            if i > start && size + n > self.max_record {
                out.push(&run[start..i]);
                (start, size) = (i, 0);
            }
            size += n;
        }
        if start < run.len() {
            out.push(&run[start..]);
        }
        out
    }
}

fn rec_item(a: &Append) -> RecItem {
    let (recipients, welcome) = a.welcome.clone().unwrap_or_default();
    RecItem {
        seq: a.seq,
        epoch: a.epoch,
        kind: a.kind,
        sender: a.sender.clone(),
        client_msg_id: a.client_msg_id.clone(),
        payload: a.payload.clone(),
        now_ms: a.now_ms,
        added: a.added.clone(),
        removed: a.removed.clone(),
        welcome_recipients: recipients,
        welcome,
    }
}
