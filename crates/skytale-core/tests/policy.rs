//! The channel policy as every member enforces it: roles gate adds, removes and policy
//! changes; invites admit (by any member) and external joins need a registered, live invite;
//! a commit that breaks the policy is rejected by every other member and changes nothing.

use skytale_core::invite::InviteToken;
use skytale_core::policy::Role;
use skytale_core::{Agent, AgentOptions, CommitMode, Incoming, KeystoreSecret, SecretKey32};

const CH: &str = "acme/ops/policy";

struct Member {
    _dir: tempfile::TempDir,
    agent: Agent,
}

fn member(id: &str, b: u8) -> Member {
    let dir = tempfile::tempdir().unwrap();
    let secret = KeystoreSecret::Key(SecretKey32::from_bytes([b; 32]));
    let agent = Agent::open(AgentOptions { data_dir: dir.path(), identity: id, secret: &secret }).unwrap();
    Member { _dir: dir, agent }
}

/// Delivers a commit to the other members; returns each one's result code ("ok" or the error).
fn deliver(commit: &[u8], to: &[&Agent]) -> Vec<String> {
    to.iter()
        .map(|a| match a.process_incoming(CH, commit) {
            Ok(_) => "ok".to_string(),
            Err(e) => e.code().to_string(),
        })
        .collect()
}

/// alice (admin) + bob + carol (members).
fn channel() -> (Member, Member, Member) {
    let (alice, bob, carol) = (member("alice", 1), member("bob", 2), member("carol", 3));
    alice.agent.create_channel(CH).unwrap();
    let kps = [bob.agent.generate_key_packages(1).unwrap(), carol.agent.generate_key_packages(1).unwrap()].concat();
    let out = alice.agent.add_members(CH, &kps, CommitMode::Merge).unwrap();
    bob.agent.join_channel(out.welcome.as_ref().unwrap()).unwrap();
    carol.agent.join_channel(out.welcome.as_ref().unwrap()).unwrap();
    (alice, bob, carol)
}

#[test]
fn a_non_admin_add_is_rejected_by_every_member_and_the_next_valid_commit_goes_through() {
    let (alice, bob, carol) = channel();
    assert_eq!(alice.agent.policy(CH).unwrap().unwrap().role("alice"), Role::Admin);
    let dave = member("dave", 4);
    let kp = dave.agent.generate_key_packages(1).unwrap();
    // Bob's own client refuses at once.
    assert_eq!(bob.agent.add_members(CH, &kp, CommitMode::Stage).unwrap_err().code(), "SKYTALE_POLICY_DENIED");
    // A modified client commits anyway: every other member rejects it; nothing changes.
    let bad = bob.agent.add_members_bypassing_policy(CH, &kp, CommitMode::Stage).unwrap();
    assert_eq!(deliver(&bad.commit, &[&alice.agent, &carol.agent]), ["SKYTALE_POLICY_DENIED"; 2]);
    assert_eq!((alice.agent.epoch(CH).unwrap(), carol.agent.epoch(CH).unwrap()), (1, 1));
    bob.agent.clear_pending_commit(CH).unwrap();
    // The next valid commit for that epoch: alice's add of dave.
    let kp2 = dave.agent.generate_key_packages(1).unwrap();
    let good = alice.agent.add_members(CH, &kp2, CommitMode::Merge).unwrap();
    assert_eq!(deliver(&good.commit, &[&bob.agent, &carol.agent]), ["ok"; 2]);
    dave.agent.join_channel(good.welcome.as_ref().unwrap()).unwrap();
    let ex = |a: &Agent| a.export_secret(CH, "t", b"", 16).unwrap().to_vec();
    assert_eq!(ex(&alice.agent), ex(&bob.agent));
    assert_eq!(ex(&carol.agent), ex(&dave.agent));
    // Roles: bob may not promote himself; alice may; then bob adds.
    assert_eq!(
        bob.agent.set_role(CH, "bob", Role::Admin, CommitMode::Stage).unwrap_err().code(),
        "SKYTALE_POLICY_DENIED"
    );
    let promote = alice.agent.set_role(CH, "bob", Role::Admin, CommitMode::Merge).unwrap();
    assert_eq!(deliver(&promote.commit, &[&bob.agent, &carol.agent, &dave.agent]), ["ok"; 3]);
    assert!(bob.agent.may(CH, skytale_core::policy::Action::Add).unwrap());
    // Removing: carol (member) may not remove dave; bob (now admin) may.
    assert_eq!(
        carol.agent.remove_members(CH, &["dave".into()], CommitMode::Stage).unwrap_err().code(),
        "SKYTALE_POLICY_DENIED"
    );
    let rm = bob.agent.remove_members(CH, &["dave".into()], CommitMode::Merge).unwrap();
    assert_eq!(deliver(&rm.commit, &[&alice.agent, &carol.agent, &dave.agent]), ["ok"; 3]);
    assert!(!dave.agent.is_member(CH).unwrap());
}

