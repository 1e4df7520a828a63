//! A node's view of the channels it touched: state, record index and dedupe keys, kept current
//! by its own appends and by the live feed of every node's records. The view may lag the
//! stream by what is in flight; every append is checked against the stream (expected last
//! subject sequence), so a stale view costs a retry, never a fork.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use super::record::Record;
use crate::store::{ChannelRow, Dup};

/// Where a record with items sits in the stream.
#[derive(Clone, Copy, Debug)]
pub struct Indexed {
    /// Stream sequence of the record.
    pub stream_seq: u64,
    /// Sequence number of its last item.
    pub last: u64,
    /// Write time, unix ms.
    pub created_ms: u64,
}

/// One cached channel.
#[derive(Default)]
pub struct Chan {
    /// Org of the channel.
    pub org: String,
    /// Current epoch.
    pub epoch: u64,
    /// Last sequence number.
    pub last_seq: u64,
    /// Stream sequence of the channel's last valid record (the next record's `prev`).
    pub last_stream: u64,
    /// Stream sequence of the subject's last record, valid or not (what the server checks the
    /// next append against; 0 = none left: expired).
    pub last_subject: u64,
    /// The next record starts the chain whatever its `prev` (the first one a load reads: its
    /// predecessors expired).
    pub chain_open: bool,
    /// Records with items by the sequence number of their first item.
    pub index: BTreeMap<u64, Indexed>,
    /// Dedupe keys `(sender, client_msg_id)` → the item and its archive time.
    pub dedupe: HashMap<(String, String), (Dup, u64)>,
    /// False while the history is being read; the feed buffers records meanwhile.
    pub loaded: bool,
    /// Records the feed saw while loading: `(stream seq, record)`.
    pub buffered: Vec<(u64, Arc<Record>)>,
    /// The roster: identity → since seq.
    pub roster: HashMap<String, u64>,
    /// Last use (for eviction).
    touched: u64,
}

impl Chan {
    /// The channel row.
    pub fn row(&self) -> ChannelRow {
        ChannelRow { epoch: self.epoch, last_seq: self.last_seq }
    }

    /// Applies the channel's record at `stream_seq` if it is new and valid (follows the last
    /// valid record); returns whether it was applied.
    pub fn apply(&mut self, stream_seq: u64, rec: &Record) -> bool {
        self.last_subject = self.last_subject.max(stream_seq);
        if stream_seq <= self.last_stream || !(self.chain_open || rec.prev == self.last_stream) {
            return false;
        }
        self.chain_open = false;
        self.last_stream = stream_seq;
        self.epoch = rec.epoch;
        self.last_seq = rec.last_seq;
        if self.org.is_empty() {
            self.org = rec.org.clone();
        }
        if rec.roster_full {
            self.roster = rec.roster.iter().map(|m| (m.identity.clone(), m.since)).collect();
        }
        if let (Some(first), Some(last)) = (rec.items.first(), rec.items.last()) {
            self.index.insert(first.seq, Indexed { stream_seq, last: last.seq, created_ms: rec.created_ms });
            for it in &rec.items {
                if !it.client_msg_id.is_empty() {
                    let dup = Dup { seq: it.seq, epoch: it.epoch, kind: it.kind };
                    self.dedupe.insert((it.sender.clone(), it.client_msg_id.clone()), (dup, it.now_ms));
                }
            }
        }
        true
    }

    /// Whether the record at `stream_seq` is part of the channel's valid chain as far as known:
    /// applied now, or applied before (a record without items: not invalid).
    pub fn accept(&mut self, stream_seq: u64, rec: &Record) -> bool {
        if self.apply(stream_seq, rec) {
            return true;
        }
        match rec.items.first() {
            Some(first) => self.index.get(&first.seq).is_some_and(|r| r.stream_seq == stream_seq),
            None => stream_seq <= self.last_stream,
        }
    }

    /// Records that hold items with `after < seq <= upto`, in order.
    pub fn records_between(&self, after: u64, upto: u64) -> Vec<Indexed> {
        let start = self.index.range(..=after.saturating_add(1)).next_back().map(|(k, _)| *k).unwrap_or(0);
        self.index
            .range(start..)
            .take_while(|(first, _)| **first <= upto)
            .filter(|(_, r)| r.last > after)
            .map(|(_, r)| *r)
            .collect()
    }

    /// Drops index entries and dedupe keys archived before `cutoff_ms` (the stream expires the
    /// records themselves).
    pub fn prune(&mut self, cutoff_ms: u64) {
        self.index.retain(|_, r| r.created_ms >= cutoff_ms);
        self.dedupe.retain(|_, (_, at)| *at >= cutoff_ms);
    }
}

/// The cached channels of one node, bounded by count (least recently used are dropped; they
/// are read again from the stream on their next use).
pub struct Cache {
    chans: HashMap<String, Chan>,
    tick: u64,
    max: usize,
}

impl Cache {
    /// An empty cache holding at most `max` channels.
    pub fn new(max: usize) -> Cache {
        Cache { chans: HashMap::new(), tick: 0, max: max.max(1) }
    }

