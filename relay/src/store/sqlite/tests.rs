//! The SQLite store on real files: the migration of a store written before rosters, welcomes
//! stored once, per-org usage, byte-bounded reads and TTL pruning.

use bytes::Bytes;
use rusqlite::{params, Connection};

use super::{schema, CheckpointConfig, SqliteStore};
use crate::store::{Append, PruneCutoffs, Store};

fn temp(name: &str) -> std::path::PathBuf {
    let dir =
        std::env::temp_dir().join(format!("skytale-store-{name}-{}-{}", std::process::id(), rand::random::<u32>()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join("relay.sqlite3")
}

fn commit(channel: &str, seq: u64, epoch: u64, sender: &str) -> Append {
    Append {
        channel: channel.into(),
        org: "acme".into(),
        seq,
        epoch,
        new_epoch: epoch + 1,
        kind: 3,
        sender: sender.into(),
        client_msg_id: format!("c{seq}"),
        payload: Bytes::from_static(b"commit"),
        now_ms: 1_000,
        welcome: None,
        added: Vec::new(),
        removed: Vec::new(),
    }
}

#[test]
fn a_store_from_before_rosters_is_migrated_and_seeded() {
    let path = temp("migrate");
    {
        let c = Connection::open(&path).unwrap();
        c.execute_batch(schema::V0).unwrap();
        c.execute(
            "INSERT INTO channels (name, org, epoch, last_seq, created_ms) VALUES ('acme/a/b', 'acme', 1, 2, 0)",
            [],
        )
        .unwrap();
        c.execute(
            "INSERT INTO channels (name, org, epoch, last_seq, created_ms) VALUES ('acme/empty/c', 'acme', 0, 0, 0)",
            [],
        )
        .unwrap();
        let msg = "INSERT INTO messages (channel, seq, epoch, kind, sender, client_msg_id, payload, created_ms)
                   VALUES ('acme/a/b', ?1, ?2, ?3, ?4, '', ?5, 0)";
        c.execute(msg, params![1, 0, 3, "alice", b"0123456789".to_vec()]).unwrap();
        c.execute(msg, params![2, 1, 4, "joiner", b"jr".to_vec()]).unwrap();
        let wel = "INSERT INTO welcomes (id, org, recipient, channel, sender, commit_seq, payload, created_ms)
                   VALUES (?1, 'acme', ?2, 'acme/a/b', 'alice', 1, ?3, 0)";
        c.execute(wel, params![5, "carol", b"welcome".to_vec()]).unwrap();
        c.execute(wel, params![7, "dan", b"welcome".to_vec()]).unwrap();
        // ids up to 9 were handed out before (8 and 9 acknowledged and deleted)
        c.execute("UPDATE sqlite_sequence SET seq = 9 WHERE name = 'welcomes'", []).unwrap();
        c.execute(
            "INSERT INTO invites (id, org, channel, auth_hash, max_uses, expires_at, group_info, revoked, created_by, created_ms)
             VALUES ('inv', 'acme', 'acme/a/b', X'00', 1, 99999999999, X'', 0, 'erin', 0)",
            [],
        )
        .unwrap();
        c.execute(
            "INSERT INTO key_packages (org, identity, payload, created_ms) VALUES ('acme', 'fay', X'0102', 0), ('acme', 'fay', X'03', 0)",
            [],
        )
        .unwrap();
    }
    let mut s = SqliteStore::open(&path).unwrap();
    let mut roster = s.roster("acme/a/b").unwrap();
    roster.sort();
    let want: Vec<(String, u64)> =
        ["alice", "carol", "dan", "erin", "joiner"].iter().map(|w| (w.to_string(), 0)).collect();
    assert_eq!(roster, want);
    assert!(s.roster("acme/empty/c").unwrap().is_empty());
    let w = s.welcomes_for("acme", "carol").unwrap();
    assert_eq!(w.len(), 1);
    assert_eq!(
        (w[0].welcome_id, w[0].payload.as_slice(), w[0].commit_seq, w[0].commit_epoch),
        (5, &b"welcome"[..], 1, 1)
    );
    // the archive came through the copy into the rowid table (version 2) unchanged
    let items = s.read_range("acme/a/b", 0, 10, "", 10, 1 << 20).unwrap();
    let got: Vec<(u64, u64, i32, &str, &[u8])> =
        items.iter().map(|d| (d.seq, d.epoch, d.kind, d.sender.as_str(), d.payload.as_ref())).collect();
    assert_eq!(got, vec![(1, 0, 3, "alice", &b"0123456789"[..]), (2, 1, 4, "joiner", &b"jr"[..])]);
    let usage = s.org_usage("acme").unwrap();
    assert_eq!((usage.channels, usage.invites, usage.key_packages), (2, 1, 2));
    assert_eq!(usage.archive_bytes, 10 + 2 + 2 * 7, "messages + the welcomes as they were stored");

    // a commit with a welcome to two new members: one payload row, two pointers, ids after 9
    let mut a = commit("acme/a/b", 3, 1, "alice");
    a.added = vec!["gus".into(), "hal".into()];
    a.welcome = Some((a.added.clone(), Bytes::from(vec![9u8; 1000])));
    let ids = s.append_batch(&[a]).unwrap();
    assert_eq!(ids, vec![vec![10, 11]]);
    assert_eq!(s.member("acme/a/b", "gus").unwrap(), Some(3));
    let payloads: i64 = s.conn.query_row("SELECT COUNT(*) FROM welcome_payloads", [], |r| r.get(0)).unwrap();
    assert_eq!(payloads, 3);
    assert_eq!(s.org_usage("acme").unwrap().archive_bytes, usage.archive_bytes + 6 + 1000);
    assert!(s.delete_welcome("acme", "gus", 10).unwrap());
    assert!(!s.delete_welcome("acme", "gus", 10).unwrap());
    assert!(!s.delete_welcome("acme", "gus", 11).unwrap(), "only the recipient may delete its welcome");
    assert!(s.delete_welcome("acme", "hal", 11).unwrap());
    assert_eq!(
        s.org_usage("acme").unwrap().archive_bytes,
        usage.archive_bytes + 6,
        "the payload went with its last recipient"
    );

    // removals leave the roster
    let mut r = commit("acme/a/b", 4, 2, "alice");
    r.removed = vec!["joiner".into()];
    s.append_batch(&[r]).unwrap();
    assert_eq!(s.member("acme/a/b", "joiner").unwrap(), None);
    drop(s);
    // reopening is a no-op
    let s = SqliteStore::open(&path).unwrap();
    let v: i64 = s.conn.query_row("PRAGMA user_version", [], |r| r.get(0)).unwrap();
    assert_eq!(v, schema::VERSION);
    assert_eq!(s.member("acme/a/b", "gus").unwrap(), Some(3));
}

#[test]
fn reads_are_bounded_by_bytes_and_expired_rows_are_pruned() {
    let path = temp("bounds");
    let mut s = SqliteStore::open(&path).unwrap();
    assert!(s.create_channel("acme/x/y", "acme", "alice", 0).unwrap());
    assert!(!s.create_channel("acme/x/y", "acme", "alice", 0).unwrap());
    let items: Vec<Append> = (1..=10u64)
        .map(|seq| {
            let mut a = commit("acme/x/y", seq, 0, "alice");
            a.kind = 1;
            a.new_epoch = 0;
            a.payload = Bytes::from(vec![seq as u8; 100]);
            a.now_ms = seq * 1000;
            a
        })
        .collect();
    s.append_batch(&items).unwrap();
    assert_eq!(s.org_usage("acme").unwrap().archive_bytes, 1000);
    let page = s.read_range("acme/x/y", 0, 10, "bob", 100, 250).unwrap();
    assert_eq!(page.iter().map(|d| d.seq).collect::<Vec<_>>(), vec![1, 2]);
    let page = s.read_range("acme/x/y", 2, 10, "bob", 100, 0).unwrap();
    assert_eq!(page.len(), 1, "the first item is returned even over the budget");
    assert!(s.read_range("acme/x/y", 0, 10, "alice", 100, 10_000).unwrap().is_empty(), "never the reader's own");

    s.add_key_packages("acme", "bob", &[vec![1], vec![2]], 1_000).unwrap();
    s.add_key_packages("acme", "bob", &[vec![3]], 9_000).unwrap();
    let p = s.prune(&PruneCutoffs { archive_ms: 5_500, welcome_ms: 0, key_package_ms: 5_000 }).unwrap();
    assert_eq!((p.items, p.bytes), (5, 500));
    assert_eq!(s.count_key_packages("acme", "bob").unwrap(), 1);
    let usage = s.org_usage("acme").unwrap();
    assert_eq!((usage.archive_bytes, usage.key_packages), (500, 1));

    // welcomes expire with their payload (stored once)
    let mut c = commit("acme/x/y", 11, 0, "alice");
    c.now_ms = 20_000;
    c.added = vec!["w1".into(), "w2".into()];
    c.welcome = Some((c.added.clone(), Bytes::from(vec![1u8; 300])));
    s.append_batch(&[c]).unwrap();
    assert_eq!(s.pending_welcomes("acme", "w2").unwrap(), 1);
    assert_eq!(s.org_usage("acme").unwrap().archive_bytes, 500 + 6 + 300);
    s.prune(&PruneCutoffs { archive_ms: 0, welcome_ms: 20_001, key_package_ms: 0 }).unwrap();
    assert_eq!(s.pending_welcomes("acme", "w2").unwrap(), 0);
    assert_eq!(s.org_usage("acme").unwrap().archive_bytes, 500 + 6);
    let payloads: i64 = s.conn.query_row("SELECT COUNT(*) FROM welcome_payloads", [], |r| r.get(0)).unwrap();
    assert_eq!(payloads, 0);
}

fn file_len(path: &std::path::Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

fn wal_of(path: &std::path::Path) -> std::path::PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push("-wal");
    p.into()
}

fn message(channel: &str, seq: u64) -> Append {
    let mut a = commit(channel, seq, 0, "alice");
    a.kind = 1;
    a.new_epoch = 0;
    a.payload = Bytes::from(vec![7u8; 256]);
    a
}

/// Waits (up to 20 s) for `cond`.
fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let until = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !cond() {
        assert!(std::time::Instant::now() < until, "timed out waiting for {what}");
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
}

#[test]
fn a_message_of_the_1_kib_padding_bucket_takes_no_page_of_its_own() {
    // An MLS message padded to 1 KiB is ~1,150 bytes: over what a WITHOUT ROWID table keeps
    // inline on a 4 KiB page (each such row took an overflow page: ~1.14 pages per message).
    let path = temp("row-size");
    let mut s = SqliteStore::open(&path).unwrap();
    let n = 400u64;
    let batch: Vec<Append> = (1..=n)
        .map(|seq| {
            let mut a = message("acme/a/b", seq);
            a.client_msg_id = format!("m{seq}");
            a.payload = Bytes::from(vec![seq as u8; 1150]);
            a
        })
        .collect();
    s.append_batch(&batch).unwrap();
    let pages: i64 = s.conn.query_row("PRAGMA page_count", [], |r| r.get(0)).unwrap();
    let per_message = pages as f64 / n as f64;
    assert!(per_message < 0.5, "{per_message:.2} pages per message");
    let back = s.read_range("acme/a/b", 0, n, "", n as usize, 1 << 30).unwrap();
    assert_eq!(back.len(), n as usize);
    assert!(back.iter().all(|d| d.payload.len() == 1150 && d.payload[0] == d.seq as u8));
    // (channel, seq) is still unique: a second item at a taken seq is refused
    let mut again = message("acme/a/b", 7);
    again.client_msg_id = "other".into();
    assert!(s.append_batch(&[again]).is_err());
}

#[test]
fn committed_pages_reach_the_database_file_without_the_writer_checkpointing() {
    let path = temp("bg-checkpoint");
    let cfg = CheckpointConfig { interval: std::time::Duration::from_millis(5), restart_frames: 1 << 20 };
    let mut s = SqliteStore::open_with(&path, cfg).unwrap();
    let auto: i64 = s.conn.query_row("PRAGMA wal_autocheckpoint", [], |r| r.get(0)).unwrap();
    assert_eq!(auto, 4 << 20, "the writer checkpoints inside its commits only past its limit");
    s.create_channel("acme/c/k", "acme", "alice", 0).unwrap();
    let before = file_len(&path);
    // Far fewer than SQLite's 1,000-frame automatic checkpoint: only the background thread
    // can copy these pages into the database file.
    for seq in 1..=20u64 {
        s.append_batch(&[message("acme/c/k", seq)]).unwrap();
    }
    let ckpt = s.checkpointer.as_ref().unwrap();
    wait_for("the background checkpoint", || file_len(&path) > before && ckpt.passes() > 0);
    // What the writer committed is what a fresh reader of the database sees.
    let n: i64 = s.conn.query_row("SELECT COUNT(*) FROM messages", [], |r| r.get(0)).unwrap();
    assert_eq!(n, 20);
    drop(s); // stops and joins the thread
    let s = SqliteStore::open(&path).unwrap();
    assert_eq!(s.channel("acme/c/k").unwrap().unwrap().last_seq, 20);
}

#[test]
fn under_steady_writes_the_writer_finishes_the_copy_and_the_wal_starts_over() {
    let path = temp("wal-restart");
    let cfg = CheckpointConfig { interval: std::time::Duration::from_millis(10), restart_frames: 64 };
    let mut s = SqliteStore::open_with(&path, cfg).unwrap();
    s.create_channel("acme/c/k", "acme", "alice", 0).unwrap();
    // Writes without a pause (each followed by the storage thread's upkeep, as in
    // `storage::run`): a concurrent checkpoint never copies the last frames before the next
    // commit, so without the writer's finishing pass (and its limit, next test) this WAL would
    // grow with every write (4,000 sends ≈ 80 MiB). Runs until the thread has asked at least
    // once, however busy the machine.
    let mut seq = 0u64;
    let mut asked = 0;
    let until = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while seq < 4_000 || (asked == 0 && std::time::Instant::now() < until) {
        seq += 1;
        s.append_batch(&[message("acme/c/k", seq)]).unwrap();
        if s.checkpointer.as_ref().unwrap().finish_wanted() {
            asked += 1;
        }
        s.maintain().unwrap();
    }
    assert!(asked > 0, "the background thread asked the writer to finish");
    // The writer's limit (4 × 64 frames ≈ 1 MiB) bounds it whatever the thread's timing.
    let wal = file_len(&wal_of(&path));
    assert!(wal < 8 << 20, "the WAL started over (its file is {wal} bytes)");
    let n: i64 = s.conn.query_row("SELECT COUNT(*) FROM messages", [], |r| r.get(0)).unwrap();
    assert_eq!(n, seq as i64);
}

#[test]
fn a_checkpoint_thread_that_never_gets_to_run_still_leaves_a_bounded_wal() {
    // The thread waits an hour before its first pass: as if starved of CPU under load.
    let path = temp("wal-limit");
    let cfg = CheckpointConfig { interval: std::time::Duration::from_secs(3600), restart_frames: 64 };
    let mut s = SqliteStore::open_with(&path, cfg).unwrap();
    s.create_channel("acme/c/k", "acme", "alice", 0).unwrap();
    for seq in 1..=4_000u64 {
        s.append_batch(&[message("acme/c/k", seq)]).unwrap();
        s.maintain().unwrap();
    }
    let ckpt = s.checkpointer.as_ref().unwrap();
    assert_eq!(ckpt.passes(), 0, "no background pass ran");
    assert!(!ckpt.finish_wanted());
    // The writer checkpointed at its limit (256 frames ≈ 1 MiB) and the WAL started over;
    // without the limit it holds all 4,000 sends (≈ 80 MiB).
    let wal = file_len(&wal_of(&path));
    assert!(wal < 4 << 20, "the WAL started over (its file is {wal} bytes)");
    drop(s);
    let s = SqliteStore::open(&path).unwrap();
    assert_eq!(s.channel("acme/c/k").unwrap().unwrap().last_seq, 4_000);
}
