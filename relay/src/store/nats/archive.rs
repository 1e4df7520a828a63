//! The channel archive on JetStream, read side: loading a channel's history into the cache,
//! re-reading after a lost race, checking a record's place in the chain, and reading items back
//! for replay and `Fetch`. Writing is in [`super::write`].

use std::time::Duration;

use async_nats::jetstream::consumer::{self, pull};
use async_nats::jetstream::stream::LastRawMessageErrorKind;
use futures_util::StreamExt;
use prost::Message;
use skytale_proto::frames::Deliver;

use super::record::{RecItem, Record, RosterSnap};
use super::{nats_err, Inner};
use crate::error::{RelayError, Result};
use crate::store::ChannelRow;

/// Records fetched one by one before a load switches to a consumer.
const DIRECT_READS: usize = 8;
/// Records fetched concurrently when reading a range.
const READ_AHEAD: usize = 16;

/// A record read from the archive: `(stream sequence, record)`.
pub(super) type Stored = (u64, Record);

pub(super) fn decode(payload: &[u8]) -> Result<Record> {
    Record::decode(payload).map_err(|e| RelayError::Storage(format!("nats: malformed archive record: {e}")))
}

impl Inner {
    /// The last record of a subject in `stream`, if any.
    async fn last_of(&self, heads: bool, subject: &str) -> Result<Option<Stored>> {
        let s = if heads { &self.heads } else { &self.archive };
        match s.get_last_raw_message_by_subject(subject).await {
            Ok(m) => Ok(Some((m.sequence, decode(&m.payload)?))),
            Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => Ok(None),
            Err(e) => Err(nats_err("get last", e)),
        }
    }

    /// The first record of `subject` at or after stream sequence `from`.
    async fn next_of(&self, subject: &str, from: u64) -> Result<Option<Stored>> {
        match self.archive.get_first_raw_message_by_subject(subject, from).await {
            Ok(m) => Ok(Some((m.sequence, decode(&m.payload)?))),
            Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => Ok(None),
            Err(e) => Err(nats_err("get next", e)),
        }
    }

    /// Records of `subject` with `from <= stream seq <= until`, in order.
    async fn scan(&self, subject: &str, from: u64, until: u64) -> Result<Vec<Stored>> {
        let mut out = Vec::new();
        let mut at = from;
        while out.len() < DIRECT_READS {
            match self.next_of(subject, at).await? {
                Some((seq, rec)) if seq <= until => {
                    at = seq + 1;
                    out.push((seq, rec));
                    if seq == until {
                        return Ok(out);
                    }
                }
                _ => return Ok(out),
            }
        }
        // A long history: one ordered consumer instead of a round trip per record.
        let cfg = pull::OrderedConfig {
            filter_subject: subject.to_string(),
            deliver_policy: consumer::DeliverPolicy::ByStartSequence { start_sequence: at },
            ..Default::default()
        };
        let cons = self.archive.create_consumer(cfg).await.map_err(|e| nats_err("create consumer", e))?;
        let mut msgs = cons.messages().await.map_err(|e| nats_err("consume", e))?;
        loop {
            let next = tokio::time::timeout(Duration::from_secs(10), msgs.next())
                .await
                .map_err(|_| RelayError::Storage("nats: reading a channel's history timed out".to_string()))?;
            let Some(m) = next else { break };
            let m = m.map_err(|e| nats_err("consume", e))?;
            let info = m.info().map_err(|e| nats_err("message info", e))?;
            let (seq, pending) = (info.stream_sequence, info.pending);
            if seq > until {
                break;
            }
            out.push((seq, decode(&m.payload)?));
            if seq == until || pending == 0 {
                break;
            }
        }
        Ok(out)
    }

    /// Reads a channel into the cache; `None` if it does not exist.
    pub(super) async fn load(&self, name: &str) -> Result<Option<ChannelRow>> {
        let subject = self.subject(name);
        self.cache().begin(name);
        let res = async {
            let found = match self.last_of(false, &subject).await? {
                Some((last, _)) => Some((None, self.scan(&subject, 1, last).await?)),
                // All items expired (or the channel never existed): the last record kept in
                // the heads stream has its state.
                None => self.last_of(true, &subject).await?.map(|(_, rec)| (Some(rec), Vec::new())),
            };
            let Some((base, history)) = found else { return Ok(None) };
            // The roster of the last record that changed it (kept apart: it may have expired).
            let roster = self.roster_snapshot(name).await?;
            Ok(Some((base, roster, history)))
        }
        .await;
        let mut cache = self.cache();
        match res {
            Ok(Some((base, roster, history))) => Ok(cache.finish(name, base.as_ref(), roster, &history)),
            Ok(None) => {
                cache.remove(name);
                Ok(None)
            }
            Err(e) => {
                cache.remove(name);
                Err(e)
            }
        }
    }

