//! Fork detection and resync, at the core level (sans IO): authenticators in the AAD, commit
//! slots, items that are behind, and a member rejoining by an external commit.

use super::*;
use crate::{AgentOptions, CommitMode, KeystoreSecret, SecretKey32};

fn agent(dir: &std::path::Path, id: &str) -> Agent {
    let key = KeystoreSecret::Key(SecretKey32::from_bytes([9; 32]));
    Agent::open(AgentOptions { data_dir: &dir.join(id), identity: id, secret: &key }).unwrap()
}

fn pair(ch: &str) -> (tempfile::TempDir, Agent, Agent) {
    let dir = tempfile::tempdir().unwrap();
    let alice = agent(dir.path(), "alice");
    let bob = agent(dir.path(), "bob");
    alice.create_channel(ch).unwrap();
    let out = alice.add_members(ch, &bob.generate_key_packages(1).unwrap(), CommitMode::Merge).unwrap();
    bob.join_channel(out.welcome.as_ref().unwrap()).unwrap();
    (dir, alice, bob)
}

fn dl(seq: u64, relay_epoch: u64) -> Delivery {
    Delivery { seq, relay_epoch, at_secs: 1_700_000_000 }
}

/// Encrypts with an arbitrary authenticated data (what a lying or forked sender would send).
fn encrypt_with_aad(agent: &Agent, name: &str, aad: Vec<u8>, text: &[u8]) -> Vec<u8> {
    let mut inner = agent.lock().unwrap();
    inner.group(name).unwrap();
    let inner = &mut *inner;
    let group = inner.groups.get_mut(name).unwrap();
    let provider = crate::provider::Provider::new(&inner.crypto, inner.store.conn());
    group.set_aad(aad);
    let msg = group.create_message(&provider, &inner.signer, &crate::envelope::pad(text).unwrap()).unwrap();
    super::super::serialize(&msg).unwrap()
}

fn aad(epoch: u64, auth: [u8; AUTH_LEN]) -> Vec<u8> {
    let mut a = vec![AAD_TAG];
    a.extend_from_slice(&epoch.to_be_bytes());
    a.extend_from_slice(&auth);
    a
}

#[test]
fn every_application_message_carries_its_epoch_and_authenticator() {
    let ch = "acme/fork/aad";
    let (_d, alice, bob) = pair(ch);
    let wire = alice.encrypt(ch, b"hi").unwrap();
    let protocol = parse_protocol(&wire).unwrap();
    let (epoch, auth) = parse_aad(&clear_aad(&protocol).unwrap()).unwrap();
    assert_eq!(epoch, alice.epoch(ch).unwrap());
    assert_eq!(auth.to_vec(), alice.epoch_authenticator(ch).unwrap()[..AUTH_LEN].to_vec());
    assert_eq!(alice.epoch_authenticator(ch).unwrap(), bob.epoch_authenticator(ch).unwrap());
    assert!(matches!(bob.process_incoming(ch, &wire).unwrap(), Incoming::Message { .. }));
}

#[test]
fn an_authenticated_message_with_another_authenticator_of_the_epoch_is_a_fork() {
    let ch = "acme/fork/other-auth";
    let (_d, alice, bob) = pair(ch);
    let epoch = alice.epoch(ch).unwrap();
    let wire = encrypt_with_aad(&alice, ch, aad(epoch, [7; AUTH_LEN]), b"from another branch");
    let err = bob.process_delivered(ch, &wire, dl(5, 1)).unwrap_err();
    assert_eq!(err.code(), "SKYTALE_FORK_DETECTED");
    assert!(
        matches!(err, Error::Fork { local_epoch, remote_epoch, .. } if local_epoch == epoch && remote_epoch == epoch)
    );
    assert_eq!(failure_kind(&err), Failure::Fork);
    assert!(bob.inbox(ch, 0, 10).unwrap().is_empty(), "the message is not accepted");
    // A message without the authenticated data, or naming another epoch, is refused too.
    let bare = encrypt_with_aad(&alice, ch, Vec::new(), b"bare");
    assert_eq!(bob.process_incoming(ch, &bare).unwrap_err().code(), "SKYTALE_INVALID_MESSAGE");
    let lying = encrypt_with_aad(&alice, ch, aad(epoch + 1, [0; AUTH_LEN]), b"lying");
    assert_eq!(bob.process_incoming(ch, &lying).unwrap_err().code(), "SKYTALE_INVALID_MESSAGE");
    // The channel still works.
    let ok = alice.encrypt(ch, b"fine").unwrap();
    assert!(matches!(bob.process_incoming(ch, &ok).unwrap(), Incoming::Message { .. }));
}

