//! Fuzzing of every relay request handler (seeded, stable Rust): an authenticated connection
//! sends structurally random requests of every kind — random channel names (own, another
//! member's, another org's, malformed), epochs, ids, payload sizes, invite fields, key packages —
//! to the real relay binary. Every request must be answered (a reply or a coded error, or a
//! coded close for a fatal one), the relay must stay up, and a channel used by honest members
//! alongside must keep its order and contents.
//! `FUZZ_ITERS=1000000 cargo test --release -p skytale-relay --test fuzz -- --nocapture` for a long run.

mod common;

use std::time::{Duration, Instant};

use common::*;
use skytale_proto::frames::*;
use skytale_proto::ProtoError;

const T: Duration = Duration::from_secs(10);

/// xorshift64*: a tiny seeded generator.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
    fn bytes(&mut self, max: usize) -> Vec<u8> {
        let n = self.below(max + 1);
        (0..n).map(|_| self.next() as u8).collect()
    }
    fn string(&mut self) -> String {
        match self.below(6) {
            0 => String::new(),
            1 => "x".repeat(self.below(300)),
            2 => String::from_utf8_lossy(&self.bytes(40)).into_owned(),
            3 => format!("id-{}", self.next() % 1000),
            4 => "ünïcödé/..//\u{0}".into(),
            _ => self.bytes(16).iter().map(|b| format!("{b:02x}")).collect(),
        }
    }
    fn epoch(&mut self) -> u64 {
        match self.below(4) {
            0 => 0,
            1 => self.next() % 4,
            2 => u64::MAX,
            _ => self.next(),
        }
    }
}

fn channel(rng: &mut Rng) -> String {
    match rng.below(6) {
        0 => "acme/fuzz/honest".into(),
        1 => "acme/fuzz/mine".into(),
        2 => "other/fuzz/theirs".into(),
        3 => format!("acme/fuzz/c{}", rng.below(20)),
        4 => rng.string(),
        _ => "ACME/Bad Name/!".into(),
    }
}

