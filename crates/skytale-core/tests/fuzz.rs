//! Mutation fuzzing on stable Rust (seeded, reproducible): real messages, credentials, padded
//! plaintexts and keystore files are mutated (bit flips, byte sets, truncation, extension,
//! splices) and fed to the decoders. Every input must give a value or a coded error — no panic,
//! no hang — and a refused input must change nothing (the channel keeps working).
//!
//! `cargo test --release -p skytale-core --test fuzz` runs a short pass; set `FUZZ_ITERS` (e.g.
//! `FUZZ_ITERS=1000000`) for a long one. `FUZZ_SEED` picks the seed.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use skytale_core::{
    envelope, verify_credential, Agent, AgentOptions, CommitMode, Expected, IssuerKey, KeystoreSecret, SecretKey32,
    TrustAnchors,
};

fn iters(default: u64) -> u64 {
    std::env::var("FUZZ_ITERS").ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn rng() -> ChaCha8Rng {
    let seed = std::env::var("FUZZ_SEED").ok().and_then(|v| v.parse().ok()).unwrap_or(0x5eed);
    ChaCha8Rng::seed_from_u64(seed)
}

/// One random mutation of `input`.
fn mutate(rng: &mut ChaCha8Rng, input: &[u8], corpus: &[Vec<u8>]) -> Vec<u8> {
    let mut v = input.to_vec();
    let rounds = rng.gen_range(1..=4);
    for _ in 0..rounds {
        match rng.gen_range(0..6) {
            0 if !v.is_empty() => {
                let i = rng.gen_range(0..v.len());
                v[i] ^= 1 << rng.gen_range(0..8);
            }
            1 if !v.is_empty() => {
                let i = rng.gen_range(0..v.len());
                v[i] = rng.gen();
            }
            2 if !v.is_empty() => {
                let n = rng.gen_range(0..v.len());
                v.truncate(n);
            }
            3 => {
                let extra: Vec<u8> = (0..rng.gen_range(1..64)).map(|_| rng.gen()).collect();
                let at = rng.gen_range(0..=v.len());
                v.splice(at..at, extra);
            }
            4 if !corpus.is_empty() => {
                let other = &corpus[rng.gen_range(0..corpus.len())];
                if !other.is_empty() && !v.is_empty() {
                    let from = rng.gen_range(0..other.len());
                    let at = rng.gen_range(0..v.len());
                    let n = rng.gen_range(0..(other.len() - from).min(v.len() - at) + 1);
                    v[at..at + n].copy_from_slice(&other[from..from + n]);
                }
            }
            _ => {
                if let Some(b) = v.first_mut() {
                    *b = rng.gen();
                }
            }
        }
    }
    v
}

fn key(b: u8) -> KeystoreSecret {
    KeystoreSecret::Key(SecretKey32::from_bytes([b; 32]))
}

#[test]
fn fuzz_process_incoming_survives_mutated_messages_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let alice =
        Agent::open(AgentOptions { data_dir: &dir.path().join("a"), identity: "alice", secret: &key(1) }).unwrap();
    let bob = Agent::open(AgentOptions { data_dir: &dir.path().join("b"), identity: "bob", secret: &key(2) }).unwrap();
    let carol =
        Agent::open(AgentOptions { data_dir: &dir.path().join("c"), identity: "carol", secret: &key(3) }).unwrap();
    let ch = "acme/fuzz/mls";
    alice.create_channel(ch).unwrap();
    let out = alice.add_members(ch, &bob.generate_key_packages(1).unwrap(), CommitMode::Merge).unwrap();
    bob.join_channel(out.welcome.as_ref().unwrap()).unwrap();
    // A corpus of real messages of every kind (bob processes none of them yet).
    let app = alice.encrypt(ch, b"hello").unwrap();
    let kp = carol.generate_key_packages(1).unwrap().remove(0);
    let add = alice.add_members(ch, std::slice::from_ref(&kp), CommitMode::Stage).unwrap();
    alice.clear_pending_commit(ch).unwrap();
    let corpus =
        vec![app.clone(), add.commit.clone(), add.welcome.clone().unwrap(), kp.clone(), out.welcome.clone().unwrap()];
    let epoch = bob.epoch(ch).unwrap();
    let mut rng = rng();
    let n = iters(3_000);
    let mut accepted = 0;
    for i in 0..n {
        let base = &corpus[(i as usize) % corpus.len()];
        let input = mutate(&mut rng, base, &corpus);
        if corpus.contains(&input) {
            continue; // a mutation that undid itself: a real message, not garbage
        }
        match bob.process_incoming(ch, &input) {
            Ok(_) => accepted += 1,
            Err(e) => assert!(e.code().starts_with("SKYTALE_"), "uncoded error {e:?}"),
        }
        // The other decoders must hold too.
        let _ = bob.join_channel(&input).map_err(|e| assert!(e.code().starts_with("SKYTALE_")));
        let _ = envelope::unpad(input.clone()).map_err(|e| assert!(e.code().starts_with("SKYTALE_")));
    }
    // Mutations that still verify are astronomically unlikely; nothing changed the channel.
    assert!(accepted <= n / 100, "{accepted} mutated messages accepted");
    assert_eq!(bob.epoch(ch).unwrap(), epoch);
    let fresh = alice.encrypt(ch, b"still works").unwrap();
    assert!(matches!(bob.process_incoming(ch, &fresh).unwrap(), skytale_core::Incoming::Message { .. }));
}

