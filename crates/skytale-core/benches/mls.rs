//! MLS benchmarks: raw openmls (in-memory provider, no persistence; the floor) and
//! skytale-core's `Agent` (same openmls, every operation persisted to SQLCipher).
//!
//! A small custom harness (`harness = false`) so that the runs stay bounded (group setups
//! of 1000 members take seconds) and the results come out as JSON for `npm run bench`.
//!
//! ```text
//! cargo bench -p skytale-core --bench mls                  # table on stderr
//! cargo bench -p skytale-core --bench mls -- --json F      # also write JSON to F
//! cargo bench -p skytale-core --bench mls -- --quick       # fewer iterations
//! cargo bench -p skytale-core --bench mls -- --only core   # only one implementation
//! cargo bench -p skytale-core --bench mls -- --filter add1  # only cases containing "add1"
//! ```
//!
//! Cases (the same in tests/bench/mls.bench.mjs):
//! - `msg/<size>`: one application message, encrypt by A + decrypt by B (group of 2).
//! - `batch64/<size>`: the same per message, for 64 messages at a time (the core's batch calls:
//!   one keystore transaction for the 64 on each side; raw openmls simply loops).
//! - `add1/<n>`: add one member to a group of n (commit + Welcome serialized, commit merged).
//!   After each timed add the new member is removed again (not timed), so every iteration
//!   starts from a group of n.
//! - `create/<n>`: create a group and add n-1 members in a single commit (merged).
//! - `openmls-nopath`: raw openmls `add1`/`create` with `add_members_without_update` (no
//!   UpdatePath: no HPKE encryption to the copath resolutions, which in a group built by one
//!   big add commit are almost all leaves).
//!
//! Key packages for the members added are generated outside the timed part, from in-memory
//! openmls identities (standard MLS KeyPackage messages), also for the `Agent`: only the
//! adder's cost is measured, and opening 1000 SQLCipher keystores is not what is measured.

use std::time::{Duration, Instant};

use openmls::prelude::tls_codec::{DeserializeBytes, Serialize as _};
use openmls::prelude::*;
use openmls_basic_credential::SignatureKeyPair;
use openmls_rust_crypto::OpenMlsRustCrypto;
use skytale_core::{Agent, AgentOptions, CommitMode, Incoming, KeystoreSecret, SecretKey32, CIPHERSUITE};

const CS: Ciphersuite = Ciphersuite::MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519;

// ---------------------------------------------------------------------------------------------
// Harness

#[derive(Clone, Copy)]
struct Budget {
    /// Minimum wall time spent on timed iterations.
    time: Duration,
    min_iters: usize,
    max_iters: usize,
}

struct Sample {
    implementation: &'static str,
    case: String,
    times: Vec<Duration>,
}

impl Sample {
    fn mean_ms(&self) -> f64 {
        self.times.iter().map(|d| d.as_secs_f64()).sum::<f64>() * 1e3 / self.times.len() as f64
    }
    fn median_ms(&self) -> f64 {
        let mut v: Vec<f64> = self.times.iter().map(|d| d.as_secs_f64() * 1e3).collect();
        v.sort_by(|a, b| a.partial_cmp(b).unwrap());
        let n = v.len();
        if n % 2 == 1 {
            v[n / 2]
        } else {
            (v[n / 2 - 1] + v[n / 2]) / 2.0
        }
    }
    fn min_ms(&self) -> f64 {
        self.times.iter().map(|d| d.as_secs_f64() * 1e3).fold(f64::INFINITY, f64::min)
    }
}

/// Runs `iter` (which times its own measured part and returns it) within the budget.
fn run(implementation: &'static str, case: String, budget: Budget, mut iter: impl FnMut() -> Duration) -> Sample {
    // One warm-up iteration.
    let _ = iter();
    let start = Instant::now();
    let mut times = Vec::new();
    while times.len() < budget.max_iters && (times.len() < budget.min_iters || start.elapsed() < budget.time) {
        times.push(iter());
    }
    let s = Sample { implementation, case, times };
    eprintln!(
        "{:<8} {:<14} mean {:>10.4} ms  median {:>10.4} ms  min {:>10.4} ms  ({} iters)",
        s.implementation,
        s.case,
        s.mean_ms(),
        s.median_ms(),
        s.min_ms(),
        s.times.len()
    );
    s
}

fn timed<T>(f: impl FnOnce() -> T) -> (T, Duration) {
    let t = Instant::now();
    let v = f();
    (v, t.elapsed())
}

