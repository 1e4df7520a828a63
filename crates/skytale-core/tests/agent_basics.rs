//! Agent behaviour on bad input and across restarts.

use skytale_core::{Agent, AgentOptions, CommitMode, Incoming, KeystoreSecret, Passphrase, SecretKey32};

fn key(b: u8) -> KeystoreSecret {
    KeystoreSecret::Key(SecretKey32::from_bytes([b; 32]))
}

fn open(dir: &std::path::Path, id: &str, secret: &KeystoreSecret) -> Agent {
    Agent::open(AgentOptions { data_dir: dir, identity: id, secret }).unwrap()
}

fn pair() -> (tempfile::TempDir, tempfile::TempDir, Agent, Agent) {
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let alice = open(da.path(), "alice", &key(1));
    let bob = open(db.path(), "bob", &KeystoreSecret::Passphrase(Passphrase::new("correct horse".into()).unwrap()));
    (da, db, alice, bob)
}

#[test]
fn round_trip_tamper_replay_and_key_package_reuse() {
    let (_da, _db, alice, bob) = pair();
    let ch = "acme/research/summarizer";
    alice.create_channel(ch).unwrap();
    assert_eq!(alice.create_channel(ch).unwrap_err().code(), "SKYTALE_CHANNEL_EXISTS");
    assert_eq!(alice.create_channel("Bad Name").unwrap_err().code(), "SKYTALE_INVALID_CHANNEL_NAME");
    let kp = bob.generate_key_packages(1).unwrap();
    let out = alice.add_members(ch, &kp, CommitMode::Merge).unwrap();
    assert_eq!(out.added, vec!["bob".to_string()]);
    assert_eq!(bob.join_channel(out.welcome.as_ref().unwrap()).unwrap(), ch);
    assert_eq!(alice.epoch(ch).unwrap(), 1);
    assert_eq!(bob.epoch(ch).unwrap(), 1);

    let wire = alice.encrypt(ch, b"hi").unwrap();
    let mut tampered = wire.clone();
    let last = tampered.len() - 5;
    tampered[last] ^= 0x01;
    assert_eq!(bob.process_incoming(ch, &tampered).unwrap_err().code(), "SKYTALE_DECRYPT_FAILED");
    assert_eq!(
        bob.process_incoming(ch, &wire).unwrap(),
        Incoming::Message { sender: "alice".into(), data: b"hi".to_vec(), epoch: 1 }
    );
    assert_eq!(bob.process_incoming(ch, &wire).unwrap_err().code(), "SKYTALE_REPLAY");
    assert_eq!(bob.process_incoming(ch, b"garbage").unwrap_err().code(), "SKYTALE_INVALID_MESSAGE");
    let back = bob.encrypt(ch, b"hello alice").unwrap();
    assert!(
        matches!(alice.process_incoming(ch, &back).unwrap(), Incoming::Message { ref data, .. } if data == b"hello alice")
    );

    // The same key package a second time: refused by the adder, and by the joiner.
    let ch2 = "acme/research/other";
    alice.create_channel(ch2).unwrap();
    assert_eq!(alice.add_members(ch2, &kp, CommitMode::Merge).unwrap_err().code(), "SKYTALE_KEY_PACKAGE_USED");
    let carol_dir = tempfile::tempdir().unwrap();
    let carol = open(carol_dir.path(), "carol", &key(3));
    carol.create_channel(ch2).unwrap();
    let out2 = carol.add_members(ch2, &kp, CommitMode::Merge).unwrap();
    assert_eq!(bob.join_channel(out2.welcome.as_ref().unwrap()).unwrap_err().code(), "SKYTALE_KEY_PACKAGE_USED");
    assert_eq!(alice.epoch("acme/none/x").unwrap_err().code(), "SKYTALE_CHANNEL_NOT_FOUND");
}