    /// The roster copy in the KV bucket (empty if none).
    async fn roster_snapshot(&self, name: &str) -> Result<Vec<(String, u64)>> {
        let (snap, _) = super::kv::read::<RosterSnap>(&self.rost.kv, &super::record::esc(name)).await?;
        Ok(snap.map(|s| s.members.into_iter().map(|m| (m.identity, m.since)).collect()).unwrap_or_default())
    }

    /// A loaded channel's state, loading it if needed.
    pub(super) async fn row(&self, name: &str) -> Result<Option<ChannelRow>> {
        if let Some(c) = self.cache().get(name) {
            return Ok(Some(c.row()));
        }
        self.load(name).await
    }

    /// Brings a loaded channel up to the stream (after a lost race or an unclear publish);
    /// returns the valid records applied.
    pub(super) async fn refresh(&self, name: &str) -> Result<Vec<Stored>> {
        let subject = self.subject(name);
        let Some(known) = self.cache().get(name).map(|c| c.last_subject) else {
            self.load(name).await?;
            return Ok(Vec::new());
        };
        let Some((last, _)) = self.last_of(false, &subject).await? else {
            // Expired meanwhile: the next append expects an empty subject.
            if let Some(c) = self.cache().get(name) {
                c.last_subject = 0;
            }
            return Ok(Vec::new());
        };
        if last <= known {
            return Ok(Vec::new());
        }
        let fresh = self.scan(&subject, known + 1, last).await?;
        let mut applied = Vec::new();
        if let Some(c) = self.cache().get(name) {
            for (seq, rec) in fresh {
                if c.apply(seq, &rec) {
                    applied.push((seq, rec));
                }
            }
        }
        Ok(applied)
    }

    /// Whether our record at `seq`, written after `prev`, is the valid successor of `prev`: no
    /// earlier record claims the same predecessor. Needed because some nats-server versions
    /// (before 2.9.21 in clusters) may accept two publishes that expected the same last subject
    /// sequence when both were in flight at once.
    pub(super) async fn verify(&self, subject: &str, prev: u64, seq: u64) -> Result<bool> {
        let mut at = prev + 1;
        while at < seq {
            match self.next_of(subject, at).await? {
                Some((s, r)) if s < seq => {
                    if r.prev == prev {
                        return Ok(false);
                    }
                    at = s + 1;
                }
                _ => break,
            }
        }
        Ok(true)
    }

    /// Archived items with `after < seq <= upto`, not sent by `exclude`, at most `limit`.
    pub(super) async fn read_range(
        &self,
        name: &str,
        after: u64,
        upto: u64,
        exclude: &str,
        limit: usize,
        max_bytes: usize,
    ) -> Result<Vec<Deliver>> {
        if self.row(name).await?.is_none() {
            return Ok(Vec::new());
        }
        let records = self.cache().get(name).map(|c| c.records_between(after, upto)).unwrap_or_default();
        let mut out: Vec<Deliver> = Vec::new();
        let mut bytes = 0usize;
        for batch in records.chunks(READ_AHEAD) {
            let got =
                futures_util::future::join_all(batch.iter().map(|r| self.archive.get_raw_message(r.stream_seq))).await;
            for m in got {
                let m = match m {
                    Ok(m) => m,
                    // Expired since it was indexed.
                    Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => continue,
                    Err(e) => return Err(nats_err("get record", e)),
                };
                for it in decode(&m.payload)?.items {
                    if it.seq <= after || it.seq > upto || it.sender == exclude {
                        continue;
                    }
                    if out.len() == limit || (!out.is_empty() && bytes + it.payload.len() > max_bytes) {
                        return Ok(out);
                    }
                    bytes += it.payload.len();
                    out.push(deliver(name, it));
                }
            }
        }
        Ok(out)
    }
}

/// An archived item as a `Deliver`.
pub(super) fn deliver(channel: &str, it: RecItem) -> Deliver {
    Deliver {
        channel: channel.to_string(),
        seq: it.seq,
        epoch: it.epoch,
        kind: it.kind,
        sender: it.sender,
        payload: it.payload.to_vec(),
        timestamp_ms: it.now_ms,
    }
}