// ---------------------------------------------------------------------------------------------
// Shared setup

fn join_config() -> MlsGroupJoinConfig {
    MlsGroupJoinConfig::builder()
        .use_ratchet_tree_extension(true)
        .wire_format_policy(MIXED_CIPHERTEXT_WIRE_FORMAT_POLICY)
        .max_past_epochs(3)
        .sender_ratchet_configuration(SenderRatchetConfiguration::new(32, 10_000))
        .build()
}

fn create_config() -> MlsGroupCreateConfig {
    MlsGroupCreateConfig::builder()
        .ciphersuite(CS)
        .use_ratchet_tree_extension(true)
        .wire_format_policy(MIXED_CIPHERTEXT_WIRE_FORMAT_POLICY)
        .max_past_epochs(3)
        .sender_ratchet_configuration(SenderRatchetConfiguration::new(32, 10_000))
        .build()
}

/// An in-memory openmls member (its own provider, signer and credential).
struct RawMember {
    provider: OpenMlsRustCrypto,
    signer: SignatureKeyPair,
    credential: CredentialWithKey,
}

impl RawMember {
    fn new(identity: &str) -> RawMember {
        let provider = OpenMlsRustCrypto::default();
        let signer = SignatureKeyPair::new(CS.signature_algorithm()).unwrap();
        let credential = CredentialWithKey {
            credential: BasicCredential::new(identity.as_bytes().to_vec()).into(),
            signature_key: signer.public().into(),
        };
        RawMember { provider, signer, credential }
    }

    fn key_package(&self) -> KeyPackage {
        // The capability Skytale channels require (their policy extension); raw groups ignore it.
        let policy = ExtensionType::Unknown(skytale_core::policy::POLICY_EXTENSION_TYPE);
        KeyPackage::builder()
            .leaf_node_capabilities(Capabilities::builder().extensions(vec![policy]).build())
            .build(CS, &self.provider, &self.signer, self.credential.clone())
            .unwrap()
            .key_package()
            .clone()
    }
}

/// `count` sets of key packages; each set holds one key package of each of `n` distinct
/// identities named `<prefix>-<i>` (one in-memory provider per identity).
fn key_package_sets(prefix: &str, n: usize, count: usize) -> Vec<Vec<KeyPackage>> {
    let members: Vec<RawMember> = (0..n).map(|i| RawMember::new(&format!("{prefix}-{i}"))).collect();
    (0..count).map(|_| members.iter().map(|m| m.key_package()).collect()).collect()
}

fn to_wire(kp: &KeyPackage) -> Vec<u8> {
    MlsMessageOut::from(kp.clone()).tls_serialize_detached().unwrap()
}

// ---------------------------------------------------------------------------------------------
// Raw openmls

fn raw_group(creator: &RawMember, name: &str) -> MlsGroup {
    MlsGroup::new_with_group_id(
        &creator.provider,
        &creator.signer,
        &create_config(),
        GroupId::from_slice(name.as_bytes()),
        creator.credential.clone(),
    )
    .unwrap()
}

fn raw_add(group: &mut MlsGroup, adder: &RawMember, kps: &[KeyPackage]) -> (Vec<u8>, Vec<u8>) {
    raw_add_with(group, adder, kps, true)
}

/// `path = false`: `add_members_without_update` (no UpdatePath in the commit; RFC 9420 allows
/// that for add-only commits). Measured as a variant only: skytale-core uses `add_members`.
fn raw_add_with(group: &mut MlsGroup, adder: &RawMember, kps: &[KeyPackage], path: bool) -> (Vec<u8>, Vec<u8>) {
    let (commit, welcome, _) = if path {
        group.add_members(&adder.provider, &adder.signer, kps).unwrap()
    } else {
        group.add_members_without_update(&adder.provider, &adder.signer, kps).unwrap()
    };
    group.merge_pending_commit(&adder.provider).unwrap();
    (commit.tls_serialize_detached().unwrap(), welcome.tls_serialize_detached().unwrap())
}