#[test]
fn state_survives_reopen_and_identity_is_checked() {
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let ch = "acme/team/general";
    {
        let alice = open(da.path(), "alice", &key(1));
        let bob = open(db.path(), "bob", &key(2));
        alice.create_channel(ch).unwrap();
        let out = alice.add_members(ch, &bob.generate_key_packages(1).unwrap(), CommitMode::Merge).unwrap();
        bob.join_channel(out.welcome.as_ref().unwrap()).unwrap();
        let w = alice.encrypt(ch, b"one").unwrap();
        bob.process_incoming(ch, &w).unwrap();
    }
    let alice = open(da.path(), "alice", &key(1));
    let bob = open(db.path(), "bob", &key(2));
    assert_eq!(alice.channel_names().unwrap(), vec![ch.to_string()]);
    let w = alice.encrypt(ch, b"two").unwrap();
    assert!(matches!(bob.process_incoming(ch, &w).unwrap(), Incoming::Message { ref data, .. } if data == b"two"));
    let w = bob.encrypt(ch, b"three").unwrap();
    assert!(matches!(alice.process_incoming(ch, &w).unwrap(), Incoming::Message { ref data, .. } if data == b"three"));
    drop(alice);
    let err = Agent::open(AgentOptions { data_dir: da.path(), identity: "mallory", secret: &key(1) }).unwrap_err();
    assert_eq!(err.code(), "SKYTALE_IDENTITY_MISMATCH");
    let err = Agent::open(AgentOptions { data_dir: da.path(), identity: "alice", secret: &key(9) }).unwrap_err();
    assert_eq!(err.code(), "SKYTALE_KEYSTORE_WRONG_KEY");
}

#[test]
fn staged_commits_wait_for_the_delivery_service() {
    let (_da, _db, alice, bob) = pair();
    let ch = "acme/team/staged";
    alice.create_channel(ch).unwrap();
    let out = alice.add_members(ch, &bob.generate_key_packages(1).unwrap(), CommitMode::Merge).unwrap();
    bob.join_channel(out.welcome.as_ref().unwrap()).unwrap();
    // Both commit at epoch 1; the DS accepts bob's; alice discards hers and follows bob.
    let a = alice.rotate_key(ch, CommitMode::Stage).unwrap();
    let b = bob.rotate_key(ch, CommitMode::Stage).unwrap();
    assert_eq!((a.from_epoch, b.from_epoch), (1, 1));
    assert!(alice.has_pending_commit(ch).unwrap());
    assert_eq!(bob.merge_pending_commit(ch).unwrap(), 2);
    alice.clear_pending_commit(ch).unwrap();
    assert!(matches!(alice.process_incoming(ch, &b.commit).unwrap(), Incoming::Commit { epoch: 2, .. }));
    assert_eq!(alice.export_secret(ch, "x", b"", 16).unwrap(), bob.export_secret(ch, "x", b"", 16).unwrap());
    // The losing commit, if replayed, is refused without harm.
    assert_eq!(bob.process_incoming(ch, &a.commit).unwrap_err().code(), "SKYTALE_WRONG_EPOCH");
}

#[test]
fn a_rejected_staged_add_can_be_retried_with_the_same_key_package() {
    let (_da, _db, alice, bob) = pair();
    let ch = "acme/team/retry";
    alice.create_channel(ch).unwrap();
    let kp = bob.generate_key_packages(1).unwrap();
    let first = alice.add_members(ch, &kp, CommitMode::Stage).unwrap();
    alice.clear_pending_commit(ch).unwrap();
    let second = alice.add_members(ch, &kp, CommitMode::Stage).unwrap();
    assert_eq!(second.from_epoch, first.from_epoch);
    alice.merge_pending_commit(ch).unwrap();
    bob.join_channel(second.welcome.as_ref().unwrap()).unwrap();
    assert_eq!(alice.add_members(ch, &kp, CommitMode::Merge).unwrap_err().code(), "SKYTALE_KEY_PACKAGE_USED");
}

