//! The live feed: one ordered consumer per node over every channel subject of the archive.
//! Each record (from any node) updates this node's cache; records of other nodes go to the
//! relay as [`Remote`]s so channel actors push them to local subscribers and welcomes reach
//! local recipients. Commits' welcome pointers are (re)queued by every node, so a node that
//! died between archiving a commit and queueing its welcomes loses none.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::consumer::{self, pull};
use futures_util::StreamExt;
use prost::Message;
use skytale_proto::frames::{Kind, Welcome};
use tokio::sync::mpsc;

use super::archive::deliver;
use super::record::{unesc, Record};
use super::{nats_err, Inner};
use crate::error::{RelayError, Result};
use crate::store::Remote;

/// How long a node holds back its next append on a channel after another node lost a race on
/// it (a few publish round trips): without it the node that won keeps winning, because it knows
/// its own new state at once while the loser must first read it.
const YIELD: Duration = Duration::from_millis(4);

/// How long the feed waits for a record before it checks that the stream has none it missed.
const STALL_CHECK: Duration = Duration::from_secs(2);

/// Records before the node's start that the feed re-reads to repair welcome queues.
const REPAIR_WINDOW: u64 = 1000;

/// Follows the archive from just before `start` (the stream's last sequence when the node
/// started) until the relay drops the receiver; reconnects after errors.
pub(super) async fn run(inner: Arc<Inner>, start: u64, tx: mpsc::UnboundedSender<Remote>) {
    let mut next = start.saturating_sub(REPAIR_WINDOW) + 1;
    loop {
        match follow(&inner, &mut next, start, &tx).await {
            Ok(()) => return,
            Err(e) => {
                tracing::warn!(error = %e, next, "archive feed interrupted; resuming");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
}

async fn follow(inner: &Inner, next: &mut u64, start: u64, tx: &mpsc::UnboundedSender<Remote>) -> Result<()> {
    let cfg = pull::OrderedConfig {
        filter_subject: format!("{}*", inner.subject_prefix),
        deliver_policy: consumer::DeliverPolicy::ByStartSequence { start_sequence: *next },
        ..Default::default()
    };
    let cons = inner.archive.create_consumer(cfg).await.map_err(|e| nats_err("feed consumer", e))?;
    let mut msgs = cons.messages().await.map_err(|e| nats_err("feed", e))?;
    loop {
        let m = match tokio::time::timeout(STALL_CHECK, msgs.next()).await {
            Ok(Some(m)) => m,
            Ok(None) => break,
            Err(_) => {
                if tx.is_closed() {
                    return Ok(());
                }
                stalled(inner, *next).await?;
                continue;
            }
        };
        if tx.is_closed() {
            return Ok(());
        }
        let m = m.map_err(|e| nats_err("feed", e))?;
        let seq = m.info().map_err(|e| nats_err("feed info", e))?.stream_sequence;
        *next = seq + 1;
        let Some(name) = m.subject.as_str().strip_prefix(&inner.subject_prefix).and_then(unesc) else {
            continue;
        };
        let rec = match Record::decode(m.payload.clone()) {
            Ok(r) => Arc::new(r),
            Err(e) => {
                tracing::warn!(channel = %name, seq, error = %e, "skipping a malformed archive record");
                continue;
            }
        };
        // Valid (follows the channel's last valid record)? Known for a cached channel; a
        // channel this node does not hold is checked against the stream only when it matters.
        let checked = match inner.cache().entry(&name) {
            Some(c) if c.loaded => Some(c.accept(seq, &rec)),
            Some(c) => {
                c.buffered.push((seq, rec.clone()));
                None
            }
            None => None,
        };
        if checked == Some(false) {
            continue;
        }
        let has_welcomes = rec.items.iter().any(|i| !i.welcome_recipients.is_empty());
        let valid = match checked {
            Some(v) => v,
            None if has_welcomes || rec.roster_full => inner.verify(&m.subject, rec.prev, seq).await?,
            None => true,
        };
        if !valid {
            continue;
        }
        // Every node re-queues welcome pointers and re-saves the roster copy (idempotent), so
        // a writer that died right after its append loses neither.
        if rec.roster_full {
            if let Err(e) = inner.save_roster(&name, seq, &rec.roster).await {
                tracing::warn!(channel = %name, seq, error = %e, "could not save a roster copy");
            }
        }
        let mut welcomes = Vec::new();
        for it in rec.items.iter().filter(|i| i.kind == Kind::Commit as i32 && !i.welcome_recipients.is_empty()) {
            if let Err(e) = inner.queue_welcomes(seq, &name, &rec.org, it.epoch + 1, it).await {
                tracing::warn!(channel = %name, seq, error = %e, "could not requeue a commit's welcomes");
            }
            for recipient in &it.welcome_recipients {
                let frame = Welcome {
                    welcome_id: seq,
                    channel: name.clone(),
                    sender: it.sender.clone(),
                    payload: it.welcome.to_vec(),
                    commit_seq: it.seq,
                    commit_epoch: it.epoch + 1,
                };
                welcomes.push((recipient.clone(), frame));
            }
        }
        if seq <= start || rec.node == inner.node {
            continue;
        }
        // Unchecked items are not pushed as they are: the actor reads them from the store,
        // which keeps only valid records.
        let known = checked == Some(true);
        let items = if known { rec.items.iter().map(|it| deliver(&name, it.clone())).collect() } else { Vec::new() };
        let roster =
            (known && rec.roster_full).then(|| rec.roster.iter().map(|m| (m.identity.clone(), m.since)).collect());
        let remote = Remote {
            channel: name,
            org: rec.org.clone(),
            last_seq: rec.last_seq,
            items,
            welcomes,
            roster,
            roster_changed: rec.roster_full,
        };
        if tx.send(remote).is_err() {
            return Ok(());
        }
    }
    Err(RelayError::Storage("archive feed ended".to_string()))
}

/// An error if the archive holds records from `next` on that the feed has not delivered (the
/// ordered consumer lost its server: async-nats notices that only after two missed 15 s
/// heartbeats, so without this check a node's cache and its subscribers would stall for a
/// minute or more after a NATS node dies), or if the stream cannot be asked.
async fn stalled(inner: &Inner, next: u64) -> Result<()> {
    let mut archive = inner.archive.clone();
    let last = tokio::time::timeout(Duration::from_secs(5), archive.info())
        .await
        .map_err(|_| RelayError::Storage("nats feed: stream info timed out".to_string()))?
        .map_err(|e| nats_err("feed stream info", e))?
        .state
        .last_sequence;
    if last >= next {
        return Err(RelayError::Storage(format!("nats feed: stalled before record {next} (stream at {last})")));
    }
    Ok(())
}

/// Listens for other nodes' "lost a race" notices: this node's next append on that channel
/// waits [`YIELD`], so the loser's retry gets in (fairness between nodes on a busy channel).
pub(super) async fn start_yields(inner: Arc<Inner>) -> Result<()> {
    let prefix = inner.yield_prefix();
    let mut sub = inner.js.client().subscribe(format!("{prefix}*")).await.map_err(|e| nats_err("subscribe", e))?;
    tokio::spawn(async move {
        while let Some(m) = sub.next().await {
            if m.payload.as_ref() == inner.node.as_bytes() {
                continue;
            }
            if let Some(name) = m.subject.as_str().strip_prefix(&prefix).and_then(unesc) {
                let until = tokio::time::Instant::now() + YIELD;
                inner.yields.lock().unwrap_or_else(|p| p.into_inner()).insert(name, until);
            }
        }
    });
    Ok(())
}

impl Inner {
    /// Tells the other nodes this node lost a race on `channel` (a hint; losing it only costs
    /// fairness).
    pub(super) async fn lost_race(&self, channel: &str) {
        let subject = format!("{}{}", self.yield_prefix(), super::record::esc(channel));
        if let Err(e) = self.js.client().publish(subject, self.node.clone().into()).await {
            tracing::debug!(error = %e, "could not send a yield notice");
        }
    }

    /// Waits if another node asked this one to let it in on `channel`.
    pub(super) async fn maybe_yield(&self, channel: &str) {
        let until = self.yields.lock().unwrap_or_else(|p| p.into_inner()).remove(channel);
        if let Some(until) = until {
            tokio::time::sleep_until(until).await;
        }
    }
}