fn raw_msg(size: usize, budget: Budget) -> Sample {
    let alice = RawMember::new("alice");
    let bob = RawMember::new("bob");
    let mut ga = raw_group(&alice, "bench/raw/msg");
    let bob_kp = bob.key_package();
    let (_, welcome) = raw_add(&mut ga, &alice, &[bob_kp]);
    let welcome = match MlsMessageIn::tls_deserialize_exact_bytes(&welcome).unwrap().extract() {
        MlsMessageBodyIn::Welcome(w) => w,
        _ => unreachable!(),
    };
    let mut gb = StagedWelcome::new_from_welcome(&bob.provider, &join_config(), welcome, None)
        .unwrap()
        .into_group(&bob.provider)
        .unwrap();
    let data = vec![0x5a; size];
    run("openmls", format!("msg/{}", size_name(size)), budget, || {
        timed(|| {
            let out = ga.create_message(&alice.provider, &alice.signer, &data).unwrap();
            let wire = out.tls_serialize_detached().unwrap();
            let msg = MlsMessageIn::tls_deserialize_exact_bytes(&wire).unwrap();
            let pm = msg.try_into_protocol_message().unwrap();
            let processed = gb.process_message(&bob.provider, pm).unwrap();
            match processed.into_content() {
                ProcessedMessageContent::ApplicationMessage(app) => assert_eq!(app.into_bytes().len(), size),
                _ => unreachable!(),
            }
        })
        .1
    })
}

/// Messages per iteration of the `batch64` cases.
const BATCH: usize = 64;

fn raw_batch(size: usize, budget: Budget) -> Sample {
    let alice = RawMember::new("alice");
    let bob = RawMember::new("bob");
    let mut ga = raw_group(&alice, "bench/raw/batch");
    let (_, welcome) = raw_add(&mut ga, &alice, &[bob.key_package()]);
    let welcome = match MlsMessageIn::tls_deserialize_exact_bytes(&welcome).unwrap().extract() {
        MlsMessageBodyIn::Welcome(w) => w,
        _ => unreachable!(),
    };
    let mut gb = StagedWelcome::new_from_welcome(&bob.provider, &join_config(), welcome, None)
        .unwrap()
        .into_group(&bob.provider)
        .unwrap();
    let data = vec![0x5a; size];
    run("openmls", format!("batch{BATCH}/{}", size_name(size)), budget, || {
        let t = timed(|| {
            let wires: Vec<Vec<u8>> = (0..BATCH)
                .map(|_| {
                    ga.create_message(&alice.provider, &alice.signer, &data).unwrap().tls_serialize_detached().unwrap()
                })
                .collect();
            for wire in wires {
                let pm = MlsMessageIn::tls_deserialize_exact_bytes(&wire).unwrap().try_into_protocol_message().unwrap();
                match gb.process_message(&bob.provider, pm).unwrap().into_content() {
                    ProcessedMessageContent::ApplicationMessage(app) => assert_eq!(app.into_bytes().len(), size),
                    _ => unreachable!(),
                }
            }
        })
        .1;
        t / BATCH as u32
    })
}

fn raw_add1(n: usize, iters: usize, budget: Budget, path: bool) -> Sample {
    let alice = RawMember::new("alice");
    let mut g = raw_group(&alice, "bench/raw/add1");
    if n > 1 {
        let kps = key_package_sets("m", n - 1, 1).remove(0);
        raw_add(&mut g, &alice, &kps);
    }
    // Fresh identities for the members added one by one.
    let extra: Vec<KeyPackage> = key_package_sets("x", iters + 1, 1).remove(0);
    let mut next = extra.into_iter();
    let imp = if path { "openmls" } else { "openmls-nopath" };
    run(imp, format!("add1/{n}"), budget, || {
        let kp = next.next().expect("enough key packages");
        let id = kp.leaf_node().credential().serialized_content().to_vec();
        let t = timed(|| raw_add_with(&mut g, &alice, &[kp], path)).1;
        // Not timed: remove the new member so the next iteration starts from n members.
        let leaf = g.members().find(|m| m.credential.serialized_content() == id.as_slice()).unwrap().index;
        g.remove_members(&alice.provider, &alice.signer, &[leaf]).unwrap();
        g.merge_pending_commit(&alice.provider).unwrap();
        assert_eq!(g.members().count(), n);
        t
    })
}

fn raw_create(n: usize, iters: usize, budget: Budget, path: bool) -> Sample {
    let alice = RawMember::new("alice");
    let sets = key_package_sets("m", n - 1, 1);
    let kps = &sets[0];
    let mut i = 0;
    let _ = iters;
    let imp = if path { "openmls" } else { "openmls-nopath" };
    run(imp, format!("create/{n}"), budget, || {
        i += 1;
        let name = format!("bench/raw/create-{i}");
        timed(|| {
            let mut g = raw_group(&alice, &name);
            raw_add_with(&mut g, &alice, kps, path);
            g
        })
        .1
    })
}