#[test]
fn delivered_items_land_in_the_inbox_with_their_seq_atomically() {
    let (_da, _db, alice, bob) = pair();
    let ch = "acme/team/inbox";
    alice.create_channel(ch).unwrap();
    let out = alice.add_members(ch, &bob.generate_key_packages(1).unwrap(), CommitMode::Merge).unwrap();
    bob.join_channel(out.welcome.as_ref().unwrap()).unwrap();
    let w1 = alice.encrypt(ch, b"one").unwrap();
    let w2 = alice.encrypt(ch, b"two").unwrap();
    bob.process_delivered(ch, &w1, dl(5)).unwrap();
    // A failed item changes nothing: neither the seq nor the inbox.
    assert_eq!(bob.process_delivered(ch, &w1, dl(6)).unwrap_err().code(), "SKYTALE_REPLAY");
    assert_eq!(bob.last_seq(ch).unwrap(), 5);
    bob.process_delivered(ch, &w2, dl(7)).unwrap();
    let rot = alice.rotate_key(ch, CommitMode::Merge).unwrap();
    bob.process_delivered(ch, &rot.commit, dl(9)).unwrap();
    let items = bob.inbox(ch, 0, 10).unwrap();
    assert_eq!(
        items.iter().map(|i| (i.seq, i.kind.as_str())).collect::<Vec<_>>(),
        vec![(5, "message"), (7, "message"), (9, "commit")]
    );
    assert_eq!(items[1].data, b"two");
    bob.inbox_ack(ch, 7).unwrap();
    assert_eq!(bob.inbox(ch, 0, 10).unwrap().len(), 1);
    assert_eq!(bob.inbox(ch, 9, 10).unwrap().len(), 0);
    assert_eq!(bob.last_seq(ch).unwrap(), 9);
}

#[test]
fn external_commit_join_from_group_info() {
    let (_da, _db, alice, bob) = pair();
    let ch = "acme/team/external";
    alice.create_channel(ch).unwrap();
    let invite = skytale_core::invite::InviteToken::generate(ch, "");
    alice.register_invite(ch, &invite, u64::MAX / 2, 1, CommitMode::Merge).unwrap();
    let gi = alice.export_group_info(ch).unwrap();
    let (name, out) = bob.join_with_invite(&gi, &invite).unwrap();
    assert_eq!(name, ch);
    assert_eq!((out.from_epoch, out.epoch), (1, 2));
    match alice.process_incoming(ch, &out.commit).unwrap() {
        Incoming::Commit { sender, external, authenticated_data, epoch, .. } => {
            assert_eq!(sender, "bob");
            assert!(external);
            let proofs = skytale_core::policy::CommitProofs::from_aad(&authenticated_data);
            assert_eq!(proofs.external.map(|p| p.id), Some(invite.id_hex()));
            assert_eq!(epoch, 2);
        }
        other => panic!("{other:?}"),
    }
    let w = alice.encrypt(ch, b"hello joiner").unwrap();
    assert!(
        matches!(bob.process_incoming(ch, &w).unwrap(), Incoming::Message { ref data, .. } if data == b"hello joiner")
    );
    // A joiner without a valid proof can be removed by any member.
    let rm = alice.remove_members(ch, &["bob".to_string()], CommitMode::Merge).unwrap();
    assert!(matches!(bob.process_incoming(ch, &rm.commit).unwrap(), Incoming::Commit { self_removed: true, .. }));
}

fn dl(seq: u64) -> skytale_core::Delivery {
    skytale_core::Delivery { seq, relay_epoch: 0, at_secs: 1_700_000_000 }
}