    /// A loaded channel (marked used).
    pub fn get(&mut self, name: &str) -> Option<&mut Chan> {
        self.tick += 1;
        let tick = self.tick;
        match self.chans.get_mut(name) {
            Some(c) if c.loaded => {
                c.touched = tick;
                Some(c)
            }
            _ => None,
        }
    }

    /// Any entry, loaded or loading.
    pub fn entry(&mut self, name: &str) -> Option<&mut Chan> {
        self.chans.get_mut(name)
    }

    /// Starts loading `name`: a placeholder that buffers feed records until [`Cache::finish`].
    pub fn begin(&mut self, name: &str) {
        if self.chans.len() >= self.max && !self.chans.contains_key(name) {
            if let Some(victim) =
                self.chans.iter().filter(|(_, c)| c.loaded).min_by_key(|(_, c)| c.touched).map(|(k, _)| k.clone())
            {
                self.chans.remove(&victim);
            }
        }
        self.chans.insert(name.to_string(), Chan::default());
    }

    /// Completes a load: applies the history read from the stream, then what the feed buffered
    /// meanwhile; `base` seeds the state (for a channel whose records all expired) and `roster`
    /// the roster (for one whose roster-changing records expired).
    pub fn finish(
        &mut self,
        name: &str,
        base: Option<&Record>,
        roster: Vec<(String, u64)>,
        history: &[(u64, Record)],
    ) -> Option<ChannelRow> {
        self.tick += 1;
        let tick = self.tick;
        let c = self.chans.get_mut(name)?;
        if let Some(b) = base {
            c.org = b.org.clone();
            c.epoch = b.epoch;
            c.last_seq = b.last_seq;
        }
        c.roster = roster.into_iter().collect();
        // The oldest record left (or the next one after a state kept only in the heads stream)
        // starts the chain.
        c.chain_open = base.is_some() || !history.is_empty();
        for (seq, rec) in history {
            c.apply(*seq, rec);
        }
        for (seq, rec) in std::mem::take(&mut c.buffered) {
            c.apply(seq, &rec);
        }
        c.loaded = true;
        c.touched = tick;
        Some(c.row())
    }

    /// Forgets a channel (it did not exist, or its load failed).
    pub fn remove(&mut self, name: &str) {
        self.chans.remove(name);
    }

    /// Prunes every cached channel.
    pub fn prune(&mut self, cutoff_ms: u64) {
        for c in self.chans.values_mut() {
            c.prune(cutoff_ms);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::record::RecItem;
    use super::*;

    fn rec_after(first: u64, n: u64, epoch: u64, prev: u64) -> Record {
        Record {
            prev,
            org: "o".into(),
            epoch,
            last_seq: first + n - 1,
            items: (first..first + n)
                .map(|s| RecItem { seq: s, client_msg_id: format!("m{s}"), sender: "a".into(), ..Default::default() })
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn applies_in_order_and_finds_records() {
        let mut c = Chan { loaded: true, ..Default::default() };
        assert!(c.apply(3, &rec_after(1, 2, 0, 0)));
        assert!(!c.apply(4, &rec_after(3, 1, 0, 0)), "a second record after the same predecessor is ignored");
        assert!(c.apply(7, &rec_after(3, 3, 1, 3)));
        assert!(!c.apply(5, &rec_after(9, 1, 1, 3)), "older stream position is ignored");
        assert_eq!((c.last_stream, c.last_subject), (7, 7));
        assert_eq!(c.row(), ChannelRow { epoch: 1, last_seq: 5 });
        assert_eq!(c.dedupe.get(&("a".into(), "m4".into())).map(|d| d.0.seq), Some(4));
        let r: Vec<u64> = c.records_between(0, 5).iter().map(|r| r.stream_seq).collect();
        assert_eq!(r, vec![3, 7]);
        let r: Vec<u64> = c.records_between(2, 5).iter().map(|r| r.stream_seq).collect();
        assert_eq!(r, vec![7]);
        let r: Vec<u64> = c.records_between(1, 3).iter().map(|r| r.stream_seq).collect();
        assert_eq!(r, vec![3, 7]);
        assert!(c.records_between(5, 9).is_empty());
    }

    #[test]
    fn loading_buffers_feed_records_and_eviction_keeps_the_bound() {
        let mut cache = Cache::new(2);
        cache.begin("x");
        assert!(cache.get("x").is_none());
        if let Some(c) = cache.entry("x") {
            c.buffered.push((9, Arc::new(rec_after(3, 1, 0, 4))));
        }
        let row = cache.finish("x", None, Vec::new(), &[(4, rec_after(1, 2, 0, 2))]);
        assert_eq!(row, Some(ChannelRow { epoch: 0, last_seq: 3 }));
        cache.begin("y");
        cache.finish("y", None, Vec::new(), &[]);
        cache.begin("z");
        assert!(cache.entry("x").is_none(), "least recently used is dropped");
    }
}