#[test]
fn fuzz_policy_decoding_and_commit_checks_survive_garbage() {
    use skytale_core::policy::*;
    let mut policy = ChannelPolicy::for_creator("alice", Rules::default());
    let invite = skytale_core::invite::InviteToken::generate("acme/a/b", "");
    policy.invites.insert(
        invite.id_hex(),
        InviteEntry {
            public_key: b64(&invite.public_key()),
            expires_at: 10_000,
            max_uses: 2,
            created_by: "alice".into(),
            revoked: false,
            used: vec![],
        },
    );
    let proofs = CommitProofs {
        external: Some(ExternalProof { id: invite.id_hex(), sig: b64(&invite.sign_external_join("eve", 3)) }),
        admit: vec![],
    };
    let corpus = vec![policy.encode().unwrap(), proofs.to_aad().unwrap(), br#"{"roles":{"a":"admin"}}"#.to_vec()];
    let mut rng = rng();
    for i in 0..iters(20_000) {
        let input = mutate(&mut rng, &corpus[(i as usize) % corpus.len()], &corpus);
        let decoded = ChannelPolicy::decode(&input);
        if let Err(e) = &decoded {
            assert_eq!(e.code(), "SKYTALE_INVALID_MESSAGE");
        }
        let facts = CommitFacts {
            channel: "acme/a/b",
            committer: "eve",
            external: i % 2 == 0,
            resync: false,
            from_epoch: 3,
            at: 1,
            added: vec![("eve".into(), vec![1; 32])],
            removed: vec![],
            members_after: vec!["alice".into(), "eve".into()],
            aad: &input,
        };
        // A mutated proof never admits; a mutated policy after the commit never passes for a
        // member without roles.
        if let Err(e) = check_commit(Some(&policy), Some(&policy), &facts) {
            assert!(e.code().starts_with("SKYTALE_"));
        } else {
            assert!(facts.external && CommitProofs::from_aad(&input) == proofs, "a mutated proof was accepted");
        }
        if let Ok(p) = decoded {
            let member = CommitFacts { external: false, added: vec![], aad: b"", ..facts };
            if p.roles != policy.roles || p.rules != policy.rules {
                assert!(check_commit(Some(&policy), Some(&p), &member).is_err(), "a member changed the policy");
            }
        }
    }
}

#[test]
fn fuzz_credential_verification_survives_garbage() {
    let anchors = TrustAnchors {
        org: "acme".into(),
        keys: vec![IssuerKey { kid: "k".into(), x: "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo".into() }],
    };
    let seed_cred =
        b"eyJhbGciOiJFZERTQSIsInR5cCI6InNreXRhbGUtYWdlbnQrand0In0.eyJpZGVudGl0eSI6ImJvYiIsIm9yZyI6ImFjbWUifQ.AAAA"
            .to_vec();
    let corpus = vec![seed_cred.clone(), b"a.b.c".to_vec(), vec![0xff; 40]];
    let mut rng = rng();
    for i in 0..iters(20_000) {
        let input = mutate(&mut rng, &corpus[(i as usize) % corpus.len()], &corpus);
        let exp = Expected { org: "acme", identity: Some("bob"), signature_key: &[0u8; 32], now: Some(1) };
        let e = verify_credential(&input, &anchors, exp, &[]).unwrap_err();
        assert_eq!(e.code(), "SKYTALE_CREDENTIAL_INVALID");
        let _ = skytale_core::credential_identity_unverified(&input);
    }
}

#[test]
fn fuzz_a_corrupted_keystore_gives_a_coded_error_never_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("base");
    {
        let a = Agent::open(AgentOptions { data_dir: &base, identity: "alice", secret: &key(7) }).unwrap();
        a.create_channel("acme/fuzz/store").unwrap();
    }
    let files: Vec<_> = std::fs::read_dir(&base).unwrap().map(|e| e.unwrap().path()).filter(|p| p.is_file()).collect();
    let originals: Vec<Vec<u8>> = files.iter().map(|p| std::fs::read(p).unwrap()).collect();
    let mut rng = rng();
    for i in 0..iters(60) {
        let case = dir.path().join(format!("case{i}"));
        std::fs::create_dir_all(&case).unwrap();
        let victim = rng.gen_range(0..files.len());
        for (j, (p, bytes)) in files.iter().zip(&originals).enumerate() {
            let data = if j == victim { mutate(&mut rng, bytes, &originals) } else { bytes.clone() };
            std::fs::write(case.join(p.file_name().unwrap()), data).unwrap();
        }
        match Agent::open(AgentOptions { data_dir: &case, identity: "alice", secret: &key(7) }) {
            Ok(a) => {
                // It opened (the damage hit unused bytes): reads still answer with values or codes.
                let _ = a.channel_names().map_err(|e| assert!(e.code().starts_with("SKYTALE_")));
                let _ = a.epoch("acme/fuzz/store").map_err(|e| assert!(e.code().starts_with("SKYTALE_")));
            }
            Err(e) => assert!(
                matches!(
                    e.code(),
                    "SKYTALE_KEYSTORE_CORRUPT"
                        | "SKYTALE_KEYSTORE_WRONG_KEY"
                        | "SKYTALE_KEYSTORE_LOCKED"
                        | "SKYTALE_STORAGE"
                ),
                "{e:?}"
            ),
        }
        std::fs::remove_dir_all(&case).unwrap();
    }
}