#[test]
fn a_batch_commits_good_items_and_records_bad_ones_as_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let key = KeystoreSecret::Key(SecretKey32::from_bytes([3; 32]));
    let alice = Agent::open(AgentOptions { data_dir: &dir.path().join("a"), identity: "alice", secret: &key }).unwrap();
    let bob = Agent::open(AgentOptions { data_dir: &dir.path().join("b"), identity: "bob", secret: &key }).unwrap();
    let ch = "acme/team/batch";
    alice.create_channel(ch).unwrap();
    let out = alice.add_members(ch, &bob.generate_key_packages(1).unwrap(), CommitMode::Merge).unwrap();
    bob.join_channel(out.welcome.as_ref().unwrap()).unwrap();
    let w1 = alice.encrypt(ch, b"one").unwrap();
    let rot = alice.rotate_key(ch, CommitMode::Merge).unwrap();
    let w2 = alice.encrypt_batch(ch, &[b"two", b"three"]).unwrap();
    let items = vec![
        (w1.clone(), dl(1)),
        (b"garbage".to_vec(), dl(2)),
        (rot.commit.clone(), skytale_core::Delivery { seq: 3, relay_epoch: 2, at_secs: 1_700_000_000 }),
        (w2[0].clone(), dl(4)),
        (w1.clone(), dl(5)), // replay inside the batch
        (w2[1].clone(), dl(6)),
    ];
    let res = bob.process_delivered_batch(ch, &items).unwrap();
    let ok: Vec<bool> = res.iter().map(|r| r.is_ok()).collect();
    assert_eq!(ok, vec![true, false, true, true, false, true]);
    assert_eq!(res[1].as_ref().unwrap_err().code(), "SKYTALE_INVALID_MESSAGE");
    assert_eq!(bob.last_seq(ch).unwrap(), 6);
    assert_eq!(bob.relay_epoch(ch).unwrap(), Some(2));
    assert_eq!(bob.epoch(ch).unwrap(), alice.epoch(ch).unwrap());
    let texts: Vec<Vec<u8>> =
        bob.inbox(ch, 0, 10).unwrap().into_iter().filter(|i| i.kind == "message").map(|i| i.data).collect();
    assert_eq!(texts, vec![b"one".to_vec(), b"two".to_vec(), b"three".to_vec()]);
    // the channel still works both ways after the batch
    let back = bob.encrypt(ch, b"ack").unwrap();
    assert!(matches!(alice.process_incoming(ch, &back).unwrap(), skytale_core::Incoming::Message { .. }));
}