/// A random client request (every kind but `Auth`, which is fuzzed separately).
fn request(rng: &mut Rng) -> Body {
    match rng.below(17) {
        0 => Body::Ping(Ping {}),
        1 => Body::CreateChannel(CreateChannel { channel: channel(rng) }),
        2 => Body::Subscribe(Subscribe { channel: channel(rng), after_seq: rng.epoch() }),
        3 => Body::Unsubscribe(Unsubscribe { channel: channel(rng) }),
        4 => Body::Send(Send {
            channel: channel(rng),
            client_msg_id: rng.string(),
            kind: rng.below(6) as i32 - 1,
            epoch: rng.epoch(),
            payload: rng.bytes(4096),
            invite_id: if rng.below(3) == 0 { rng.string() } else { String::new() },
            invite_auth: if rng.below(3) == 0 { rng.bytes(64) } else { vec![] },
        }),
        5 => Body::Commit(Commit {
            channel: channel(rng),
            client_msg_id: rng.string(),
            epoch: rng.epoch(),
            payload: rng.bytes(2048),
            welcome: (rng.below(2) == 0).then(|| WelcomeOut {
                recipients: (0..rng.below(40)).map(|_| rng.string()).collect(),
                payload: rng.bytes(4096),
            }),
            added: (0..rng.below(5)).map(|_| rng.string()).collect(),
            removed: (0..rng.below(3)).map(|_| rng.string()).collect(),
            invite_id: if rng.below(3) == 0 { rng.string() } else { String::new() },
        }),
        6 => Body::Fetch(Fetch { channel: channel(rng), after_seq: rng.epoch(), limit: rng.next() as u32 }),
        7 => Body::PublishKeyPackages(PublishKeyPackages {
            key_packages: (0..rng.below(8)).map(|_| rng.bytes(512)).collect(),
        }),
        8 => Body::ClaimKeyPackage(ClaimKeyPackage { identity: rng.string() }),
        9 => Body::FetchWelcomes(FetchWelcomes {}),
        10 => Body::AckWelcome(AckWelcome { welcome_id: rng.epoch() }),
        11 => Body::CountKeyPackages(CountKeyPackages {}),
        12 => Body::ChannelState(ChannelState { channel: channel(rng) }),
        13 => Body::CreateInvite(CreateInvite {
            channel: channel(rng),
            invite_id: rng.string(),
            invite_auth: rng.bytes(80),
            max_uses: rng.next() as u32,
            expires_at: rng.epoch(),
            group_info: rng.bytes(2048),
        }),
        14 => Body::UpdateInvite(UpdateInvite { invite_id: rng.string(), group_info: rng.bytes(2048) }),
        15 => Body::RevokeInvite(RevokeInvite { invite_id: rng.string() }),
        _ => Body::FetchInvite(FetchInvite {
            channel: channel(rng),
            invite_id: rng.string(),
            invite_auth: rng.bytes(64),
        }),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fuzz_every_request_handler_answers_random_requests_and_the_relay_stays_up() {
    let iters: u64 = std::env::var("FUZZ_ITERS").ok().and_then(|v| v.parse().ok()).unwrap_or(1_500);
    let seed: u64 = std::env::var("FUZZ_SEED").ok().and_then(|v| v.parse().ok()).unwrap_or(0x5eed_f00d);
    let key = Keypair::generate();
    let relay = RelayProc::start("fuzz", &key, &[("SKYTALE_RELAY_FRAMES_PER_SECOND", "1000000")]);
    // Honest members use a channel alongside.
    let (alice, _pa) = relay.authed(&key, "acme", "alice").await;
    let (bob, mut pb) = relay.authed(&key, "acme", "bob").await;
    alice.create_channel("acme/fuzz/honest").await.unwrap();
    alice
        .commit(Commit {
            channel: "acme/fuzz/honest".into(),
            client_msg_id: "add-bob".into(),
            epoch: 0,
            payload: b"add".to_vec(),
            added: vec!["bob".into()],
            ..Default::default()
        })
        .await
        .unwrap();
    bob.subscribe("acme/fuzz/honest", 0).await.unwrap();
    // Bob reads his pushes as they come (a subscriber that stops reading is cut off by the
    // relay's per-connection push bound, which long runs would otherwise hit).
    // It also pings, as real clients do (a connection that sends nothing for the idle timeout,
    // 120 s, is closed: long runs last longer).
    let pinger = tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(10)).await;
            if bob.ping().await.is_err() {
                return;
            }
        }
    });
    let honest_count = iters.div_ceil(97);
    let reader = tokio::spawn(async move {
        let mut seen = Vec::new();
        while let Some(d) = next_deliver(&mut pb, Duration::from_secs(30)).await {
            if d.channel == "acme/fuzz/honest" && d.sender == "alice" && d.kind == Kind::Application as i32 {
                seen.push(String::from_utf8_lossy(&d.payload).into_owned());
            }
            if seen.len() as u64 == honest_count {
                break;
            }
        }
        seen
    });

    let mut rng = Rng(seed | 1);
    let (mut fz, mut _pf) = relay.authed(&key, "acme", "fuzzer").await;
    let (mut answered, mut refused, mut reconnects) = (0u64, 0u64, 0u64);
    let started = Instant::now();
    let mut last = String::new();
    for i in 0..iters {
        if i % 97 == 0 {
            // Honest traffic keeps flowing.
            alice
                .send("acme/fuzz/honest", &format!("h{i}"), Kind::Application, 1, format!("honest {i}").into_bytes())
                .await
                .unwrap();
        }
        let body = if rng.below(200) == 0 {
            Body::Auth(Auth { jwt: rng.string(), identity: rng.string() })
        } else {
            request(&mut rng)
        };
        let this = format!("{:?}", body).chars().take(300).collect::<String>();
        let outcome = tokio::time::timeout(T, fz.request(body.clone())).await;
        let prev = std::mem::replace(&mut last, this);
        let last = prev;
        match outcome {
            Ok(Ok(_)) => answered += 1,
            Ok(Err(ProtoError::Relay { code, .. })) => {
                assert!(code.starts_with("SKYTALE_"), "uncoded error {code} for {}", body.name());
                refused += 1;
            }
            Ok(Err(ProtoError::WrongEpoch { .. })) => refused += 1,
            Ok(Err(ProtoError::Closed { code })) => {
                // A fatal refusal closes the connection with a code; reconnect and go on.
                assert!(code.as_deref().map(|c| c.starts_with("SKYTALE_")).unwrap_or(true), "close code {code:?}");
                (fz, _pf) = relay.authed(&key, "acme", "fuzzer").await;
                reconnects += 1;
            }
            Ok(Err(ProtoError::Transport(_))) if last.starts_with("Auth(") => {
                // A refused re-authentication is fatal: the relay closed the connection after
                // answering it with a coded error. Reconnect and go on.
                (fz, _pf) = relay.authed(&key, "acme", "fuzzer").await;
                reconnects += 1;
            }
            Ok(Err(e)) => panic!("{} → {e:?} (after {last})", body.name()),
            Err(_) => panic!("no answer to {} within {T:?} (iteration {i}, seed {seed})", body.name()),
        }
    }
    let elapsed = started.elapsed();
    // The relay is up and the honest channel kept its order.
    let (fresh, _p) = relay.authed(&key, "acme", "late").await;
    fresh.ping().await.unwrap();
    let seen = tokio::time::timeout(Duration::from_secs(60), reader).await.expect("bob's pushes end").unwrap();
    pinger.abort();
    let want: Vec<String> = (0..iters).step_by(97).map(|i| format!("honest {i}")).collect();
    assert_eq!(seen, want);
    println!(
        "relay fuzz: {iters} requests in {elapsed:?} ({:.0}/s): {answered} answered, {refused} refused, {reconnects} reconnects (seed {seed})",
        iters as f64 / elapsed.as_secs_f64()
    );
}