/// Flips one byte of the authenticated data inside the wire message.
fn tamper_aad(wire: &[u8], offset_in_aad: usize) -> Vec<u8> {
    let protocol = parse_protocol(wire).unwrap();
    let aad = clear_aad(&protocol).unwrap();
    let at = wire.windows(aad.len()).position(|w| w == aad.as_slice()).unwrap();
    let mut out = wire.to_vec();
    out[at + offset_in_aad] ^= 0x01;
    out
}

#[test]
fn a_tampered_authenticated_data_is_rejected_by_mls() {
    let ch = "acme/fork/tamper";
    let (_d, alice, bob) = pair(ch);
    let wire = alice.encrypt(ch, b"hello").unwrap();
    // The tag byte: no longer fork-detection data, and MLS refuses the message (AEAD).
    let tag = bob.process_incoming(ch, &tamper_aad(&wire, 0)).unwrap_err();
    assert_eq!(tag.code(), "SKYTALE_DECRYPT_FAILED");
    // The authenticator: MLS refuses it; the clear data names this epoch with another
    // authenticator, which is reported as (unauthenticated) fork evidence. Never accepted.
    let auth = bob.process_incoming(ch, &tamper_aad(&wire, 12)).unwrap_err();
    assert_eq!(auth.code(), "SKYTALE_FORK_DETECTED");
    // The original still decrypts: nothing was consumed by the failed attempts.
    assert!(matches!(bob.process_incoming(ch, &wire).unwrap(), Incoming::Message { ref data, .. } if data == b"hello"));
}

#[test]
fn a_second_commit_for_a_filled_slot_is_a_fork_and_the_same_one_a_replay() {
    let dir = tempfile::tempdir().unwrap();
    let ch = "acme/fork/slots";
    let alice = agent(dir.path(), "alice");
    let bob = agent(dir.path(), "bob");
    let carol = agent(dir.path(), "carol");
    alice.create_channel(ch).unwrap();
    let kps = [bob.generate_key_packages(1).unwrap(), carol.generate_key_packages(1).unwrap()].concat();
    let out = alice.add_members(ch, &kps, CommitMode::Merge).unwrap();
    bob.join_channel(out.welcome.as_ref().unwrap()).unwrap();
    carol.join_channel(out.welcome.as_ref().unwrap()).unwrap();
    for a in [&alice, &bob, &carol] {
        a.set_relay_epoch(ch, 1).unwrap();
    }
    // Alice and carol both commit on epoch 1; the relay (lying) delivers both for slot 1.
    let c_alice = alice.rotate_key(ch, CommitMode::Stage).unwrap();
    let c_carol = carol.rotate_key(ch, CommitMode::Stage).unwrap();
    bob.process_delivered(ch, &c_alice.commit, dl(10, 2)).unwrap();
    assert_eq!(bob.relay_epoch(ch).unwrap(), Some(2));
    let err = bob.process_delivered_batch(ch, &[(c_carol.commit.clone(), dl(11, 2))]).unwrap();
    assert_eq!(err[0].as_ref().unwrap_err().code(), "SKYTALE_FORK_DETECTED");
    // The same commit again under a new seq is a replay, not a fork.
    let again = bob.process_delivered_batch(ch, &[(c_alice.commit.clone(), dl(12, 2))]).unwrap();
    assert_eq!(again[0].as_ref().unwrap_err().code(), "SKYTALE_REPLAY");
    assert_eq!(bob.commit_slots(ch).unwrap().last().map(|s| (s.0, s.1)), Some((1, 10)));
}

#[test]
fn an_item_that_is_behind_stops_the_batch_and_keeps_its_position() {
    let ch = "acme/fork/behind";
    let (_d, alice, bob) = pair(ch);
    bob.set_relay_epoch(ch, 1).unwrap();
    bob.set_last_seq(ch, 3).unwrap();
    let before = alice.encrypt(ch, b"before").unwrap();
    let missed = alice.rotate_key(ch, CommitMode::Merge).unwrap();
    let after = alice.encrypt(ch, b"after").unwrap();
    let next = alice.encrypt(ch, b"next").unwrap();
    let items = vec![(before, dl(4, 1)), (after.clone(), dl(6, 2)), (next.clone(), dl(7, 2))];
    let res = bob.process_delivered_batch(ch, &items).unwrap();
    assert_eq!(res.len(), 2, "nothing after the item that is behind is processed");
    assert!(res[0].is_ok());
    assert_eq!(failure_kind(res[1].as_ref().unwrap_err()), Failure::Behind);
    assert_eq!(bob.last_seq(ch).unwrap(), 4);
    assert_eq!(bob.skipped(ch).unwrap(), 0);
    // Once the missing commit arrives, the same items process.
    let items = vec![(missed.commit, dl(5, 2)), (after, dl(6, 2)), (next, dl(7, 2))];
    assert!(bob.process_delivered_batch(ch, &items).unwrap().iter().all(|r| r.is_ok()));
    assert_eq!(bob.last_seq(ch).unwrap(), 7);
}