#[test]
fn leaving_needs_no_role_and_drops_the_leavers_role() {
    let (alice, bob, carol) = channel();
    let promote = alice.agent.set_role(CH, "carol", Role::Admin, CommitMode::Merge).unwrap();
    deliver(&promote.commit, &[&bob.agent, &carol.agent]);
    let proposal = carol.agent.leave_proposal(CH).unwrap();
    for a in [&alice.agent, &bob.agent] {
        assert!(matches!(a.process_incoming(CH, &proposal).unwrap(), Incoming::Proposal { .. }));
    }
    let out = bob.agent.commit_leave_requests(CH, CommitMode::Merge).unwrap();
    assert_eq!(out.removed, vec!["carol".to_string()]);
    assert_eq!(deliver(&out.commit, &[&alice.agent, &carol.agent]), ["ok"; 2]);
    assert!(!carol.agent.is_member(CH).unwrap());
    assert_eq!(alice.agent.policy(CH).unwrap().unwrap().role("carol"), Role::Member, "role dropped");
    assert_eq!(bob.agent.commit_leave_requests(CH, CommitMode::Merge).unwrap_err().code(), "SKYTALE_INVALID_STATE");
}

#[test]
fn invites_admit_through_any_member_and_external_joins_fail_closed() {
    let (alice, bob, carol) = channel();
    let invite = InviteToken::generate(CH, "");
    let far = u64::MAX / 2;
    // Only an admin registers invites.
    assert_eq!(
        bob.agent.register_invite(CH, &invite, far, 2, CommitMode::Stage).unwrap_err().code(),
        "SKYTALE_POLICY_DENIED"
    );
    let reg = alice.agent.register_invite(CH, &invite, far, 2, CommitMode::Merge).unwrap();
    assert_eq!(deliver(&reg.commit, &[&bob.agent, &carol.agent]), ["ok"; 2]);

    // Eve's join request (sealed key package + admission proof), admitted by bob (no add role).
    let eve = member("eve", 5);
    let kp = eve.agent.generate_key_packages(1).unwrap().remove(0);
    let sig_key = eve.agent.signature_public_key().unwrap();
    let sealed = invite.seal_join_request("eve", &kp, &sig_key).unwrap();
    let (kp_opened, admission) = invite.open_join_request("eve", &sealed).unwrap();
    let admit = bob.agent.admit_with_invite(CH, &kp_opened, &invite.id_hex(), &admission, CommitMode::Merge).unwrap();
    assert_eq!(deliver(&admit.commit, &[&alice.agent, &carol.agent]), ["ok"; 2]);
    eve.agent.join_channel(admit.welcome.as_ref().unwrap()).unwrap();
    let used = |a: &Agent| a.policy(CH).unwrap().unwrap().invites[&invite.id_hex()].used.clone();
    assert_eq!(used(&carol.agent), vec!["eve".to_string()]);

    // Frank joins by external commit with the same invite (its last use).
    let frank = member("frank", 6);
    let gi = alice.agent.export_group_info(CH).unwrap();
    let (_, ext) = frank.agent.join_with_invite(&gi, &invite).unwrap();
    assert_eq!(deliver(&ext.commit, &[&alice.agent, &bob.agent, &carol.agent, &eve.agent]), ["ok"; 4]);
    let rec = carol.agent.record_invite_use(CH, &invite.id_hex(), "frank", CommitMode::Merge).unwrap();
    assert_eq!(deliver(&rec.commit, &[&alice.agent, &bob.agent, &eve.agent, &frank.agent]), ["ok"; 4]);

    // Used up: george is refused by his own client, and by every member if he forces it.
    let george = member("george", 7);
    let gi = alice.agent.export_group_info(CH).unwrap();
    assert_eq!(george.agent.join_with_invite(&gi, &invite).unwrap_err().code(), "SKYTALE_INVITE_USED_UP");
    let forged = skytale_core::policy::CommitProofs {
        external: Some(skytale_core::policy::ExternalProof {
            id: invite.id_hex(),
            sig: skytale_core::policy::b64(&invite.sign_external_join("george", alice.agent.epoch(CH).unwrap())),
        }),
        admit: vec![],
    }
    .to_aad()
    .unwrap();
    let (_, forced) = george.agent.join_by_external_commit(&gi, &forged).unwrap();
    let everyone = [&alice.agent, &bob.agent, &carol.agent, &eve.agent, &frank.agent];
    assert_eq!(deliver(&forced.commit, &everyone), ["SKYTALE_INVITE_USED_UP"; 5]);

    // A made-up invite id, and no proof at all: rejected by every member (fail closed).
    let henry = member("henry", 8);
    let made_up = InviteToken::generate(CH, "");
    let aad = skytale_core::policy::CommitProofs {
        external: Some(skytale_core::policy::ExternalProof {
            id: made_up.id_hex(),
            sig: skytale_core::policy::b64(&made_up.sign_external_join("henry", alice.agent.epoch(CH).unwrap())),
        }),
        admit: vec![],
    }
    .to_aad()
    .unwrap();
    let (_, x) = henry.agent.join_by_external_commit(&gi, &aad).unwrap();
    assert_eq!(deliver(&x.commit, &everyone), ["SKYTALE_INVITE_INVALID"; 5]);
    henry.agent.forget_channel(CH).unwrap();
    let (_, x) = henry.agent.join_by_external_commit(&gi, b"").unwrap();
    assert_eq!(deliver(&x.commit, &everyone), ["SKYTALE_POLICY_DENIED"; 5]);
    let epoch = alice.agent.epoch(CH).unwrap();
    assert!(everyone.iter().all(|a| a.epoch(CH).unwrap() == epoch), "nothing changed");

    // Eve is removed; the same token never lets her back in, a fresh admin invite does.
    let rm = alice.agent.remove_members(CH, &["eve".into()], CommitMode::Merge).unwrap();
    assert_eq!(deliver(&rm.commit, &[&bob.agent, &carol.agent, &eve.agent, &frank.agent]), ["ok"; 4]);
    let gi = alice.agent.export_group_info(CH).unwrap();
    assert_eq!(eve.agent.join_with_invite(&gi, &invite).unwrap_err().code(), "SKYTALE_INVITE_USED_UP");
    let fresh = InviteToken::generate(CH, "");
    let reg = alice.agent.register_invite(CH, &fresh, far, 1, CommitMode::Merge).unwrap();
    deliver(&reg.commit, &[&bob.agent, &carol.agent, &frank.agent]);
    let gi = alice.agent.export_group_info(CH).unwrap();
    let (_, back) = eve.agent.join_with_invite(&gi, &fresh).unwrap();
    assert_eq!(deliver(&back.commit, &[&alice.agent, &bob.agent, &carol.agent, &frank.agent]), ["ok"; 4]);

    // Revocation by the admin: the invite stops working for everyone.
    let rv = alice.agent.revoke_invite(CH, &fresh.id_hex(), CommitMode::Merge).unwrap();
    deliver(&rv.commit, &[&bob.agent, &carol.agent, &eve.agent, &frank.agent]);
    let gi = alice.agent.export_group_info(CH).unwrap();
    let ivan = member("ivan", 9);
    assert_eq!(ivan.agent.join_with_invite(&gi, &fresh).unwrap_err().code(), "SKYTALE_INVITE_REVOKED");
}

