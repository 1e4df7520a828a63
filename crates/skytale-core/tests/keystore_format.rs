//! Keystores written by earlier versions (openmls state stored as JSON) open with this one,
//! keep working, and are converted to the compact codec value by value as state is rewritten.
//!
//! The fixture in `tests/fixtures/json-keystore` was written by the version before the compact
//! codec (`cargo test --test keystore_format -- --ignored write_fixture` on that version): alice
//! created a channel and added bob; bob read one of alice's three messages; carol only generated
//! key packages. `pending.bin` holds alice's two unread messages and one of carol's key packages.

use std::path::{Path, PathBuf};

use skytale_core::{Agent, AgentOptions, CommitMode, Incoming, KeystoreSecret, SecretKey32};

const CH: &str = "acme/format/upgrade";

fn key(b: u8) -> KeystoreSecret {
    KeystoreSecret::Key(SecretKey32::from_bytes([b; 32]))
}

fn open(dir: &Path, id: &str, b: u8) -> Agent {
    Agent::open(AgentOptions { data_dir: &dir.join(id), identity: id, secret: &key(b) }).unwrap()
}

fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/json-keystore")
}

fn text(inc: Incoming) -> Vec<u8> {
    match inc {
        Incoming::Message { data, .. } => data.to_vec(),
        other => panic!("expected a message, got {other:?}"),
    }
}

/// Length-prefixed records.
fn write_records(path: &Path, records: &[Vec<u8>]) {
    let mut out = Vec::new();
    for r in records {
        out.extend_from_slice(&(r.len() as u32).to_be_bytes());
        out.extend_from_slice(r);
    }
    std::fs::write(path, out).unwrap();
}

fn read_records(path: &Path) -> Vec<Vec<u8>> {
    let bytes = std::fs::read(path).unwrap();
    let mut rest = &bytes[..];
    let mut out = Vec::new();
    while rest.len() >= 4 {
        let n = u32::from_be_bytes(rest[..4].try_into().unwrap()) as usize;
        out.push(rest[4..4 + n].to_vec());
        rest = &rest[4 + n..];
    }
    out
}

/// How many openmls group-state values of `id`'s keystore are stored in each codec:
/// (compact, JSON).
fn codecs(dir: &Path, id: &str, b: u8) -> (usize, usize) {
    let conn = rusqlite::Connection::open(dir.join(id).join("keystore.db")).unwrap();
    conn.execute_batch(&format!("PRAGMA key = \"x'{}'\";", hex::encode([b; 32]))).unwrap();
    conn.execute_batch("PRAGMA cipher_hmac_algorithm = HMAC_SHA256; PRAGMA cipher_kdf_algorithm = PBKDF2_HMAC_SHA256;")
        .unwrap();
    let firsts: Vec<u8> = conn
        .prepare("SELECT substr(group_data, 1, 1) FROM openmls_group_data WHERE data_type IN ('tree', 'message_secrets', 'context')")
        .unwrap()
        .query_map([], |r| r.get::<_, Vec<u8>>(0))
        .unwrap()
        .map(|r| r.unwrap()[0])
        .collect();
    (firsts.iter().filter(|&&f| f == 0xC1).count(), firsts.iter().filter(|&&f| f == b'{').count())
}

#[test]
fn a_keystore_written_as_json_opens_works_and_is_converted() {
    let tmp = tempfile::tempdir().unwrap();
    for id in ["alice", "bob", "carol"] {
        std::fs::create_dir_all(tmp.path().join(id)).unwrap();
        for f in std::fs::read_dir(fixture_dir().join(id)).unwrap() {
            let f = f.unwrap();
            std::fs::copy(f.path(), tmp.path().join(id).join(f.file_name())).unwrap();
        }
    }
    let pending = read_records(&fixture_dir().join("pending.bin"));
    assert_eq!(codecs(tmp.path(), "bob", 2), (0, 3), "the fixture is all JSON");
    let (alice, bob, carol) = (open(tmp.path(), "alice", 1), open(tmp.path(), "bob", 2), open(tmp.path(), "carol", 3));
    // Bob reads what alice sent before the upgrade (message secrets stored as JSON).
    assert_eq!(text(bob.process_incoming(CH, &pending[0]).unwrap()), b"before 2");
    assert_eq!(text(bob.process_incoming(CH, &pending[1]).unwrap()), b"before 3");
    // Both ways, now written compactly.
    assert_eq!(text(bob.process_incoming(CH, &alice.encrypt(CH, b"after 1").unwrap()).unwrap()), b"after 1");
    assert_eq!(text(alice.process_incoming(CH, &bob.encrypt(CH, b"after 2").unwrap()).unwrap()), b"after 2");
    // Carol joins with a key package (and its private keys) stored as JSON.
    let out = alice.add_members(CH, &pending[2..3], CommitMode::Merge).unwrap();
    bob.process_incoming(CH, &out.commit).unwrap();
    assert_eq!(carol.join_channel(out.welcome.as_ref().unwrap()).unwrap(), CH);
    let rot = bob.rotate_key(CH, CommitMode::Merge).unwrap();
    alice.process_incoming(CH, &rot.commit).unwrap();
    carol.process_incoming(CH, &rot.commit).unwrap();
    assert_eq!(text(carol.process_incoming(CH, &alice.encrypt(CH, b"after 3").unwrap()).unwrap()), b"after 3");
    assert_eq!(alice.export_secret(CH, "t", b"", 32).unwrap(), carol.export_secret(CH, "t", b"", 32).unwrap());
    drop((alice, bob, carol));
    assert_eq!(codecs(tmp.path(), "bob", 2), (3, 0), "rewritten state is compact");
    // And it all survives a restart.
    let (alice, bob) = (open(tmp.path(), "alice", 1), open(tmp.path(), "bob", 2));
    assert_eq!(
        text(bob.process_incoming(CH, &alice.encrypt(CH, b"after restart").unwrap()).unwrap()),
        b"after restart"
    );
}

/// Writes the fixture (run on the version before the compact codec; see the module doc).
#[test]
#[ignore]
fn write_fixture() {
    let dir = fixture_dir();
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let (alice, bob, carol) = (open(&dir, "alice", 1), open(&dir, "bob", 2), open(&dir, "carol", 3));
    alice.create_channel(CH).unwrap();
    let out = alice.add_members(CH, &bob.generate_key_packages(1).unwrap(), CommitMode::Merge).unwrap();
    bob.join_channel(out.welcome.as_ref().unwrap()).unwrap();
    let first = alice.encrypt(CH, b"before 1").unwrap();
    assert_eq!(text(bob.process_incoming(CH, &first).unwrap()), b"before 1");
    let second = alice.encrypt(CH, b"before 2").unwrap();
    let third = alice.encrypt(CH, b"before 3").unwrap();
    let carol_kp = carol.generate_key_packages(2).unwrap().remove(0);
    write_records(&dir.join("pending.bin"), &[second, third, carol_kp]);
}