// ---------------------------------------------------------------------------------------------
// skytale-core Agent (persisted)

fn open_agent(dir: &std::path::Path, id: &str) -> Agent {
    let secret = KeystoreSecret::Key(SecretKey32::from_bytes([7; 32]));
    Agent::open(AgentOptions { data_dir: dir, identity: id, secret: &secret }).unwrap()
}

fn core_msg(size: usize, budget: Budget) -> Sample {
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let alice = open_agent(da.path(), "alice");
    let bob = open_agent(db.path(), "bob");
    let ch = "bench/core/msg";
    alice.create_channel(ch).unwrap();
    let out = alice.add_members(ch, &bob.generate_key_packages(1).unwrap(), CommitMode::Merge).unwrap();
    bob.join_channel(out.welcome.as_deref().unwrap()).unwrap();
    let data = vec![0x5a; size];
    run("core", format!("msg/{}", size_name(size)), budget, || {
        timed(|| {
            let wire = alice.encrypt(ch, &data).unwrap();
            match bob.process_incoming(ch, &wire).unwrap() {
                Incoming::Message { data, .. } => assert_eq!(data.len(), size),
                other => panic!("unexpected {other:?}"),
            }
        })
        .1
    })
}

fn core_batch(size: usize, budget: Budget) -> Sample {
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let alice = open_agent(da.path(), "alice");
    let bob = open_agent(db.path(), "bob");
    let ch = "bench/core/batch";
    alice.create_channel(ch).unwrap();
    let out = alice.add_members(ch, &bob.generate_key_packages(1).unwrap(), CommitMode::Merge).unwrap();
    bob.join_channel(out.welcome.as_deref().unwrap()).unwrap();
    let data = vec![0x5a; size];
    let plaintexts: Vec<&[u8]> = (0..BATCH).map(|_| data.as_slice()).collect();
    run("core", format!("batch{BATCH}/{}", size_name(size)), budget, || {
        let t = timed(|| {
            let wires = alice.encrypt_all(ch, &plaintexts).unwrap();
            let wires: Vec<&[u8]> = wires.iter().map(Vec::as_slice).collect();
            for ev in bob.process_incoming_all(ch, &wires).unwrap() {
                match ev {
                    Incoming::Message { data, .. } => assert_eq!(data.len(), size),
                    other => panic!("unexpected {other:?}"),
                }
            }
        })
        .1;
        t / BATCH as u32
    })
}

fn core_add1(n: usize, iters: usize, budget: Budget) -> Sample {
    let da = tempfile::tempdir().unwrap();
    let alice = open_agent(da.path(), "alice");
    let ch = "bench/core/add1";
    alice.create_channel(ch).unwrap();
    if n > 1 {
        let kps: Vec<Vec<u8>> = key_package_sets("m", n - 1, 1).remove(0).iter().map(to_wire).collect();
        alice.add_members(ch, &kps, CommitMode::Merge).unwrap();
    }
    let extra: Vec<Vec<u8>> = key_package_sets("x", iters + 1, 1).remove(0).iter().map(to_wire).collect();
    let mut next = extra.into_iter();
    run("core", format!("add1/{n}"), budget, || {
        let kp = next.next().expect("enough key packages");
        let (out, t) = timed(|| alice.add_members(ch, std::slice::from_ref(&kp), CommitMode::Merge).unwrap());
        // Not timed: remove the new member so the next iteration starts from n members.
        alice.remove_members(ch, &out.added, CommitMode::Merge).unwrap();
        t
    })
}

fn core_create(n: usize, iters: usize, budget: Budget) -> Sample {
    let da = tempfile::tempdir().unwrap();
    let alice = open_agent(da.path(), "alice");
    // The agent refuses to use a key package twice: one fresh set per iteration (+ warm-up).
    let sets: Vec<Vec<Vec<u8>>> =
        key_package_sets("m", n - 1, iters + 1).into_iter().map(|set| set.iter().map(to_wire).collect()).collect();
    let mut next = sets.into_iter();
    let mut i = 0;
    run("core", format!("create/{n}"), budget, || {
        i += 1;
        let name = format!("bench/core/create-{i}");
        let kps = next.next().expect("enough key package sets");
        timed(|| {
            alice.create_channel(&name).unwrap();
            alice.add_members(&name, &kps, CommitMode::Merge).unwrap()
        })
        .1
    })
}

