//! WAL checkpoints off the storage thread.
//!
//! SQLite's automatic checkpoint runs inside the commit that takes the WAL past 1,000 frames,
//! on the writer's thread: it copies the committed pages into the database file and syncs both
//! files, and every send queued behind that commit waits. At 2,000 sends/s on the 2-core
//! benchmark machine that was about 7 ms every 75 ms (three fsyncs of 0.3–3.5 ms each, seen with
//! `perf record -e syscalls:sys_enter_fsync`), the largest part of the latency tail.
//!
//! So the writer connection has automatic checkpoints off (`wal_autocheckpoint = 0`) and this
//! thread, with its own connection to the same file, runs a PASSIVE checkpoint every
//! [`CheckpointConfig::interval`]: it copies whatever is committed and never blocks the writer.
//! A WAL only starts over (instead of growing) once every frame in it is copied when the writer
//! begins its next transaction, and a concurrent checkpoint under steady writes never quite
//! catches up. So once the WAL holds [`CheckpointConfig::restart_frames`] frames, the writer is
//! asked to finish the copy itself between two rounds of work ([`Checkpointer::finish_if_asked`]):
//! only what was committed during the last background pass, a few dozen frames at that rate.
//! SQLite syncs the database file only in a pass that leaves the WAL fully copied (the
//! writer's), so this thread syncs it after each of its own passes: the writer's sync then has
//! only those last pages to write.
//!
//! If this thread cannot be started, or a background checkpoint fails, the writer checkpoints
//! itself (the caller keeps SQLite's automatic checkpoint when [`Checkpointer::start`] fails, and
//! a failed pass asks the writer to finish). And if the thread runs too rarely to ask in time (a
//! starved CPU, a slow disk), SQLite's automatic checkpoint, kept on the writer at
//! [`CheckpointConfig::writer_limit_frames`] (4 × `restart_frames`), checkpoints inside the commit
//! that takes the WAL past it. So the WAL never grows without bound, whatever the scheduling.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use rusqlite::Connection;

use crate::error::{RelayError, Result};

/// When the background checkpoints run and when the writer finishes one.
#[derive(Clone, Copy, Debug)]
pub struct CheckpointConfig {
    /// Time between two background passes.
    pub interval: Duration,
    /// WAL size (frames of one page each) from which the writer finishes a pass itself, so the
    /// WAL can start over.
    pub restart_frames: u64,
}

impl CheckpointConfig {
    /// WAL size (frames) at which the writer checkpoints inside its commit even if the
    /// background thread has not asked (SQLite's `wal_autocheckpoint`): a bound that holds
    /// however rarely the thread gets to run. Never reached while the thread keeps up.
    pub fn writer_limit_frames(&self) -> u64 {
        self.restart_frames.saturating_mul(4).clamp(1, i32::MAX as u64)
    }
}

impl Default for CheckpointConfig {
    fn default() -> Self {
        // 100 ms: about 1,300 frames at 2,000 sends/s. 16,384 frames: a 64 MiB WAL (4 KiB pages),
        // finished by the writer about every 1.3 s at that rate (each finish syncs both files on
        // the storage thread, little data but one or two disk flushes).
        CheckpointConfig { interval: Duration::from_millis(100), restart_frames: 16384 }
    }
}

/// What the storage thread and the checkpoint thread share.
#[derive(Default)]
struct Shared {
    /// Set to stop the thread.
    stop: Mutex<bool>,
    wake: Condvar,
    /// Set by the thread when the writer should finish the copy (see the module docs).
    finish: AtomicBool,
    /// Background passes run (for tests).
    passes: AtomicU64,
}

/// The background checkpoint thread of one store; stopped (and joined) on drop.
pub struct Checkpointer {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

/// Runs `PRAGMA wal_checkpoint(PASSIVE)`: (busy, frames in the WAL, frames copied).
pub(super) fn passive_checkpoint(conn: &Connection) -> rusqlite::Result<(bool, i64, i64)> {
    conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| Ok((r.get::<_, i64>(0)? != 0, r.get(1)?, r.get(2)?)))
}

