//! The encrypted keystore: one SQLCipher database per data directory.
//!
//! Layout of a data directory:
//! - `keystore.db` (+ `-wal`): SQLCipher, AES-256, every page encrypted and authenticated. It
//!   holds the identity's signature key, the openmls state (through
//!   `openmls_sqlite_storage`) and Skytale's own tables.
//! - `keystore.json`: public parameters only: format version, KDF (`raw` or `argon2id` with its
//!   salt and cost) and a key-check value `HMAC-SHA256(key, "skytale/keystore-check/v1")`. The
//!   check value lets a wrong key be told apart from a damaged database, and is no easier to
//!   attack than the database itself (both confirm a key guess).
//!
//! The database is opened with `locking_mode=EXCLUSIVE` in WAL mode: one writer, and a second
//! process gets `SKYTALE_KEYSTORE_LOCKED` instead of a silently diverging copy. A wrong key is
//! always an error; a new store is created only when neither file exists.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use argon2::{Algorithm, Argon2, Params, Version};
use hmac::{Hmac, Mac};
use rand::RngCore;
use rusqlite::{Connection, OpenFlags};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use zeroize::Zeroizing;

use crate::error::{Error, Result};
use crate::secret::{KeystoreSecret, SecretKey32};
use crate::wal_sync::WalFile;

const DB_FILE: &str = "keystore.db";
const META_FILE: &str = "keystore.json";
const KCV_LABEL: &[u8] = b"skytale/keystore-check/v1";
const SCHEMA_VERSION: i64 = 3;

/// Argon2id parameters used for new passphrase-protected keystores
/// (memory 19 MiB, 2 passes, 1 lane: the OWASP minimum for Argon2id).
pub const ARGON2_M_COST_KIB: u32 = 19 * 1024;
/// Argon2id passes for new keystores.
pub const ARGON2_T_COST: u32 = 2;
/// Argon2id lanes for new keystores.
pub const ARGON2_P_COST: u32 = 1;

#[derive(Serialize, Deserialize)]
struct Meta {
    format: u32,
    kdf: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    salt: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    m_cost: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    t_cost: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    p_cost: Option<u32>,
    kcv: String,
}

/// An open, unlocked keystore.
pub struct Keystore {
    conn: Connection,
    path: PathBuf,
    cipher_version: String,
    /// The WAL as the background sync thread sees it (`crate::wal_sync`).
    wal: Option<Arc<WalFile>>,
}

impl Drop for Keystore {
    fn drop(&mut self) {
        // Before the connection closes (and deletes the WAL): the sync thread lets it be.
        if let Some(wal) = &self.wal {
            wal.close();
        }
    }
}

impl std::fmt::Debug for Keystore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keystore").field("path", &self.path).finish_non_exhaustive()
    }
}

fn argon2_key(pass: &[u8], salt: &[u8], m: u32, t: u32, p: u32) -> Result<SecretKey32> {
    let params =
        Params::new(m, t, p, Some(32)).map_err(|e| Error::KeystoreCorrupt(format!("bad KDF parameters: {e}")))?;
    let mut out = Zeroizing::new([0u8; 32]);
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
        .hash_password_into(pass, salt, out.as_mut())
        .map_err(|e| Error::Internal(format!("argon2: {e}")))?;
    Ok(SecretKey32::from_bytes(*out))
}

fn key_check_mac(key: &SecretKey32) -> Result<Hmac<Sha256>> {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key.expose()).map_err(|e| Error::Internal(e.to_string()))?;
    mac.update(KCV_LABEL);
    Ok(mac)
}

fn key_check_value(key: &SecretKey32) -> Result<String> {
    Ok(hex::encode(key_check_mac(key)?.finalize().into_bytes()))
}

fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension("json.tmp");
    let mut f = fs::File::create(&tmp).map_err(|e| Error::Storage(format!("write {}: {e}", tmp.display())))?;
    f.write_all(bytes).and_then(|_| f.sync_all()).map_err(|e| Error::Storage(e.to_string()))?;
    fs::rename(&tmp, path).map_err(|e| Error::Storage(e.to_string()))?;
    Ok(())
}

/// Prepared statements kept per keystore connection.
const STATEMENT_CACHE: usize = 128;

