//! The SQLite schema and its migrations, versioned by `PRAGMA user_version`.
//!
//! Every store starts from the version-0 schema (the tables of the first release, created if
//! missing) and is then migrated step by step, each step in one transaction. A fresh store runs
//! the same steps on empty tables, so the migration path is exercised by every start.
//!
//! - **Version 1** (relay rosters, welcomes stored once, per-org usage):
//!   - `roster(channel, identity, since_seq)`. Stores from before rosters have no record of who
//!     created a channel or who was added, so each existing channel's roster is *seeded* (since
//!     seq 0) from the distinct senders of its archive (join requests included: before rosters
//!     anyone of the org could read the channel), the recipients of its queued welcomes and the
//!     creators of its invites. Members that never sent anything and already acknowledged their
//!     welcome are not found: a member re-adds them (a commit with `added`), or they rejoin with
//!     an invite. A channel for which nobody is found (no history, no roster) is claimed by the
//!     next `CreateChannel` of its org.
//!   - `welcome_payloads` (one row per Welcome, with the commit's epoch) + `welcomes` (one pointer
//!     row per recipient; ids, and the id sequence, carried over so acknowledged ids are never
//!     reused).
//!   - `org_usage(org, channels, invites, key_packages, archive_bytes)`, computed from the data,
//!     then kept by triggers (channels, invites, key packages, welcome payloads) and by the
//!     archive writes and prunes (message payloads, counted per batch, not per row).
//! - **Version 2** (the archive as a rowid table): `messages` is copied into a rowid table with
//!   unique `(channel, seq)`; as a `WITHOUT ROWID` table every message of the 1 KiB padding
//!   bucket took an overflow page of its own (see [`V2`]). The copy is one transaction: a large
//!   archive needs as much free disk again while it runs.

use rusqlite::Connection;

use crate::error::Result;

/// The schema version this build writes.
pub const VERSION: i64 = 2;

/// Version 0: the first release's tables.
pub(super) const V0: &str = "
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

/// Version 0 → 1: rosters (seeded), welcomes stored once, per-org usage.
const V1: &str = "
CREATE TABLE roster (
  channel TEXT NOT NULL,
  identity TEXT NOT NULL,
  since_seq INTEGER NOT NULL,
  PRIMARY KEY (channel, identity)
) WITHOUT ROWID;
INSERT OR IGNORE INTO roster (channel, identity, since_seq) SELECT DISTINCT channel, sender, 0 FROM messages;
INSERT OR IGNORE INTO roster (channel, identity, since_seq) SELECT DISTINCT channel, recipient, 0 FROM welcomes;
INSERT OR IGNORE INTO roster (channel, identity, since_seq)
  SELECT DISTINCT i.channel, i.created_by, 0 FROM invites i JOIN channels c ON c.name = i.channel;

ALTER TABLE welcomes RENAME TO welcomes_v0;
CREATE TABLE welcome_payloads (
  id INTEGER PRIMARY KEY,
  org TEXT NOT NULL,
  channel TEXT NOT NULL,
  sender TEXT NOT NULL,
  commit_seq INTEGER NOT NULL,
  commit_epoch INTEGER NOT NULL,
  payload BLOB NOT NULL,
  created_ms INTEGER NOT NULL
);
CREATE TABLE welcomes (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  org TEXT NOT NULL,
  recipient TEXT NOT NULL,
  payload_id INTEGER NOT NULL,
  created_ms INTEGER NOT NULL
);
INSERT INTO welcome_payloads (id, org, channel, sender, commit_seq, commit_epoch, payload, created_ms)
  SELECT w.id, w.org, w.channel, w.sender, w.commit_seq,
         COALESCE((SELECT m.epoch + 1 FROM messages m WHERE m.channel = w.channel AND m.seq = w.commit_seq), 0),
         w.payload, w.created_ms
    FROM welcomes_v0 w;
INSERT INTO welcomes (id, org, recipient, payload_id, created_ms)
  SELECT id, org, recipient, id, created_ms FROM welcomes_v0;
DELETE FROM sqlite_sequence WHERE name = 'welcomes';
INSERT INTO sqlite_sequence (name, seq) SELECT 'welcomes', seq FROM sqlite_sequence WHERE name = 'welcomes_v0';
DROP TABLE welcomes_v0;
CREATE INDEX welcomes_recipient ON welcomes(org, recipient);
CREATE INDEX welcomes_payload ON welcomes(payload_id);
CREATE INDEX welcomes_created ON welcomes(created_ms);
CREATE INDEX welcome_payloads_created ON welcome_payloads(created_ms);
CREATE INDEX key_packages_created ON key_packages(created_ms);