impl Checkpointer {
    /// Opens a second connection to the (already migrated, WAL-mode) database at `path` and
    /// starts the thread.
    pub fn start(path: &Path, config: CheckpointConfig) -> Result<Checkpointer> {
        let conn = Connection::open(path)?;
        // The pages a PASSIVE pass copies are synced by SQLite only when the pass leaves the WAL
        // fully copied, which under steady writes only the writer's finishing pass does: it
        // would then sync everything copied since the last restart (tens of milliseconds at
        // 65,536-frame WAL). This thread syncs them after each of its passes instead.
        let db_file = std::fs::File::open(path)?;
        // Never waits for a lock: a PASSIVE checkpoint that finds the writer busy copies what it
        // can and tries again next time.
        conn.busy_timeout(Duration::ZERO)?;
        let shared = Arc::new(Shared::default());
        let thread_shared = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("skytale-checkpoint".to_string())
            .spawn(move || run(conn, &db_file, &thread_shared, config))
            .map_err(|e| RelayError::Storage(format!("starting the checkpoint thread: {e}")))?;
        Ok(Checkpointer { shared, thread: Some(thread) })
    }

    /// On the writer's connection, between two rounds of work: finishes the copy if the
    /// background thread asked for it (the WAL then starts over at the next write).
    pub fn finish_if_asked(&self, writer: &Connection) -> Result<()> {
        if !self.shared.finish.swap(false, Ordering::AcqRel) {
            return Ok(());
        }
        let started = std::time::Instant::now();
        let (busy, log, copied) = passive_checkpoint(writer)?;
        tracing::debug!(
            busy,
            log,
            copied,
            us = started.elapsed().as_micros() as u64,
            "writer finished a WAL checkpoint"
        );
        if busy || copied < log {
            // A background pass holds the checkpoint lock: try again after the next round.
            self.shared.finish.store(true, Ordering::Release);
        }
        Ok(())
    }

    /// True while the writer is asked to finish a pass.
    pub fn finish_wanted(&self) -> bool {
        self.shared.finish.load(Ordering::Acquire)
    }

    /// Background passes run so far.
    #[cfg(test)]
    pub fn passes(&self) -> u64 {
        self.shared.passes.load(Ordering::Acquire)
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        match self.shared.stop.lock() {
            Ok(mut stop) => *stop = true,
            Err(poisoned) => *poisoned.into_inner() = true,
        }
        self.shared.wake.notify_all();
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() {
                tracing::warn!("the checkpoint thread panicked");
            }
        }
    }
}

fn run(conn: Connection, db_file: &std::fs::File, shared: &Shared, config: CheckpointConfig) {
    loop {
        {
            let Ok(stop) = shared.stop.lock() else { return };
            let Ok((stop, _)) = shared.wake.wait_timeout_while(stop, config.interval, |stop| !*stop) else {
                return;
            };
            if *stop {
                return;
            }
        }
        let started = std::time::Instant::now();
        match passive_checkpoint(&conn) {
            Ok((busy, log, copied)) => {
                if copied > 0 {
                    if let Err(e) = db_file.sync_data() {
                        tracing::debug!(error = %e, "syncing the database file after a checkpoint pass failed");
                    }
                }
                tracing::debug!(
                    busy,
                    log,
                    copied,
                    us = started.elapsed().as_micros() as u64,
                    "background WAL checkpoint"
                );
                shared.passes.fetch_add(1, Ordering::AcqRel);
                // Copied everything committed when the pass began; the writer has most likely
                // committed more since, so only it can leave the WAL fully copied.
                if u64::try_from(log).unwrap_or(0) >= config.restart_frames {
                    shared.finish.store(true, Ordering::Release);
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "background WAL checkpoint failed; the writer checkpoints");
                shared.finish.store(true, Ordering::Release);
            }
        }
    }
}