/// Reopens a member's keystore, as a restarted process does.
fn reopen(m: Member, id: &str, b: u8) -> Member {
    let Member { _dir: dir, agent } = m;
    drop(agent);
    let secret = KeystoreSecret::Key(SecretKey32::from_bytes([b; 32]));
    let agent = Agent::open(AgentOptions { data_dir: dir.path(), identity: id, secret: &secret }).unwrap();
    Member { _dir: dir, agent }
}

#[test]
fn a_leave_request_waiting_for_its_commit_is_found_again_after_a_restart() {
    let (alice, bob, _carol) = channel();
    assert!(!alice.agent.has_leave_requests(CH).unwrap());
    let leave = bob.agent.leave_proposal(CH).unwrap();
    assert_eq!(deliver(&leave, &[&alice.agent]), ["ok"]);
    assert!(alice.agent.has_leave_requests(CH).unwrap());
    // Killed before committing it: the proposal store is in the keystore.
    let alice = reopen(alice, "alice", 1);
    assert!(alice.agent.has_leave_requests(CH).unwrap());
    alice.agent.commit_leave_requests(CH, CommitMode::Merge).unwrap();
    assert!(!alice.agent.has_leave_requests(CH).unwrap());
    assert!(!alice.agent.members(CH).unwrap().contains(&"bob".to_string()));
}

