//! Mutation fuzzing of the frame decoder (seeded, reproducible, stable Rust): real frames of every
//! request kind, mutated, must decode to a frame or a coded error — never panic.
//! `FUZZ_ITERS=1000000 cargo test --release -p skytale-proto --test fuzz` for a long run.

use skytale_proto::codec::{decode_frame, encode_frame};
use skytale_proto::frames::*;

/// xorshift64*: a tiny seeded generator (no extra dependency).
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
}

fn iters(default: u64) -> u64 {
    std::env::var("FUZZ_ITERS").ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn corpus() -> Vec<Vec<u8>> {
    let bodies = vec![
        Body::Auth(Auth { jwt: "a.b.c".into(), identity: "alice".into() }),
        Body::Send(Send {
            channel: "acme/a/b".into(),
            client_msg_id: "m1".into(),
            kind: Kind::Application as i32,
            epoch: 3,
            payload: vec![1; 300],
            invite_id: String::new(),
            invite_auth: vec![],
        }),
        Body::Commit(Commit {
            channel: "acme/a/b".into(),
            client_msg_id: "c1".into(),
            epoch: 4,
            payload: vec![2; 200],
            welcome: Some(WelcomeOut { recipients: vec!["bob".into(), "carol".into()], payload: vec![3; 100] }),
            ..Default::default()
        }),
        Body::Subscribe(Subscribe { channel: "acme/a/b".into(), after_seq: 9 }),
        Body::Fetch(Fetch { channel: "acme/a/b".into(), after_seq: 1, limit: 10 }),
        Body::ClaimKeyPackage(ClaimKeyPackage { identity: "bob".into() }),
        Body::PublishKeyPackages(PublishKeyPackages { key_packages: vec![vec![4; 50], vec![5; 60]] }),
    ];
    bodies
        .into_iter()
        .enumerate()
        .map(|(i, b)| encode_frame(&Frame::new(i as u64 + 1, b), 1 << 20).map(|f| f[4..].to_vec()).unwrap_or_default())
        .collect()
}

#[test]
fn fuzz_the_frame_decoder_never_panics() {
    let corpus = corpus();
    for f in &corpus {
        assert!(decode_frame(f).is_ok());
    }
    let mut rng = Rng(0x5eed_f00d);
    for i in 0..iters(50_000) {
        let mut v = corpus[i as usize % corpus.len()].clone();
        for _ in 0..=rng.below(4) {
            match rng.below(4) {
                0 if !v.is_empty() => {
                    let at = rng.below(v.len());
                    v[at] ^= 1 << rng.below(8);
                }
                1 if !v.is_empty() => {
                    let at = rng.below(v.len());
                    v[at] = rng.next() as u8;
                }
                2 => {
                    let n = rng.below(v.len() + 1);
                    v.truncate(n);
                }
                _ => {
                    let at = rng.below(v.len() + 1);
                    let extra: Vec<u8> = (0..rng.below(16) + 1).map(|_| rng.next() as u8).collect();
                    v.splice(at..at, extra);
                }
            }
        }
        if let Err(e) = decode_frame(&v) {
            assert!(e.code().starts_with("SKYTALE_"), "uncoded {e:?}");
        }
    }
}
