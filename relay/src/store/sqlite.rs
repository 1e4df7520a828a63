//! The embedded store: SQLite in WAL mode (`data_dir/relay.sqlite3`), behind [`Store`].
//!
//! If the workspace enables SQLCipher for `libsqlite3-sys` (the core's keystore does), this
//! database is simply opened without a key, i.e. unencrypted: payloads are MLS ciphertext.
//! Every lookup on the send path is an index lookup (channel row by name, dedupe by the partial
//! unique index, replay by the primary key), so its cost does not grow with the archive.

use std::path::Path;

use rusqlite::{params, Connection, OptionalExtension};
use skytale_proto::frames::{Deliver, Welcome};

use super::{Append, ChannelRow, Dup, InviteRow, Pruned, Store};
use crate::error::Result;

/// The SQLite store.
pub struct SqliteStore {
    conn: Connection,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS channels (
  name TEXT PRIMARY KEY,
  org TEXT NOT NULL,
  epoch INTEGER NOT NULL DEFAULT 0,
  last_seq INTEGER NOT NULL DEFAULT 0,
  created_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS messages (
  channel TEXT NOT NULL,
  seq INTEGER NOT NULL,
  epoch INTEGER NOT NULL,
  kind INTEGER NOT NULL,
  sender TEXT NOT NULL,
  client_msg_id TEXT NOT NULL,
  payload BLOB NOT NULL,
  created_ms INTEGER NOT NULL,
  PRIMARY KEY (channel, seq)
) WITHOUT ROWID;
CREATE UNIQUE INDEX IF NOT EXISTS messages_dedupe ON messages(channel, sender, client_msg_id) WHERE client_msg_id <> '';
CREATE INDEX IF NOT EXISTS messages_created ON messages(created_ms);
CREATE TABLE IF NOT EXISTS welcomes (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  org TEXT NOT NULL,
  recipient TEXT NOT NULL,
  channel TEXT NOT NULL,
  sender TEXT NOT NULL,
  commit_seq INTEGER NOT NULL,
  payload BLOB NOT NULL,
  created_ms INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS welcomes_recipient ON welcomes(org, recipient);
CREATE TABLE IF NOT EXISTS key_packages (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  org TEXT NOT NULL,
  identity TEXT NOT NULL,
  payload BLOB NOT NULL,
  created_ms INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS key_packages_identity ON key_packages(org, identity);
CREATE TABLE IF NOT EXISTS invites (
  id TEXT PRIMARY KEY,
  org TEXT NOT NULL,
  channel TEXT NOT NULL,
  auth_hash BLOB NOT NULL,
  max_uses INTEGER NOT NULL,
  expires_at INTEGER NOT NULL,
  group_info BLOB NOT NULL,
  revoked INTEGER NOT NULL DEFAULT 0,
  created_by TEXT NOT NULL,
  created_ms INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS invites_expires ON invites(expires_at);
CREATE TABLE IF NOT EXISTS invite_uses (
  invite_id TEXT NOT NULL,
  identity TEXT NOT NULL,
  used_ms INTEGER NOT NULL,
  PRIMARY KEY (invite_id, identity)
) WITHOUT ROWID;
";

fn u(v: i64) -> u64 {
    v.max(0) as u64
}

fn i(v: u64) -> i64 {
    v.min(i64::MAX as u64) as i64
}

impl SqliteStore {
    /// Opens (or creates) the store at `path`.
    pub fn open(path: &Path) -> Result<SqliteStore> {
        let conn = Connection::open(path)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        // A page cache that holds the hot index pages of a large archive (dedupe lookups and
        // inserts land on random pages of `messages_dedupe`), and reads through mmap: keeps the
        // per-send cost flat as history grows. Memory is only used as the archive grows.
        conn.pragma_update(None, "cache_size", -32768i64)?;
        conn.pragma_update(None, "mmap_size", 268_435_456i64)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.execute_batch(SCHEMA)?;
        Ok(SqliteStore { conn })
    }
}

impl Store for SqliteStore {
    /// A channel's state.
    fn channel(&self, name: &str) -> Result<Option<ChannelRow>> {
        Ok(self
            .conn
            .prepare_cached("SELECT epoch, last_seq FROM channels WHERE name = ?1")?
            .query_row(params![name], |r| Ok(ChannelRow { epoch: u(r.get(0)?), last_seq: u(r.get(1)?) }))
            .optional()?)
    }

    /// Creates a channel if missing; returns its state and whether it was created.
    fn ensure_channel(&mut self, name: &str, org: &str, now_ms: u64) -> Result<(ChannelRow, bool)> {
        if let Some(c) = self.channel(name)? {
            return Ok((c, false));
        }
        self.conn.execute(
            "INSERT INTO channels (name, org, epoch, last_seq, created_ms) VALUES (?1, ?2, 0, 0, ?3)",
            params![name, org, i(now_ms)],
        )?;
        Ok((ChannelRow::default(), true))
    }

    /// Looks up an archived item by its dedupe key.
    fn find_dup(&self, channel: &str, sender: &str, client_msg_id: &str) -> Result<Option<Dup>> {
        if client_msg_id.is_empty() {
            return Ok(None);
        }
        // `client_msg_id <> ''` lets SQLite use the partial index `messages_dedupe`
        // (without it this lookup scans the channel: O(n) per send).
        Ok(self
            .conn
            .prepare_cached(
                "SELECT seq, epoch, kind FROM messages WHERE channel = ?1 AND sender = ?2 AND client_msg_id = ?3 AND client_msg_id <> ''",
            )?
            .query_row(
                params![channel, sender, client_msg_id],
                |r| {
                    Ok(Dup {
                        seq: u(r.get(0)?),
                        epoch: u(r.get(1)?),
                        kind: r.get(2)?,
                    })
                },
            )
            .optional()?)
    }

    fn append_batch(&mut self, items: &[Append]) -> Result<Vec<Vec<u64>>> {
        let tx = self.conn.transaction()?;
        let mut out = Vec::with_capacity(items.len());
        {
            let mut ins = tx.prepare_cached(
                "INSERT INTO messages (channel, seq, epoch, kind, sender, client_msg_id, payload, created_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            )?;
            let mut upd = tx.prepare_cached("UPDATE channels SET last_seq = ?2, epoch = ?3 WHERE name = ?1")?;
            let mut wel = tx.prepare_cached(
                "INSERT INTO welcomes (org, recipient, channel, sender, commit_seq, payload, created_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )?;
            for item in items {
                ins.execute(params![
                    item.channel,
                    i(item.seq),
                    i(item.epoch),
                    item.kind,
                    item.sender,
                    item.client_msg_id,
                    &item.payload[..],
                    i(item.now_ms)
                ])?;
                upd.execute(params![item.channel, i(item.seq), i(item.new_epoch)])?;
                let mut ids = Vec::with_capacity(item.welcomes.len());
                for (recipient, payload) in &item.welcomes {
                    wel.execute(params![
                        item.org,
                        recipient,
                        item.channel,
                        item.sender,
                        i(item.seq),
                        payload,
                        i(item.now_ms)
                    ])?;
                    ids.push(u(tx.last_insert_rowid()));
                }
                out.push(ids);
            }
        }
        tx.commit()?;
        Ok(out)
    }

    /// Archived items with `after < seq <= upto`, not sent by `exclude_sender`, at most `limit`.
    fn read_range(
        &self,
        channel: &str,
        after: u64,
        upto: u64,
        exclude_sender: &str,
        limit: usize,
    ) -> Result<Vec<Deliver>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT seq, epoch, kind, sender, payload, created_ms FROM messages
             WHERE channel = ?1 AND seq > ?2 AND seq <= ?3 AND sender <> ?4 ORDER BY seq LIMIT ?5",
        )?;
        let rows = stmt.query_map(params![channel, i(after), i(upto), exclude_sender, i(limit as u64)], |r| {
            Ok(Deliver {
                channel: channel.to_string(),
                seq: u(r.get(0)?),
                epoch: u(r.get(1)?),
                kind: r.get(2)?,
                sender: r.get(3)?,
                payload: r.get(4)?,
                timestamp_ms: u(r.get(5)?),
            })
        })?;
        Ok(rows.collect::<std::result::Result<Vec<_>, _>>()?)
    }

    /// Number of queued welcomes for a recipient.
    fn pending_welcomes(&self, org: &str, recipient: &str) -> Result<u64> {
        Ok(u(self.conn.query_row(
            "SELECT COUNT(*) FROM welcomes WHERE org = ?1 AND recipient = ?2",
            params![org, recipient],
            |r| r.get(0),
        )?))
    }

    /// Queued welcomes of a recipient, oldest first.
    fn welcomes_for(&self, org: &str, recipient: &str) -> Result<Vec<Welcome>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT w.id, w.channel, w.sender, w.payload, w.commit_seq,
                    COALESCE((SELECT m.epoch + 1 FROM messages m WHERE m.channel = w.channel AND m.seq = w.commit_seq), 0)
               FROM welcomes w
              WHERE w.org = ?1 AND w.recipient = ?2 ORDER BY w.id",
        )?;
        let rows = stmt.query_map(params![org, recipient], |r| {
            Ok(Welcome {
                welcome_id: u(r.get(0)?),
                channel: r.get(1)?,
                sender: r.get(2)?,
                payload: r.get(3)?,
                commit_seq: u(r.get(4)?),
                commit_epoch: u(r.get(5)?),
            })
        })?;
        Ok(rows.collect::<std::result::Result<Vec<_>, _>>()?)
    }

    /// Deletes a welcome of this recipient; returns whether it existed.
    fn delete_welcome(&mut self, org: &str, recipient: &str, id: u64) -> Result<bool> {
        Ok(self.conn.execute(
            "DELETE FROM welcomes WHERE id = ?1 AND org = ?2 AND recipient = ?3",
            params![i(id), org, recipient],
        )? > 0)
    }

    /// Number of stored key packages of an identity.
    fn count_key_packages(&self, org: &str, identity: &str) -> Result<u64> {
        Ok(u(self.conn.query_row(
            "SELECT COUNT(*) FROM key_packages WHERE org = ?1 AND identity = ?2",
            params![org, identity],
            |r| r.get(0),
        )?))
    }

    /// Stores key packages of an identity.
    fn add_key_packages(&mut self, org: &str, identity: &str, kps: &[Vec<u8>], now_ms: u64) -> Result<()> {
        let tx = self.conn.transaction()?;
        for kp in kps {
            tx.execute(
                "INSERT INTO key_packages (org, identity, payload, created_ms) VALUES (?1, ?2, ?3, ?4)",
                params![org, identity, kp, i(now_ms)],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Removes and returns the oldest key package of an identity.
    fn claim_key_package(&mut self, org: &str, identity: &str) -> Result<Option<Vec<u8>>> {
        Ok(self
            .conn
            .query_row(
                "DELETE FROM key_packages WHERE id = (SELECT id FROM key_packages
                   WHERE org = ?1 AND identity = ?2 ORDER BY id LIMIT 1) RETURNING payload",
                params![org, identity],
                |r| r.get(0),
            )
            .optional()?)
    }

    /// Stores a new invite; `false` if the id is already taken (also by a revoked invite).
    fn create_invite(&mut self, inv: &InviteRow, created_by: &str, now_ms: u64) -> Result<bool> {
        Ok(self.conn.execute(
            "INSERT OR IGNORE INTO invites
               (id, org, channel, auth_hash, max_uses, expires_at, group_info, revoked, created_by, created_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 0, ?8, ?9)",
            params![
                inv.id,
                inv.org,
                inv.channel,
                inv.auth_hash,
                i64::from(inv.max_uses),
                i(inv.expires_at),
                inv.group_info,
                created_by,
                i(now_ms)
            ],
        )? > 0)
    }

    /// An invite by id.
    fn invite(&self, id: &str) -> Result<Option<InviteRow>> {
        Ok(self
            .conn
            .query_row(
                "SELECT id, org, channel, auth_hash, max_uses, expires_at, group_info, revoked
                 FROM invites WHERE id = ?1",
                params![id],
                |r| {
                    Ok(InviteRow {
                        id: r.get(0)?,
                        org: r.get(1)?,
                        channel: r.get(2)?,
                        auth_hash: r.get(3)?,
                        max_uses: u32::try_from(u(r.get(4)?)).unwrap_or(u32::MAX),
                        expires_at: u(r.get(5)?),
                        group_info: r.get(6)?,
                        revoked: r.get::<_, i64>(7)? != 0,
                    })
                },
            )
            .optional()?)
    }

    /// Replaces an invite's group info.
    fn update_invite(&mut self, id: &str, group_info: &[u8]) -> Result<()> {
        self.conn.execute("UPDATE invites SET group_info = ?2 WHERE id = ?1", params![id, group_info])?;
        Ok(())
    }

    /// Marks an invite revoked and drops its group info (the row keeps the id taken until it
    /// expires and is pruned).
    fn revoke_invite(&mut self, id: &str) -> Result<()> {
        self.conn.execute("UPDATE invites SET revoked = 1, group_info = X'' WHERE id = ?1", params![id])?;
        Ok(())
    }

    /// Number of distinct identities that used an invite.
    fn invite_uses(&self, id: &str) -> Result<u32> {
        let n: i64 =
            self.conn.query_row("SELECT COUNT(*) FROM invite_uses WHERE invite_id = ?1", params![id], |r| r.get(0))?;
        Ok(u32::try_from(u(n)).unwrap_or(u32::MAX))
    }

    /// True if `identity` already used the invite.
    fn invite_used_by(&self, id: &str, identity: &str) -> Result<bool> {
        Ok(self
            .conn
            .query_row(
                "SELECT 1 FROM invite_uses WHERE invite_id = ?1 AND identity = ?2",
                params![id, identity],
                |_| Ok(()),
            )
            .optional()?
            .is_some())
    }

    /// Records that `identity` used the invite.
    fn add_invite_use(&mut self, id: &str, identity: &str, now_ms: u64) -> Result<()> {
        self.conn.execute(
            "INSERT OR IGNORE INTO invite_uses (invite_id, identity, used_ms) VALUES (?1, ?2, ?3)",
            params![id, identity, i(now_ms)],
        )?;
        Ok(())
    }

    fn checkpoint(&mut self) -> Result<()> {
        self.conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)")?;
        Ok(())
    }

    fn prune(&mut self, cutoff_ms: u64) -> Result<Pruned> {
        let tx = self.conn.transaction()?;
        // Counted through the `messages_created` index: touches only the expiring rows.
        let (items, bytes): (i64, i64) = tx.query_row(
            "SELECT COUNT(*), COALESCE(SUM(LENGTH(payload)), 0) FROM messages WHERE created_ms < ?1",
            params![i(cutoff_ms)],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        let a = tx.execute("DELETE FROM messages WHERE created_ms < ?1", params![i(cutoff_ms)])?;
        let b = tx.execute("DELETE FROM welcomes WHERE created_ms < ?1", params![i(cutoff_ms)])?;
        let cutoff_secs = i(cutoff_ms / 1000);
        tx.execute(
            "DELETE FROM invite_uses WHERE invite_id IN (SELECT id FROM invites WHERE expires_at < ?1)",
            params![cutoff_secs],
        )?;
        let c = tx.execute("DELETE FROM invites WHERE expires_at < ?1", params![cutoff_secs])?;
        tx.commit()?;
        Ok(Pruned { rows: a + b + c, items: u(items), bytes: u(bytes) })
    }

    /// Archive size: (items, payload bytes).
    fn archive_stats(&self) -> Result<(u64, u64)> {
        Ok(self.conn.query_row("SELECT COUNT(*), COALESCE(SUM(LENGTH(payload)), 0) FROM messages", [], |r| {
            Ok((u(r.get(0)?), u(r.get(1)?)))
        })?)
    }
}