// ---------------------------------------------------------------------------------------------

fn size_name(size: usize) -> String {
    if size >= 1024 {
        format!("{}KiB", size / 1024)
    } else {
        format!("{size}B")
    }
}

fn json_escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}

fn main() {
    assert_eq!(CS, CIPHERSUITE);
    let args: Vec<String> = std::env::args().skip(1).collect();
    let quick = args.iter().any(|a| a == "--quick");
    let json_path = args.iter().position(|a| a == "--json").and_then(|i| args.get(i + 1)).cloned();
    let only = args.iter().position(|a| a == "--only").and_then(|i| args.get(i + 1)).cloned();
    let want = |imp: &str| only.as_deref().is_none_or(|o| o == imp);
    let filter = args.iter().position(|a| a == "--filter").and_then(|i| args.get(i + 1)).cloned();
    let case = |c: String| filter.as_deref().is_none_or(|f| c.contains(f));
    let max_n: usize = args
        .iter()
        .position(|a| a == "--max-members")
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);

    let scale = if quick { 0.25 } else { 1.0 };
    let msg_budget = Budget { time: Duration::from_secs_f64(2.0 * scale), min_iters: 20, max_iters: 20_000 };
    let add_iters = |n: usize| {
        if n >= 1000 {
            10
        } else if n >= 100 {
            30
        } else {
            100
        }
    };
    let create_iters = |n: usize| if n >= 1000 { 3 } else { 10 };
    let slow = |iters: usize| Budget {
        time: Duration::from_secs_f64(3.0 * scale),
        min_iters: if quick { iters.div_ceil(3).max(2) } else { iters },
        max_iters: iters,
    };

    let mut samples = Vec::new();
    let sizes = [64usize, 1024, 16 * 1024];
    let groups: Vec<usize> = [10usize, 100, 1000].into_iter().filter(|n| *n <= max_n).collect();
    let creates: Vec<usize> = [100usize, 1000].into_iter().filter(|n| *n <= max_n).collect();

    if want("openmls") {
        for &s in sizes.iter().filter(|s| case(format!("msg/{}", size_name(**s)))) {
            samples.push(raw_msg(s, msg_budget));
        }
        if case(format!("batch{BATCH}/64B")) {
            samples.push(raw_batch(64, msg_budget));
        }
        for &n in groups.iter().filter(|n| case(format!("add1/{n}"))) {
            samples.push(raw_add1(n, add_iters(n), slow(add_iters(n)), true));
        }
        for &n in creates.iter().filter(|n| case(format!("create/{n}"))) {
            samples.push(raw_create(n, create_iters(n), slow(create_iters(n)), true));
        }
    }
    if want("openmls-nopath") {
        for &n in groups.iter().filter(|n| case(format!("add1/{n}"))) {
            samples.push(raw_add1(n, add_iters(n), slow(add_iters(n)), false));
        }
        for &n in creates.iter().filter(|n| case(format!("create/{n}"))) {
            samples.push(raw_create(n, create_iters(n), slow(create_iters(n)), false));
        }
    }
    if want("core") {
        for &s in sizes.iter().filter(|s| case(format!("msg/{}", size_name(**s)))) {
            samples.push(core_msg(s, msg_budget));
        }
        if case(format!("batch{BATCH}/64B")) {
            samples.push(core_batch(64, msg_budget));
        }
        for &n in groups.iter().filter(|n| case(format!("add1/{n}"))) {
            samples.push(core_add1(n, add_iters(n), slow(add_iters(n))));
        }
        for &n in creates.iter().filter(|n| case(format!("create/{n}"))) {
            samples.push(core_create(n, create_iters(n), slow(create_iters(n))));
        }
    }

    if let Some(path) = json_path {
        let rows: Vec<String> = samples
            .iter()
            .map(|s| {
                format!(
                    "{{\"impl\":\"{}\",\"case\":\"{}\",\"mean_ms\":{},\"median_ms\":{},\"min_ms\":{},\"iters\":{}}}",
                    json_escape(s.implementation),
                    json_escape(&s.case),
                    s.mean_ms(),
                    s.median_ms(),
                    s.min_ms(),
                    s.times.len()
                )
            })
            .collect();
        let body = format!("{{\"openmls\":\"0.9.2\",\"results\":[\n{}\n]}}\n", rows.join(",\n"));
        std::fs::write(&path, body).expect("write JSON");
        eprintln!("wrote {path}");
    }
}