#[test]
fn ciphertext_sizes_reveal_a_bucket_not_a_length() {
    let dir = tempfile::tempdir().unwrap();
    let key = KeystoreSecret::Key(SecretKey32::from_bytes([4; 32]));
    let alice = Agent::open(AgentOptions { data_dir: &dir.path().join("a"), identity: "alice", secret: &key }).unwrap();
    let bob = Agent::open(AgentOptions { data_dir: &dir.path().join("b"), identity: "bob", secret: &key }).unwrap();
    let ch = "acme/team/pad";
    alice.create_channel(ch).unwrap();
    let out = alice.add_members(ch, &bob.generate_key_packages(1).unwrap(), CommitMode::Merge).unwrap();
    bob.join_channel(out.welcome.as_ref().unwrap()).unwrap();
    let mut sizes = std::collections::BTreeSet::new();
    for n in 0..240usize {
        let msg = vec![b'x'; n];
        let wire = alice.encrypt(ch, &msg).unwrap();
        sizes.insert(wire.len());
        match bob.process_incoming(ch, &wire).unwrap() {
            Incoming::Message { data, .. } => assert_eq!(data, msg),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(sizes.len(), 1, "every message up to 240 B has the same ciphertext size: {sizes:?}");
    let big = alice.encrypt(ch, &[b'y'; 300]).unwrap();
    assert!(big.len() > *sizes.iter().next().unwrap());
}

/// One past epoch's secrets are kept (a message sent just before a commit still decrypts after
/// it); older ones are deleted at the next commit (forward secrecy, and smaller per-message
/// state writes: see `DEFAULT_PAST_EPOCHS`).
#[test]
fn a_message_one_epoch_late_decrypts_and_one_two_epochs_late_does_not() {
    let (_da, _db, alice, bob) = pair();
    let ch = "acme/past/epochs";
    alice.create_channel(ch).unwrap();
    let out = alice.add_members(ch, &bob.generate_key_packages(1).unwrap(), CommitMode::Merge).unwrap();
    bob.join_channel(out.welcome.as_ref().unwrap()).unwrap();
    let one_late = bob.encrypt(ch, b"one epoch late").unwrap();
    let two_late = bob.encrypt(ch, b"two epochs late").unwrap();
    alice.rotate_key(ch, CommitMode::Merge).unwrap();
    match alice.process_incoming(ch, &one_late).unwrap() {
        Incoming::Message { data, .. } => assert_eq!(&data[..], b"one epoch late"),
        other => panic!("expected a message, got {other:?}"),
    }
    alice.rotate_key(ch, CommitMode::Merge).unwrap();
    let err = alice.process_incoming(ch, &two_late).unwrap_err();
    assert!(err.code().starts_with("SKYTALE_"), "{err:?}");
    // The refusal changed nothing.
    assert_eq!(alice.epoch(ch).unwrap(), 3);
}

/// An agent that keeps no past epochs (what a relay-ordered client sets) decrypts a message only
/// in its own epoch; a refused one changes nothing, and the setting is bounded.
#[test]
fn an_agent_keeping_no_past_epochs_refuses_a_message_one_epoch_late() {
    let (_da, _db, alice, bob) = pair();
    alice.set_past_epochs(0).unwrap();
    assert_eq!(alice.set_past_epochs(17).unwrap_err().code(), "SKYTALE_INVALID_ARGUMENT");
    let ch = "acme/past/none";
    alice.create_channel(ch).unwrap();
    let out = alice.add_members(ch, &bob.generate_key_packages(1).unwrap(), CommitMode::Merge).unwrap();
    bob.join_channel(out.welcome.as_ref().unwrap()).unwrap();
    let on_time = bob.encrypt(ch, b"on time").unwrap();
    let late = bob.encrypt(ch, b"one epoch late").unwrap();
    assert!(matches!(alice.process_incoming(ch, &on_time).unwrap(), Incoming::Message { .. }));
    alice.rotate_key(ch, CommitMode::Merge).unwrap();
    let err = alice.process_incoming(ch, &late).unwrap_err();
    assert!(err.code().starts_with("SKYTALE_"), "{err:?}");
    assert_eq!(alice.epoch(ch).unwrap(), 2);
}

#[test]
fn a_noted_ack_rides_with_the_next_batch_or_a_flush_and_a_crash_only_brings_items_back() {
    let dir = tempfile::tempdir().unwrap();
    let key = KeystoreSecret::Key(SecretKey32::from_bytes([4; 32]));
    let alice = Agent::open(AgentOptions { data_dir: &dir.path().join("a"), identity: "alice", secret: &key }).unwrap();
    let bob_dir = dir.path().join("b");
    let bob = Agent::open(AgentOptions { data_dir: &bob_dir, identity: "bob", secret: &key }).unwrap();
    let ch = "acme/team/acks";
    alice.create_channel(ch).unwrap();
    let out = alice.add_members(ch, &bob.generate_key_packages(1).unwrap(), CommitMode::Merge).unwrap();
    bob.join_channel(out.welcome.as_ref().unwrap()).unwrap();
    let w = alice.encrypt_batch(ch, &[b"one", b"two", b"three", b"four"]).unwrap();
    let seqs = |a: &Agent| a.inbox(ch, 0, 10).unwrap().iter().map(|i| i.seq).collect::<Vec<_>>();

    bob.process_delivered_batch(ch, &[(w[0].clone(), dl(1)), (w[1].clone(), dl(2))]).unwrap();
    bob.inbox_ack_later(ch, 1).unwrap();
    assert!(bob.has_pending_acks());
    assert_eq!(seqs(&bob), vec![1, 2], "noting writes nothing");
    // The next processing transaction takes the noted ack along.
    bob.process_delivered_batch(ch, &[(w[2].clone(), dl(3))]).unwrap();
    assert!(!bob.has_pending_acks());
    assert_eq!(seqs(&bob), vec![2, 3]);
    // Without a delivery, a flush writes it.
    bob.inbox_ack_later(ch, 2).unwrap();
    bob.flush_acks().unwrap();
    assert_eq!(seqs(&bob), vec![3]);
    // An ack written at once covers a noted one below it.
    bob.inbox_ack_later(ch, 3).unwrap();
    bob.inbox_ack(ch, 3).unwrap();
    assert!(!bob.has_pending_acks());
    // A crash with an ack noted only: the item comes back, nothing is lost.
    bob.process_delivered_batch(ch, &[(w[3].clone(), dl(4))]).unwrap();
    bob.inbox_ack_later(ch, 4).unwrap();
    drop(bob);
    let bob = Agent::open(AgentOptions { data_dir: &bob_dir, identity: "bob", secret: &key }).unwrap();
    assert!(!bob.has_pending_acks());
    assert_eq!(seqs(&bob), vec![4]);
    assert_eq!(bob.inbox(ch, 0, 10).unwrap()[0].data, b"four");
}