impl Keystore {
    /// Opens (or, when the directory holds no keystore yet, creates) the keystore in `dir`.
    ///
    /// Errors: `SKYTALE_KEYSTORE_WRONG_KEY` when the key does not match,
    /// `SKYTALE_KEYSTORE_CORRUPT` when files are damaged or one of them is missing,
    /// `SKYTALE_KEYSTORE_LOCKED` when another process has it open.
    pub fn open(dir: &Path, secret: &KeystoreSecret) -> Result<Keystore> {
        fs::create_dir_all(dir).map_err(|e| Error::Storage(format!("create {}: {e}", dir.display())))?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let _ = fs::set_permissions(dir, fs::Permissions::from_mode(0o700));
        }
        let db_path = dir.join(DB_FILE);
        let meta_path = dir.join(META_FILE);
        let (db_exists, meta_exists) = (db_path.exists(), meta_path.exists());
        match (db_exists, meta_exists) {
            (false, false) => Self::create(&db_path, &meta_path, secret),
            (true, true) => Self::unlock(&db_path, &meta_path, secret),
            (true, false) => Err(Error::KeystoreCorrupt(format!("{META_FILE} is missing"))),
            (false, true) => Err(Error::KeystoreCorrupt(format!("{DB_FILE} is missing"))),
        }
    }

    fn create(db_path: &Path, meta_path: &Path, secret: &KeystoreSecret) -> Result<Keystore> {
        let (key, mut meta) = match secret {
            KeystoreSecret::Key(k) => (
                k.clone(),
                Meta {
                    format: 1,
                    kdf: "raw".into(),
                    salt: None,
                    m_cost: None,
                    t_cost: None,
                    p_cost: None,
                    kcv: String::new(),
                },
            ),
            KeystoreSecret::Passphrase(p) => {
                let mut salt = [0u8; 16];
                rand::rngs::OsRng.fill_bytes(&mut salt);
                let key = argon2_key(p.expose(), &salt, ARGON2_M_COST_KIB, ARGON2_T_COST, ARGON2_P_COST)?;
                (
                    key,
                    Meta {
                        format: 1,
                        kdf: "argon2id".into(),
                        salt: Some(hex::encode(salt)),
                        m_cost: Some(ARGON2_M_COST_KIB),
                        t_cost: Some(ARGON2_T_COST),
                        p_cost: Some(ARGON2_P_COST),
                        kcv: String::new(),
                    },
                )
            }
        };
        meta.kcv = key_check_value(&key)?;
        let store = Self::open_db(db_path, &key, true)?;
        let json = serde_json::to_vec_pretty(&meta).map_err(|e| Error::Internal(e.to_string()))?;
        write_atomically(meta_path, &json)?;
        Ok(store)
    }

    fn unlock(db_path: &Path, meta_path: &Path, secret: &KeystoreSecret) -> Result<Keystore> {
        let raw = fs::read(meta_path).map_err(|e| Error::Storage(format!("read {META_FILE}: {e}")))?;
        let meta: Meta =
            serde_json::from_slice(&raw).map_err(|_| Error::KeystoreCorrupt(format!("{META_FILE} is not valid")))?;
        if meta.format != 1 {
            return Err(Error::KeystoreCorrupt(format!("unknown keystore format {}", meta.format)));
        }
        let key = match secret {
            KeystoreSecret::Key(k) => k.clone(),
            KeystoreSecret::Passphrase(p) => {
                if meta.kdf != "argon2id" {
                    // A raw-key store cannot be opened with a passphrase.
                    return Err(Error::KeystoreWrongKey);
                }
                let salt = meta
                    .salt
                    .as_deref()
                    .and_then(|s| hex::decode(s).ok())
                    .ok_or_else(|| Error::KeystoreCorrupt("salt missing".into()))?;
                argon2_key(
                    p.expose(),
                    &salt,
                    meta.m_cost.unwrap_or(ARGON2_M_COST_KIB),
                    meta.t_cost.unwrap_or(ARGON2_T_COST),
                    meta.p_cost.unwrap_or(ARGON2_P_COST),
                )?
            }
        };
        let expected =
            hex::decode(&meta.kcv).map_err(|_| Error::KeystoreCorrupt("key check value unreadable".into()))?;
        key_check_mac(&key)?.verify_slice(&expected).map_err(|_| Error::KeystoreWrongKey)?;
        Self::open_db(db_path, &key, false)
    }

    fn open_db(db_path: &Path, key: &SecretKey32, create: bool) -> Result<Keystore> {
        let mut flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        if create {
            flags |= OpenFlags::SQLITE_OPEN_CREATE;
        }
        let conn =
            Connection::open_with_flags(db_path, flags).map_err(|e| Error::Storage(format!("open keystore: {e}")))?;
        conn.busy_timeout(std::time::Duration::from_millis(250))?;
        // Hot-path statements (transactions, inbox, positions, fork-detection records, and
        // openmls' state reads and writes in vendor/openmls_sqlite_storage) are prepared once
        // and reused: parsing them per message cost several percent of an agent.
        conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
        // Keep SQLCipher's own diagnostics (e.g. "hmac check failed") off stderr; errors are ours.
        let _ = conn.execute_batch("PRAGMA cipher_log_level = NONE;");
        let pragma = Zeroizing::new(format!("PRAGMA key = \"x'{}'\";", key.to_hex().as_str()));
        conn.execute_batch(&pragma).map_err(|e| {
            Error::Storage(format!("set key: {}", e.sqlite_error_code().map(|c| format!("{c:?}")).unwrap_or_default()))
        })?;
        drop(pragma);
        // HMAC-SHA256 page authentication (SHA-256 is hardware-accelerated on current CPUs,
        // unlike SQLCipher 4's default SHA-512); with a raw key no KDF runs. Part of the format.
        conn.execute_batch(
            "PRAGMA cipher_hmac_algorithm = HMAC_SHA256; PRAGMA cipher_kdf_algorithm = PBKDF2_HMAC_SHA256;",
        )
        .map_err(|e| Error::Storage(format!("cipher settings: {e}")))?;
        let cipher_version: String = conn
            .query_row("PRAGMA cipher_version", [], |r| r.get(0))
            .map_err(|_| Error::Internal("SQLCipher is not available (PRAGMA cipher_version failed)".into()))?;
        if cipher_version.trim().is_empty() {
            return Err(Error::Internal("SQLCipher is not available (empty cipher_version)".into()));
        }
        // First read of the encrypted header: a wrong key or a damaged file fails here.
        conn.query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get::<_, i64>(0)).map_err(|e| {
            match e.sqlite_error_code() {
                Some(rusqlite::ErrorCode::DatabaseBusy) | Some(rusqlite::ErrorCode::DatabaseLocked) => {
                    Error::KeystoreLocked
                }
                _ => Error::KeystoreCorrupt(
                    "the database cannot be decrypted with a key that passed the key check".into(),
                ),
            }
        })?;
        conn.execute_batch(
            "PRAGMA locking_mode = EXCLUSIVE;
             PRAGMA journal_mode = WAL;
             PRAGMA synchronous = NORMAL;
             PRAGMA foreign_keys = ON;
             PRAGMA secure_delete = ON;",
        )?;
        // Take the exclusive lock now, so a second process fails at open, not mid-operation.
        conn.execute_batch("BEGIN EXCLUSIVE; COMMIT;")?;
        // Commits mark the WAL for a background sync (see `crate::wal_sync`).
        let wal = crate::wal_sync::register(db_path);
        if let Some(wal) = &wal {
            let wal = Arc::clone(wal);
            conn.commit_hook(Some(move || {
                wal.note_commit();
                false // never turns a commit into a rollback
            }));
        }
        let mut store = Keystore { conn, path: db_path.to_path_buf(), cipher_version, wal };
        store.migrate()?;
        Ok(store)
    }

    fn migrate(&mut self) -> Result<()> {
        let version: i64 = self.conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        if version > SCHEMA_VERSION {
            return Err(Error::KeystoreCorrupt(format!("keystore schema {version} is newer than this library")));
        }
        if version < 1 {
            let tx = self.conn.transaction()?;
            tx.execute_batch(
                "CREATE TABLE skytale_identity (
                     id INTEGER PRIMARY KEY CHECK (id = 1),
                     name TEXT NOT NULL,
                     signature_public BLOB NOT NULL,
                     created_at INTEGER NOT NULL
                 );
                 CREATE TABLE skytale_channels (
                     name TEXT PRIMARY KEY,
                     group_id BLOB NOT NULL,
                     created_at INTEGER NOT NULL,
                     last_seq INTEGER NOT NULL DEFAULT 0
                 );
                 CREATE TABLE skytale_used_key_packages (
                     ref BLOB PRIMARY KEY,
                     used_at INTEGER NOT NULL
                 );
                 CREATE TABLE skytale_kv (
                     key TEXT PRIMARY KEY,
                     value BLOB NOT NULL
                 );
                 PRAGMA user_version = 1;",
            )?;
            tx.commit()?;
        }
        if version < 2 {
            let tx = self.conn.transaction()?;
            tx.execute_batch(
                "CREATE TABLE skytale_inbox (
                     channel TEXT NOT NULL,
                     seq INTEGER NOT NULL,
                     kind TEXT NOT NULL,
                     sender TEXT NOT NULL,
                     epoch INTEGER NOT NULL,
                     data BLOB NOT NULL,
                     PRIMARY KEY (channel, seq)
                 );
                 PRAGMA user_version = 2;",
            )?;
            tx.commit()?;
        }
        if version < 3 {
            // The relay's epoch (commit slot count) after the last processed item: it moves on
            // for every commit the relay ordered, including commits the members rejected.
            let tx = self.conn.transaction()?;
            tx.execute_batch(
                "ALTER TABLE skytale_channels ADD COLUMN relay_epoch INTEGER;
                 PRAGMA user_version = 3;",
            )?;
            tx.commit()?;
        }
        crate::provider::Storage::<&mut Connection>::new(&mut self.conn)
            .run_migrations()
            .map_err(|e| Error::Storage(format!("openmls storage migration: {e}")))?;
        // openmls' storage writes group state with `INSERT OR REPLACE`, which deletes the old row
        // and inserts one with a new rowid: with every message that touches the old and the new
        // table page and the primary-key index (each page written is encrypted and
        // authenticated by SQLCipher). Turn a write of an existing (group, type) into an update
        // in place: one page. Same result, so keystores with or without it are interchangeable.
        self.conn.execute_batch(
            "CREATE TRIGGER IF NOT EXISTS skytale_group_data_in_place
             BEFORE INSERT ON openmls_group_data
             WHEN EXISTS (SELECT 1 FROM openmls_group_data WHERE group_id = NEW.group_id AND data_type = NEW.data_type)
             BEGIN
                 UPDATE openmls_group_data SET group_data = NEW.group_data, provider_version = NEW.provider_version
                 WHERE group_id = NEW.group_id AND data_type = NEW.data_type;
                 SELECT RAISE(IGNORE);
             END;",
        )?;
        Ok(())
    }

    /// The SQLCipher version reported by `PRAGMA cipher_version` (never empty).
    pub fn cipher_version(&self) -> &str {
        &self.cipher_version
    }

    /// The database file path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The underlying connection.
    pub(crate) fn conn(&self) -> &Connection {
        &self.conn
    }

    /// Reads a value from the key-value table.
    pub fn kv_get(&self, key: &str) -> Result<Option<Vec<u8>>> {
        use rusqlite::OptionalExtension;
        Ok(self
            .conn
            .prepare_cached("SELECT value FROM skytale_kv WHERE key = ?1")?
            .query_row([key], |r| r.get(0))
            .optional()?)
    }

    /// Writes a value to the key-value table.
    pub fn kv_put(&self, key: &str, value: &[u8]) -> Result<()> {
        self.conn.prepare_cached("INSERT INTO skytale_kv (key, value) VALUES (?1, ?2) ON CONFLICT(key) DO UPDATE SET value = excluded.value")?.execute(rusqlite::params![key, value])?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::Passphrase;

    fn key(b: u8) -> KeystoreSecret {
        KeystoreSecret::Key(SecretKey32::from_bytes([b; 32]))
    }

    #[test]
    fn open_reopen_and_cipher_version() {
        let dir = tempfile::tempdir().unwrap();
        {
            let ks = Keystore::open(dir.path(), &key(1)).unwrap();
            assert!(!ks.cipher_version().is_empty());
            ks.kv_put("a", b"hello").unwrap();
        }
        let ks = Keystore::open(dir.path(), &key(1)).unwrap();
        assert_eq!(ks.kv_get("a").unwrap().unwrap(), b"hello");
    }

    /// openmls' `INSERT OR REPLACE` of group state updates the row in place (same rowid, so
    /// the table's other pages and the key index are not rewritten); a new row is still added.
    #[test]
    fn group_state_writes_update_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let ks = Keystore::open(dir.path(), &key(1)).unwrap();
        let write = |v: &[u8]| {
            ks.conn()
                .execute(
                    "INSERT OR REPLACE INTO openmls_group_data (group_id, data_type, group_data, provider_version)
                     VALUES (?1, 'message_secrets', ?2, 1)",
                    rusqlite::params![b"g".to_vec(), v.to_vec()],
                )
                .unwrap();
        };
        let row = || -> (i64, Vec<u8>) {
            ks.conn()
                .query_row(
                    "SELECT rowid, group_data FROM openmls_group_data WHERE group_id = ?1 AND data_type = 'message_secrets'",
                    [b"g".to_vec()],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .unwrap()
        };
        write(b"one");
        let (rowid, _) = row();
        write(b"two, longer");
        assert_eq!(row(), (rowid, b"two, longer".to_vec()));
        let count: i64 = ks.conn().query_row("SELECT count(*) FROM openmls_group_data", [], |r| r.get(0)).unwrap();
        assert_eq!(count, 1);
    }

    #[test]
    fn wrong_key_is_an_error_and_right_key_still_works() {
        let dir = tempfile::tempdir().unwrap();
        Keystore::open(dir.path(), &key(1)).unwrap().kv_put("a", b"x").unwrap();
        let err = Keystore::open(dir.path(), &key(2)).unwrap_err();
        assert_eq!(err.code(), "SKYTALE_KEYSTORE_WRONG_KEY");
        let err =
            Keystore::open(dir.path(), &KeystoreSecret::Passphrase(Passphrase::new("pw".into()).unwrap())).unwrap_err();
        assert_eq!(err.code(), "SKYTALE_KEYSTORE_WRONG_KEY");
        assert_eq!(Keystore::open(dir.path(), &key(1)).unwrap().kv_get("a").unwrap().unwrap(), b"x");
    }

    #[test]
    fn passphrase_store() {
        let dir = tempfile::tempdir().unwrap();
        let pw = |s: &str| KeystoreSecret::Passphrase(Passphrase::new(s.into()).unwrap());
        Keystore::open(dir.path(), &pw("correct horse")).unwrap().kv_put("k", b"v").unwrap();
        assert_eq!(Keystore::open(dir.path(), &pw("wrong horse")).unwrap_err().code(), "SKYTALE_KEYSTORE_WRONG_KEY");
        assert_eq!(Keystore::open(dir.path(), &pw("correct horse")).unwrap().kv_get("k").unwrap().unwrap(), b"v");
    }

    #[test]
    fn second_open_is_locked() {
        let dir = tempfile::tempdir().unwrap();
        let _a = Keystore::open(dir.path(), &key(1)).unwrap();
        assert_eq!(Keystore::open(dir.path(), &key(1)).unwrap_err().code(), "SKYTALE_KEYSTORE_LOCKED");
    }

    #[test]
    fn damaged_or_missing_files_are_corrupt_not_new() {
        let dir = tempfile::tempdir().unwrap();
        drop(Keystore::open(dir.path(), &key(1)).unwrap());
        let db = dir.path().join(DB_FILE);
        let mut bytes = fs::read(&db).unwrap();
        for b in bytes.iter_mut().take(4096).skip(100) {
            *b ^= 0xff;
        }
        fs::write(&db, &bytes).unwrap();
        assert_eq!(Keystore::open(dir.path(), &key(1)).unwrap_err().code(), "SKYTALE_KEYSTORE_CORRUPT");
        fs::remove_file(&db).unwrap();
        assert_eq!(Keystore::open(dir.path(), &key(1)).unwrap_err().code(), "SKYTALE_KEYSTORE_CORRUPT");
    }

    #[test]
    fn files_are_not_plain_sqlite() {
        let dir = tempfile::tempdir().unwrap();
        Keystore::open(dir.path(), &key(3)).unwrap().kv_put("marker", b"PLAINTEXT-MARKER-123").unwrap();
        for entry in fs::read_dir(dir.path()).unwrap() {
            let bytes = fs::read(entry.unwrap().path()).unwrap();
            assert!(!bytes.starts_with(b"SQLite format 3"));
            assert!(!bytes.windows(20).any(|w| w == b"PLAINTEXT-MARKER-123"));
        }
    }
}
