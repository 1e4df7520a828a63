//! The embedded store: SQLite in WAL mode (`data_dir/relay.sqlite3`), behind [`Store`].
//!
//! If the workspace enables SQLCipher for `libsqlite3-sys` (the core's keystore does), this
//! database is simply opened without a key, i.e. unencrypted: payloads are MLS ciphertext.
//! Every lookup on the send path is an index lookup (channel row by name, dedupe by the partial
//! unique index, replay by the primary key, usage by org), so its cost does not grow with the
//! archive. The schema and its migrations are in [`schema`].

mod checkpointer;
mod schema;
#[cfg(test)]
mod tests;

pub use checkpointer::CheckpointConfig;
use checkpointer::Checkpointer;

use std::collections::HashMap;
use std::path::Path;

use rusqlite::{params, Connection, OptionalExtension};
use skytale_proto::frames::{Deliver, Welcome};

use super::{Append, ChannelRow, Dup, InviteRow, OrgUsage, PruneCutoffs, Pruned, Store};
use crate::error::Result;

/// The SQLite store.
pub struct SqliteStore {
    conn: Connection,
    /// WAL checkpoints on their own thread and connection (`None`: SQLite's automatic
    /// checkpoint on the writer, if that thread could not be started).
    checkpointer: Option<Checkpointer>,
}

fn u(v: i64) -> u64 {
    v.max(0) as u64
}

fn i(v: u64) -> i64 {
    v.min(i64::MAX as u64) as i64
}

impl SqliteStore {
    /// Opens (or creates) the store at `path`, with WAL checkpoints in the background.
    pub fn open(path: &Path) -> Result<SqliteStore> {
        SqliteStore::open_with(path, CheckpointConfig::default())
    }

