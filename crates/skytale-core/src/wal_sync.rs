//! Background `fdatasync` of keystores' write-ahead logs, so SQLite's checkpoints stop waiting
//! for the disk in the middle of an agent's work.
//!
//! A keystore commits to its WAL without syncing (`synchronous = NORMAL`); every 1,000 frames,
//! inside the commit that crosses the mark, SQLite checkpoints: it syncs the WAL, copies the
//! pages into the database file and syncs that. Syncing up to 4 MiB of WAL written since the last
//! checkpoint was most of that pause (3–4 ms of about 4.5 ms every ~270 ms for an agent receiving
//! 2,000 messages/s, measured with `perf record -e syscalls:sys_enter_fsync`), and every message
//! behind it waited. A keystore's connection is opened in exclusive locking mode (no second
//! connection can checkpoint for it), but the WAL file can be synced from anywhere: one thread
//! per process syncs the WALs that had commits, a few milliseconds after them, so the
//! checkpoint's own sync finds little left to write.
//!
//! This adds no guarantee and removes none: SQLite still syncs everything a checkpoint needs
//! itself. If the thread cannot be started, or a sync fails, the checkpoints simply do all the
//! syncing again, as before.

use std::fs::File;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock, Weak};
use std::time::Duration;

/// How long after a keystore's first unsynced commit its WAL is synced (commits in between ride
/// along).
const SYNC_DELAY: Duration = Duration::from_millis(100);

/// One keystore's WAL as the sync thread sees it.
#[derive(Debug)]
pub(crate) struct WalFile {
    path: PathBuf,
    /// Committed since the last sync.
    dirty: AtomicBool,
    /// The keystore is closed: its WAL is no longer ours to open.
    closed: AtomicBool,
}

impl WalFile {
    /// Notes a commit (from SQLite's commit hook: no I/O, no lock unless the WAL was clean).
    pub(crate) fn note_commit(&self) {
        if !self.dirty.swap(true, Ordering::AcqRel) {
            if let Some(sync) = SYNC.get() {
                sync.kick();
            }
        }
    }

    /// Marks the keystore closed (before its connection closes and deletes the WAL).
    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::Release);
    }

    fn sync_if_dirty(&self) {
        if self.closed.load(Ordering::Acquire) || !self.dirty.swap(false, Ordering::AcqRel) {
            return;
        }
        // Opened per sync: the WAL may not exist yet, and a keystore closing meanwhile deletes it.
        // A failed sync costs nothing but time: the next checkpoint syncs the WAL itself.
        if let Ok(f) = File::open(&self.path) {
            f.sync_data().ok();
        }
    }
}

/// The process-wide sync thread and the WALs it looks after.
struct WalSync {
    state: Mutex<State>,
    wake: Condvar,
}

#[derive(Default)]
struct State {
    files: Vec<Weak<WalFile>>,
    pending: bool,
}

static SYNC: OnceLock<WalSync> = OnceLock::new();
/// Whether the thread was started (once per process).
static STARTED: OnceLock<bool> = OnceLock::new();

impl WalSync {
    fn kick(&self) {
        if let Ok(mut st) = self.state.lock() {
            st.pending = true;
            self.wake.notify_one();
        }
    }

    fn run(&self) {
        loop {
            let files: Vec<Arc<WalFile>> = {
                let Ok(mut st) = self.state.lock() else { return };
                while !st.pending {
                    st = match self.wake.wait(st) {
                        Ok(st) => st,
                        Err(_) => return,
                    };
                }
                st.pending = false;
                st.files.retain(|w| w.strong_count() > 0);
                st.files.iter().filter_map(Weak::upgrade).collect()
            };
            std::thread::sleep(SYNC_DELAY);
            for f in &files {
                f.sync_if_dirty();
            }
        }
    }
}

/// Registers the WAL of the keystore at `db_path` with the process's sync thread (started on
/// first use). `None` if the thread cannot be started: checkpoints then sync as before.
pub(crate) fn register(db_path: &std::path::Path) -> Option<Arc<WalFile>> {
    let sync = SYNC.get_or_init(|| WalSync { state: Mutex::new(State::default()), wake: Condvar::new() });
    let started = *STARTED.get_or_init(|| {
        std::thread::Builder::new()
            .name("skytale-wal-sync".to_string())
            .spawn(|| {
                if let Some(sync) = SYNC.get() {
                    sync.run();
                }
            })
            .is_ok()
    });
    if !started {
        return None;
    }
    let mut path = db_path.as_os_str().to_owned();
    path.push("-wal");
    let file =
        Arc::new(WalFile { path: PathBuf::from(path), dirty: AtomicBool::new(false), closed: AtomicBool::new(false) });
    sync.state.lock().ok()?.files.push(Arc::downgrade(&file));
    Some(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The thread syncs a registered WAL after a commit, and leaves a closed one alone.
    #[test]
    fn a_noted_commit_is_synced_and_a_closed_wal_is_not() {
        let dir =
            std::env::temp_dir().join(format!("skytale-walsync-{}-{}", std::process::id(), rand::random::<u32>()));
        std::fs::create_dir_all(&dir).unwrap();
        let db = dir.join("keystore.db");
        std::fs::write(dir.join("keystore.db-wal"), b"frames").unwrap();
        let wal = register(&db).expect("sync thread");
        wal.note_commit();
        let until = std::time::Instant::now() + Duration::from_secs(20);
        while wal.dirty.load(Ordering::Acquire) {
            assert!(std::time::Instant::now() < until, "the WAL was never synced");
            std::thread::sleep(Duration::from_millis(2));
        }
        wal.close();
        wal.note_commit();
        std::thread::sleep(SYNC_DELAY * 5);
        assert!(wal.dirty.load(Ordering::Acquire), "a closed keystore's WAL is not touched");
        drop(wal);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