#[test]
fn garbage_is_counted_once_and_does_not_advance_the_position() {
    let ch = "acme/fork/garbage";
    let (_d, alice, bob) = pair(ch);
    let items = vec![(b"junk".to_vec(), dl(5, 1))];
    bob.process_delivered_batch(ch, &items).unwrap();
    bob.process_delivered_batch(ch, &items).unwrap();
    assert_eq!(bob.skipped(ch).unwrap(), 1);
    assert_eq!(bob.last_seq(ch).unwrap(), 0, "a relay cannot push a real item out with garbage under its seq");
    let real = alice.encrypt(ch, b"real").unwrap();
    assert!(bob.process_delivered_batch(ch, &[(real, dl(5, 1))]).unwrap()[0].is_ok());
}

#[test]
fn a_member_rejoins_by_an_external_commit_that_replaces_its_old_leaf() {
    let ch = "acme/fork/resync";
    let (_d, alice, bob) = pair(ch);
    // Bob asks; alice answers with a sealed GroupInfo; bob rejoins.
    let req = bob.resync_request(ch, 1_700_000_000).unwrap();
    assert_eq!(crate::resync_item_kind(req.bytes()), Some(crate::ResyncItem::Request));
    assert!(alice.answer_resync(ch, req.bytes(), "mallory", 1, 1_700_000_000).unwrap().is_none());
    assert!(alice.answer_resync(ch, req.bytes(), "bob", 1, 1_700_009_999).unwrap().is_none(), "stale request");
    let answer = alice.answer_resync(ch, req.bytes(), "bob", 1, 1_700_000_010).unwrap().unwrap();
    let other = bob.resync_request(ch, 1_700_000_000).unwrap();
    assert!(bob.open_resync(&other, &answer).unwrap().is_none(), "an answer to another request");
    let (relay_epoch, gi) = bob.open_resync(&req, &answer).unwrap().unwrap();
    assert_eq!(relay_epoch, 1);
    bob.set_last_seq(ch, 9).unwrap();
    let out = bob.rejoin_by_external_commit(ch, &gi).unwrap();
    assert_eq!(bob.last_seq(ch).unwrap(), 9, "the channel's position stays");
    match alice.process_incoming(ch, &out.commit).unwrap() {
        Incoming::Commit { external, resync, added, removed, sender, .. } => {
            assert!(external && resync);
            assert_eq!(sender, "bob");
            assert!(added.is_empty() && removed.is_empty(), "membership unchanged: {added:?} {removed:?}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(alice.members(ch).unwrap().len(), 2);
    assert_eq!(alice.epoch_authenticator(ch).unwrap(), bob.epoch_authenticator(ch).unwrap());
    let w = bob.encrypt(ch, b"back").unwrap();
    assert!(matches!(alice.process_incoming(ch, &w).unwrap(), Incoming::Message { ref data, .. } if data == b"back"));
    // Items from before the resync are skipped as such, never a reason to resync again.
    bob.mark_resynced(ch, 20, 3, &out.commit).unwrap();
    let old = vec![(b"old".to_vec(), dl(15, 1))];
    assert_eq!(bob.process_delivered_batch(ch, &old).unwrap().len(), 1);
    assert_eq!(bob.last_seq(ch).unwrap(), 15);
}

#[test]
fn an_invite_less_external_join_of_a_non_member_is_still_refused() {
    let ch = "acme/fork/newcomer";
    let (d, alice, _bob) = pair(ch);
    let carol = agent(d.path(), "carol");
    let (_, out) = carol.join_by_external_commit(&alice.export_group_info(ch).unwrap(), b"").unwrap();
    let err = alice.process_incoming(ch, &out.commit).unwrap_err();
    assert_eq!(err.code(), "SKYTALE_POLICY_DENIED");
    assert_eq!(failure_kind(&err), Failure::EmptySlot);
    assert_eq!(alice.members(ch).unwrap().len(), 2);
}
