//! Deferred inbox acknowledgements: the app says it is done with an item at once (in memory,
//! no keystore write), and the deletion rides along with the channel's next processing
//! transaction, or is written by [`Agent::flush_acks`] when nothing else comes. At a steady
//! rate this saves a keystore transaction per received message.
//!
//! What a crash can do: an item whose acknowledgement was still in memory comes back after a
//! restart (it is still in the inbox; its `seq` tells the app it saw it). Nothing acknowledged
//! and written comes back, and nothing is lost: an item leaves the inbox only by a written
//! acknowledgement.

use std::collections::HashMap;
use std::sync::MutexGuard;

use rusqlite::{params, Connection};

use super::Agent;
use crate::error::{Error, Result};

/// Acknowledgements noted and not written yet, by channel (the highest seq of each).
#[derive(Debug, Default)]
pub(super) struct PendingAcks(HashMap<String, u64>);

impl Agent {
    fn pending_acks(&self) -> Result<MutexGuard<'_, PendingAcks>> {
        self.pending_acks.lock().map_err(|_| Error::Internal("pending acks poisoned by an earlier panic".into()))
    }

    /// Notes that the app is done with the items of `name` up to and including `seq`, without
    /// writing: the deletion is written with the channel's next processing transaction or by
    /// [`Agent::flush_acks`]. Cheap (no keystore access), so it can run on an app's event loop.
    pub fn inbox_ack_later(&self, name: &str, seq: u64) -> Result<()> {
        let mut pending = self.pending_acks()?;
        let at = pending.0.entry(name.to_string()).or_insert(0);
        *at = (*at).max(seq);
        Ok(())
    }

    /// Whether acknowledgements are noted and not written yet.
    pub fn has_pending_acks(&self) -> bool {
        self.pending_acks().map(|p| !p.0.is_empty()).unwrap_or(false)
    }

    /// Writes every noted acknowledgement in one transaction. On an error they stay noted (and
    /// the items stay in the inbox).
    pub fn flush_acks(&self) -> Result<()> {
        let taken: Vec<(String, u64)> = std::mem::take(&mut self.pending_acks()?.0).into_iter().collect();
        if taken.is_empty() {
            return Ok(());
        }
        let res = (|| {
            let inner = self.lock()?;
            let conn = inner.store.conn();
            conn.prepare_cached("BEGIN IMMEDIATE")?.execute([])?;
            let res = taken.iter().try_for_each(|(name, seq)| delete_acked(conn, name, *seq));
            super::finish_tx(conn, res)
        })();
        if res.is_err() {
            self.restore_acks(taken);
        }
        res
    }

    /// Takes the noted acknowledgement of `name` to write in a transaction of the caller.
    pub(super) fn take_pending_ack(&self, name: &str) -> Option<u64> {
        self.pending_acks().ok().and_then(|mut p| p.0.remove(name))
    }

    /// Notes acknowledgements again whose write did not commit.
    pub(super) fn restore_acks(&self, acks: impl IntoIterator<Item = (String, u64)>) {
        if let Ok(mut pending) = self.pending_acks() {
            for (name, seq) in acks {
                let at = pending.0.entry(name).or_insert(0);
                *at = (*at).max(seq);
            }
        }
    }

    /// Forgets noted acknowledgements of `name` up to `seq` (they were just written).
    pub(super) fn acks_written(&self, name: &str, seq: u64) {
        if let Ok(mut pending) = self.pending_acks() {
            if pending.0.get(name).is_some_and(|&at| at <= seq) {
                pending.0.remove(name);
            }
        }
    }
}

/// Deletes a channel's inbox items up to and including `seq`.
pub(super) fn delete_acked(conn: &Connection, name: &str, seq: u64) -> Result<()> {
    conn.prepare_cached("DELETE FROM skytale_inbox WHERE channel = ?1 AND seq <= ?2")?
        .execute(params![name, seq as i64])?;
    Ok(())
}