#[test]
fn an_applied_external_join_owes_the_record_of_its_invite_use_until_settled() {
    let (alice, bob, carol) = channel();
    let invite = InviteToken::generate(CH, "");
    let reg = alice.agent.register_invite(CH, &invite, u64::MAX / 2, 2, CommitMode::Merge).unwrap();
    assert_eq!(deliver(&reg.commit, &[&bob.agent, &carol.agent]), ["ok"; 2]);
    assert_eq!(carol.agent.owed_invite_uses(CH).unwrap(), vec![]);
    let frank = member("frank", 6);
    let gi = alice.agent.export_group_info(CH).unwrap();
    let (_, ext) = frank.agent.join_with_invite(&gi, &invite).unwrap();
    // Applied as the relay delivers it: the owed record is written in the same transaction.
    let at = skytale_core::Delivery { seq: 3, relay_epoch: 0, at_secs: 1_700_000_000 };
    carol.agent.process_delivered(CH, &ext.commit, at).unwrap();
    let owed = vec![(invite.id_hex(), "frank".to_string())];
    assert_eq!(carol.agent.owed_invite_uses(CH).unwrap(), owed);
    let carol = reopen(carol, "carol", 3);
    assert_eq!(carol.agent.owed_invite_uses(CH).unwrap(), owed, "kept across a restart");
    carol.agent.record_invite_use(CH, &invite.id_hex(), "frank", CommitMode::Merge).unwrap();
    carol.agent.settle_invite_use(CH, &invite.id_hex(), "frank").unwrap();
    assert_eq!(carol.agent.owed_invite_uses(CH).unwrap(), vec![]);
}

#[test]
fn members_refuse_any_proposal_but_a_leave_request_so_a_stray_one_cannot_silence_the_channel() {
    let (alice, bob, carol) = channel();
    // An Update proposal (the SDK never makes one): refused and not stored.
    let update = bob.agent.update_proposal_unsupported(CH).unwrap();
    assert_eq!(deliver(&update, &[&alice.agent, &carol.agent]), ["SKYTALE_POLICY_DENIED"; 2]);
    let msg = alice.agent.encrypt(CH, b"still talking").unwrap();
    assert!(matches!(carol.agent.process_incoming(CH, &msg).unwrap(), Incoming::Message { .. }));
    // A leave request is stored: no message until its commit (MLS), with its own error.
    let leave = carol.agent.leave_proposal(CH).unwrap();
    assert_eq!(deliver(&leave, &[&alice.agent]), ["ok"]);
    let err = alice.agent.encrypt(CH, b"waits").unwrap_err();
    assert!(matches!(err, skytale_core::Error::LeavePending(_)), "{err:?}");
    assert_eq!(err.code(), "SKYTALE_INVALID_STATE");
    // Any other commit would void the request (MLS drops what an epoch's commit leaves out).
    let err = alice.agent.rotate_key(CH, CommitMode::Merge).unwrap_err();
    assert!(matches!(err, skytale_core::Error::LeavePending(_)), "{err:?}");
    alice.agent.commit_leave_requests(CH, CommitMode::Merge).unwrap();
    alice.agent.encrypt(CH, b"after the commit").unwrap();
    alice.agent.rotate_key(CH, CommitMode::Merge).unwrap();
}

#[test]
fn a_leave_request_voided_by_another_members_commit_is_noted_for_removal() {
    let (alice, bob, carol) = channel();
    let at = |seq| skytale_core::Delivery { seq, relay_epoch: 0, at_secs: 1_700_000_000 };
    let leave = carol.agent.leave_proposal(CH).unwrap();
    alice.agent.process_delivered(CH, &leave, at(1)).unwrap();
    // Bob had not seen the request: his rotation ends the epoch without it.
    let rotation = bob.agent.rotate_key(CH, CommitMode::Merge).unwrap();
    alice.agent.process_delivered(CH, &rotation.commit, at(2)).unwrap();
    assert!(!alice.agent.has_leave_requests(CH).unwrap(), "voided");
    assert_eq!(alice.agent.voided_leaves(CH).unwrap(), vec!["carol".to_string()]);
    let alice = reopen(alice, "alice", 1);
    assert_eq!(alice.agent.voided_leaves(CH).unwrap(), vec!["carol".to_string()], "kept across a restart");
    alice.agent.remove_members(CH, &["carol".into()], CommitMode::Merge).unwrap();
    alice.agent.settle_voided_leave(CH, "carol").unwrap();
    assert_eq!(alice.agent.voided_leaves(CH).unwrap(), Vec::<String>::new());
    // A commit that covers the request voids nothing.
    let (dave, erin) = (member("dave", 4), member("erin", 5));
    let kps = [dave.agent.generate_key_packages(1).unwrap(), erin.agent.generate_key_packages(1).unwrap()].concat();
    let added = alice.agent.add_members(CH, &kps, CommitMode::Merge).unwrap();
    dave.agent.join_channel(added.welcome.as_ref().unwrap()).unwrap();
    let leave = dave.agent.leave_proposal(CH).unwrap();
    alice.agent.process_delivered(CH, &leave, at(3)).unwrap();
    alice.agent.commit_leave_requests(CH, CommitMode::Merge).unwrap();
    assert_eq!(alice.agent.voided_leaves(CH).unwrap(), Vec::<String>::new());
}