CREATE TABLE org_usage (
  org TEXT PRIMARY KEY,
  channels INTEGER NOT NULL DEFAULT 0,
  invites INTEGER NOT NULL DEFAULT 0,
  key_packages INTEGER NOT NULL DEFAULT 0,
  archive_bytes INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
INSERT OR IGNORE INTO org_usage (org)
  SELECT org FROM channels UNION SELECT org FROM invites UNION SELECT org FROM key_packages
  UNION SELECT org FROM welcome_payloads;
UPDATE org_usage SET
  channels = (SELECT COUNT(*) FROM channels c WHERE c.org = org_usage.org),
  invites = (SELECT COUNT(*) FROM invites i WHERE i.org = org_usage.org),
  key_packages = (SELECT COUNT(*) FROM key_packages k WHERE k.org = org_usage.org),
  archive_bytes =
    (SELECT COALESCE(SUM(LENGTH(m.payload)), 0) FROM messages m JOIN channels c ON c.name = m.channel
      WHERE c.org = org_usage.org)
    + (SELECT COALESCE(SUM(LENGTH(w.payload)), 0) FROM welcome_payloads w WHERE w.org = org_usage.org);

CREATE TRIGGER channels_usage_ins AFTER INSERT ON channels BEGIN
  INSERT OR IGNORE INTO org_usage (org) VALUES (NEW.org);
  UPDATE org_usage SET channels = channels + 1 WHERE org = NEW.org;
END;
CREATE TRIGGER channels_usage_del AFTER DELETE ON channels BEGIN
  UPDATE org_usage SET channels = MAX(channels - 1, 0) WHERE org = OLD.org;
END;
CREATE TRIGGER invites_usage_ins AFTER INSERT ON invites BEGIN
  INSERT OR IGNORE INTO org_usage (org) VALUES (NEW.org);
  UPDATE org_usage SET invites = invites + 1 WHERE org = NEW.org;
END;
CREATE TRIGGER invites_usage_del AFTER DELETE ON invites BEGIN
  UPDATE org_usage SET invites = MAX(invites - 1, 0) WHERE org = OLD.org;
END;
CREATE TRIGGER key_packages_usage_ins AFTER INSERT ON key_packages BEGIN
  INSERT OR IGNORE INTO org_usage (org) VALUES (NEW.org);
  UPDATE org_usage SET key_packages = key_packages + 1 WHERE org = NEW.org;
END;
CREATE TRIGGER key_packages_usage_del AFTER DELETE ON key_packages BEGIN
  UPDATE org_usage SET key_packages = MAX(key_packages - 1, 0) WHERE org = OLD.org;
END;
CREATE TRIGGER welcome_payloads_usage_ins AFTER INSERT ON welcome_payloads BEGIN
  INSERT OR IGNORE INTO org_usage (org) VALUES (NEW.org);
  UPDATE org_usage SET archive_bytes = archive_bytes + LENGTH(NEW.payload) WHERE org = NEW.org;
END;
CREATE TRIGGER welcome_payloads_usage_del AFTER DELETE ON welcome_payloads BEGIN
  UPDATE org_usage SET archive_bytes = MAX(archive_bytes - LENGTH(OLD.payload), 0) WHERE org = OLD.org;
END;
";

/// Version 2: the archive as a rowid table. As a `WITHOUT ROWID` table (an index B-tree) a row
/// is stored inline only up to ~1,000 bytes on 4 KiB pages, and every message of the 1 KiB
/// padding bucket is a little over that (MLS framing on top): each took an overflow page of
/// its own, ~4.6 KiB per message, and one more page written per send. A rowid table keeps
/// rows up to ~4,000 bytes inline (~1.2 KiB per such message). `(channel, seq)` stays unique
/// through an index; the copy keeps every row as it was.
const V2: &str = "
CREATE TABLE messages_v2 (
  id INTEGER PRIMARY KEY,
  channel TEXT NOT NULL,
  seq INTEGER NOT NULL,
  epoch INTEGER NOT NULL,
  kind INTEGER NOT NULL,
  sender TEXT NOT NULL,
  client_msg_id TEXT NOT NULL,
  payload BLOB NOT NULL,
  created_ms INTEGER NOT NULL
);
INSERT INTO messages_v2 (channel, seq, epoch, kind, sender, client_msg_id, payload, created_ms)
  SELECT channel, seq, epoch, kind, sender, client_msg_id, payload, created_ms FROM messages ORDER BY channel, seq;
DROP TABLE messages;
ALTER TABLE messages_v2 RENAME TO messages;
CREATE UNIQUE INDEX messages_seq ON messages(channel, seq);
CREATE UNIQUE INDEX messages_dedupe ON messages(channel, sender, client_msg_id) WHERE client_msg_id <> '';
CREATE INDEX messages_created ON messages(created_ms);
";

/// The migration steps: `MIGRATIONS[i]` takes a store from version `i` to `i + 1`.
const MIGRATIONS: [&str; 2] = [V1, V2];

/// Creates the version-0 tables if missing, then migrates to [`VERSION`] (each step one
/// transaction, so a crash leaves the store at a whole version). A store written by a newer
/// build is refused.
pub fn migrate(conn: &mut Connection) -> Result<()> {
    conn.execute_batch(V0)?;
    let mut version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if version > VERSION {
        return Err(crate::error::RelayError::Config(format!(
            "the relay store is at schema version {version}, newer than this relay ({VERSION}); upgrade the relay"
        )));
    }
    while version < VERSION {
        let step = MIGRATIONS.get(version.max(0) as usize).copied().unwrap_or("");
        let tx = conn.transaction()?;
        tx.execute_batch(step)?;
        tx.pragma_update(None, "user_version", version + 1)?;
        tx.commit()?;
        version += 1;
        tracing::info!(version, "relay store migrated");
    }
    Ok(())
}