    /// Opens (or creates) the store at `path`, with background WAL checkpoints as `checkpoints`
    /// says (see [`CheckpointConfig`]).
    pub fn open_with(path: &Path, checkpoints: CheckpointConfig) -> Result<SqliteStore> {
        let mut conn = Connection::open(path)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        // Reads go through mmap (clean pages of the database file are never copied into the
        // page cache), so the cache only has to hold the pages being written and those still
        // in the WAL: 4 MiB keeps the per-send cost flat with 100,000 items of history. It is
        // kept small on purpose: a commit whose insert splits a B-tree page (SQLite moves a
        // page through the pending-byte page number while reordering) ends with a scan of the
        // whole cache's hash table, so its cost grows with the cache (32 MiB cost the storage
        // thread ~15 % at 2,000 paced sends/s; BENCHMARKS.md § "Session 10").
        conn.pragma_update(None, "cache_size", -4096i64)?;
        conn.pragma_update(None, "mmap_size", 268_435_456i64)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        schema::migrate(&mut conn)?;
        let checkpointer = match Checkpointer::start(path, checkpoints) {
            Ok(c) => {
                // The writer checkpoints inside its commits only past the limit, as a bound when
                // the background thread falls behind (see `checkpointer`).
                let limit = i64::try_from(checkpoints.writer_limit_frames()).unwrap_or(i64::from(i32::MAX));
                conn.pragma_update(None, "wal_autocheckpoint", limit)?;
                Some(c)
            }
            Err(e) => {
                tracing::warn!(error = %e, "no background checkpoints; the writer checkpoints itself");
                None
            }
        };
        Ok(SqliteStore { conn, checkpointer })
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

    /// Creates a channel if missing and puts `creator` in its roster.
    fn create_channel(&mut self, name: &str, org: &str, creator: &str, now_ms: u64) -> Result<bool> {
        let tx = self.conn.transaction()?;
        let created = tx.execute(
            "INSERT OR IGNORE INTO channels (name, org, epoch, last_seq, created_ms) VALUES (?1, ?2, 0, 0, ?3)",
            params![name, org, i(now_ms)],
        )? > 0;
        tx.execute(
            "INSERT OR IGNORE INTO roster (channel, identity, since_seq) VALUES (?1, ?2, 0)",
            params![name, creator],
        )?;
        tx.commit()?;
        Ok(created)
    }

    /// A channel's whole roster.
    fn roster(&self, channel: &str) -> Result<Vec<(String, u64)>> {
        let mut stmt = self.conn.prepare_cached("SELECT identity, since_seq FROM roster WHERE channel = ?1")?;
        let rows = stmt.query_map(params![channel], |r| Ok((r.get(0)?, u(r.get(1)?))))?;
        Ok(rows.collect::<std::result::Result<Vec<_>, _>>()?)
    }

    /// One roster entry.
    fn member(&self, channel: &str, identity: &str) -> Result<Option<u64>> {
        Ok(self
            .conn
            .prepare_cached("SELECT since_seq FROM roster WHERE channel = ?1 AND identity = ?2")?
            .query_row(params![channel, identity], |r| Ok(u(r.get(0)?)))
            .optional()?)
    }

    /// An org's usage.
    fn org_usage(&self, org: &str) -> Result<OrgUsage> {
        Ok(self
            .conn
            .prepare_cached("SELECT channels, invites, key_packages, archive_bytes FROM org_usage WHERE org = ?1")?
            .query_row(params![org], |r| {
                Ok(OrgUsage {
                    channels: u(r.get(0)?),
                    invites: u(r.get(1)?),
                    key_packages: u(r.get(2)?),
                    archive_bytes: u(r.get(3)?),
                })
            })
            .optional()?
            .unwrap_or_default())
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
            // payload bytes per org, written once per batch (not once per row)
            let mut bytes: HashMap<&str, u64> = HashMap::new();
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
                *bytes.entry(item.org.as_str()).or_default() += item.payload.len() as u64;
                out.push(if item.welcome.is_some() || !item.added.is_empty() || !item.removed.is_empty() {
                    commit_extras(&tx, item)?
                } else {
                    Vec::new()
                });
            }
            let mut usage = tx.prepare_cached(
                "INSERT INTO org_usage (org, archive_bytes) VALUES (?1, ?2)
                 ON CONFLICT(org) DO UPDATE SET archive_bytes = archive_bytes + excluded.archive_bytes",
            )?;
            for (org, n) in bytes {
                usage.execute(params![org, i(n)])?;
            }
        }
        tx.commit()?;
        Ok(out)
    }

    /// Archived items with `after < seq <= upto`, not sent by `exclude_sender`, bounded by
    /// `limit` items and `max_bytes` of payload. A payload is read only if it is returned.
    fn read_range(
        &self,
        channel: &str,
        after: u64,
        upto: u64,
        exclude_sender: &str,
        limit: usize,
        max_bytes: usize,
    ) -> Result<Vec<Deliver>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT seq, epoch, kind, sender, LENGTH(payload), created_ms, payload FROM messages
             WHERE channel = ?1 AND seq > ?2 AND seq <= ?3 AND sender <> ?4 ORDER BY seq LIMIT ?5",
        )?;
        let mut rows = stmt.query(params![channel, i(after), i(upto), exclude_sender, i(limit as u64)])?;
        let mut out = Vec::new();
        let mut total = 0usize;
        while let Some(r) = rows.next()? {
            let len = u(r.get(4)?) as usize;
            if !out.is_empty() && total.saturating_add(len) > max_bytes {
                break;
            }
            total = total.saturating_add(len);
            out.push(Deliver {
                channel: channel.to_string(),
                seq: u(r.get(0)?),
                epoch: u(r.get(1)?),
                kind: r.get(2)?,
                sender: r.get(3)?,
                payload: r.get(6)?,
                timestamp_ms: u(r.get(5)?),
            });
        }
        Ok(out)
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
            "SELECT w.id, p.channel, p.sender, p.payload, p.commit_seq, p.commit_epoch
               FROM welcomes w JOIN welcome_payloads p ON p.id = w.payload_id
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

    /// Deletes a welcome of this recipient, and its payload once no recipient is left.
    fn delete_welcome(&mut self, org: &str, recipient: &str, id: u64) -> Result<bool> {
        let tx = self.conn.transaction()?;
        let payload: Option<i64> = tx
            .query_row(
                "DELETE FROM welcomes WHERE id = ?1 AND org = ?2 AND recipient = ?3 RETURNING payload_id",
                params![i(id), org, recipient],
                |r| r.get(0),
            )
            .optional()?;
        if let Some(p) = payload {
            tx.execute(
                "DELETE FROM welcome_payloads WHERE id = ?1 AND NOT EXISTS (SELECT 1 FROM welcomes WHERE payload_id = ?1)",
                params![p],
            )?;
        }
        tx.commit()?;
        Ok(payload.is_some())
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

    /// Finishes a WAL checkpoint the background thread asked the writer to finish.
    fn maintain(&mut self) -> Result<()> {
        match &self.checkpointer {
            Some(c) => c.finish_if_asked(&self.conn),
            None => Ok(()),
        }
    }

    fn upkeep_due(&self) -> bool {
        self.checkpointer.as_ref().is_some_and(|c| c.finish_wanted())
    }

    /// A commit writes its pages to the WAL in the page cache (`synchronous = NORMAL`: no sync
    /// per commit) and checkpoints run on their own thread: short enough to run in place.
    fn writes_inline(&self) -> bool {
        true
    }

    fn prune(&mut self, cutoffs: &PruneCutoffs) -> Result<Pruned> {
        let tx = self.conn.transaction()?;
        let archive = i(cutoffs.archive_ms);
        // Counted through the `messages_created` index: touches only the expiring rows.
        let mut per_org: Vec<(String, i64, i64)> = Vec::new();
        {
            let mut stmt = tx.prepare_cached(
                "SELECT c.org, COUNT(*), COALESCE(SUM(LENGTH(m.payload)), 0)
                   FROM messages m JOIN channels c ON c.name = m.channel
                  WHERE m.created_ms < ?1 GROUP BY c.org",
            )?;
            let rows = stmt.query_map(params![archive], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
            for row in rows {
                per_org.push(row?);
            }
        }
        for (org, _, bytes) in &per_org {
            tx.execute(
                "UPDATE org_usage SET archive_bytes = MAX(archive_bytes - ?2, 0) WHERE org = ?1",
                params![org, bytes],
            )?;
        }
        let items: i64 = per_org.iter().map(|(_, n, _)| n).sum();
        let bytes: i64 = per_org.iter().map(|(_, _, b)| b).sum();
        let a = tx.execute("DELETE FROM messages WHERE created_ms < ?1", params![archive])?;
        let welcome = i(cutoffs.welcome_ms);
        let b = tx.execute("DELETE FROM welcomes WHERE created_ms < ?1", params![welcome])?;
        // payloads go with their last pointer (same creation time), or when acknowledged
        tx.execute("DELETE FROM welcome_payloads WHERE created_ms < ?1", params![welcome])?;
        let k = tx.execute("DELETE FROM key_packages WHERE created_ms < ?1", params![i(cutoffs.key_package_ms)])?;
        let cutoff_secs = i(cutoffs.archive_ms / 1000);
        tx.execute(
            "DELETE FROM invite_uses WHERE invite_id IN (SELECT id FROM invites WHERE expires_at < ?1)",
            params![cutoff_secs],
        )?;
        let c = tx.execute("DELETE FROM invites WHERE expires_at < ?1", params![cutoff_secs])?;
        tx.commit()?;
        Ok(Pruned { rows: a + b + c + k, items: u(items), bytes: u(bytes) })
    }

    /// Archive size: (items, payload bytes).
    fn archive_stats(&self) -> Result<(u64, u64)> {
        Ok(self.conn.query_row("SELECT COUNT(*), COALESCE(SUM(LENGTH(payload)), 0) FROM messages", [], |r| {
            Ok((u(r.get(0)?), u(r.get(1)?)))
        })?)
    }
}

/// Queues a commit's welcome (payload once, one pointer per recipient) and applies its roster
/// changes (removals first); returns the welcome ids in recipient order.
fn commit_extras(tx: &rusqlite::Transaction<'_>, item: &Append) -> Result<Vec<u64>> {
    let mut del = tx.prepare_cached("DELETE FROM roster WHERE channel = ?1 AND identity = ?2")?;
    for who in &item.removed {
        del.execute(params![item.channel, who])?;
    }
    let mut add =
        tx.prepare_cached("INSERT OR IGNORE INTO roster (channel, identity, since_seq) VALUES (?1, ?2, ?3)")?;
    for who in &item.added {
        add.execute(params![item.channel, who, i(item.seq)])?;
    }
    let Some((recipients, payload)) = &item.welcome else {
        return Ok(Vec::new());
    };
    tx.prepare_cached(
        "INSERT INTO welcome_payloads (org, channel, sender, commit_seq, commit_epoch, payload, created_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?
    .execute(params![
        item.org,
        item.channel,
        item.sender,
        i(item.seq),
        i(item.new_epoch),
        &payload[..],
        i(item.now_ms)
    ])?;
    let payload_id = tx.last_insert_rowid();
    let mut wel =
        tx.prepare_cached("INSERT INTO welcomes (org, recipient, payload_id, created_ms) VALUES (?1, ?2, ?3, ?4)")?;
    let mut ids = Vec::with_capacity(recipients.len());
    for recipient in recipients {
        wel.execute(params![item.org, recipient, payload_id, i(item.now_ms)])?;
        ids.push(u(tx.last_insert_rowid()));
    }
    Ok(ids)
}
