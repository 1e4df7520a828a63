//! End-to-end tests of the relay binary over iroh (loopback), using `skytale_proto::conn`.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::*;
use skytale_proto::codec::encode_frame;
use skytale_proto::frames::{Body, Commit, Frame, Kind, Send, WelcomeOut};
use skytale_proto::ProtoError;

const T: Duration = Duration::from_secs(10);

fn code(e: &ProtoError) -> String {
    e.code().to_string()
}

async fn expect_auth_refused(relay: &RelayProc, jwt: &str, want: &str) {
    let (c, _p) = relay.connect().await;
    let err = c.auth(jwt, "agent").await.unwrap_err();
    assert_eq!(code(&err), want, "{err}");
    // the relay closes the connection with the code as reason
    let closed = tokio::time::timeout(T, c.closed()).await.unwrap();
    assert_eq!(closed.as_deref(), Some(want));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_rejections_have_clear_codes() {
    let key = Keypair::generate();
    let relay = RelayProc::start("auth", &key, &[("SKYTALE_RELAY_AUTH_TIMEOUT_MS", "700")]);

    // valid token works
    let (c, _p) = relay.connect().await;
    let ok = c.auth(&key.token("acme", "agent-a"), "").await.unwrap();
    assert_eq!((ok.org.as_str(), ok.identity.as_str()), ("acme", "agent-a"));
    assert_eq!(ok.max_frame_size as usize, skytale_proto::DEFAULT_MAX_FRAME_SIZE);
    c.ping().await.unwrap();

    // signed by another key
    let other = Keypair::generate();
    expect_auth_refused(&relay, &other.token("acme", "a"), "SKYTALE_AUTH_INVALID").await;
    // expired
    expect_auth_refused(&relay, &key.sign(&claims("acme", "a", -3600)), "SKYTALE_AUTH_EXPIRED").await;
    // wrong audience
    let mut cl = claims("acme", "a", 3600);
    cl["aud"] = "someone-else".into();
    expect_auth_refused(&relay, &key.sign(&cl), "SKYTALE_AUTH_INVALID").await;
    // wrong issuer
    let mut cl = claims("acme", "a", 3600);
    cl["iss"] = "evil".into();
    expect_auth_refused(&relay, &key.sign(&cl), "SKYTALE_AUTH_INVALID").await;
    // alg: none
    let none = format!(
        "{}.{}.",
        b64url(br#"{"alg":"none","typ":"JWT"}"#),
        b64url(claims("acme", "a", 3600).to_string().as_bytes())
    );
    expect_auth_refused(&relay, &none, "SKYTALE_AUTH_INVALID").await;
    // garbage
    expect_auth_refused(&relay, "not-a-jwt", "SKYTALE_AUTH_INVALID").await;

    // a request before Auth
    let (c, _p) = relay.connect().await;
    let err = c.ping().await.unwrap_err();
    assert_eq!(code(&err), "SKYTALE_AUTH_REQUIRED");

    // no Auth frame within the timeout (stream opened, nothing sent)
    let (c, mut p) = relay.connect().await;
    c.send_raw(&[]).await.unwrap();
    let f = next_push(&mut p, T).await;
    let closed = tokio::time::timeout(T, c.closed()).await.unwrap();
    assert_eq!(closed.as_deref(), Some("SKYTALE_AUTH_TIMEOUT"), "push: {f:?}");

    // metrics count the failures
    let (status, metrics) = relay.http_get("/metrics");
    assert_eq!(status, 200);
    let failures: u64 = metrics
        .lines()
        .find(|l| l.starts_with("skytale_relay_auth_failures_total "))
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap()
        .parse()
        .unwrap();
    assert!(failures >= 8, "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn org_b_cannot_touch_org_a_channels() {
    let key = Keypair::generate();
    let relay = RelayProc::start("org", &key, &[]);
    let (a, _pa) = relay.authed(&key, "acme", "alice").await;
    a.create_channel("acme/team/chat").await.unwrap();
    let (b, _pb) = relay.authed(&key, "globex", "mallory").await;
    let e = b.subscribe("acme/team/chat", 0).await.unwrap_err();
    assert_eq!(code(&e), "SKYTALE_FORBIDDEN_CHANNEL");
    let e = b.send("acme/team/chat", "m1", Kind::Application, 0, b"x".to_vec()).await.unwrap_err();
    assert_eq!(code(&e), "SKYTALE_FORBIDDEN_CHANNEL");
    let e = b
        .commit(Commit { channel: "acme/team/chat".into(), epoch: 0, payload: b"c".to_vec(), ..Default::default() })
        .await
        .unwrap_err();
    assert_eq!(code(&e), "SKYTALE_FORBIDDEN_CHANNEL");
    let e = b.fetch("acme/team/chat", 0, 10).await.unwrap_err();
    assert_eq!(code(&e), "SKYTALE_FORBIDDEN_CHANNEL");
    let e = b.create_channel("acme/x/y").await.unwrap_err();
    assert_eq!(code(&e), "SKYTALE_FORBIDDEN_CHANNEL");
    let e = b.subscribe("Bad Name", 0).await.unwrap_err();
    assert_eq!(code(&e), "SKYTALE_INVALID_REQUEST");
    // non-fatal: the connection still works for its own org
    b.create_channel("globex/x/y").await.unwrap();
    // key packages are org-scoped
    a.publish_key_packages(vec![b"kp".to_vec()]).await.unwrap();
    let e = b.claim_key_package("alice").await.unwrap_err();
    assert_eq!(code(&e), "SKYTALE_KEY_PACKAGE_NOT_FOUND");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversize_frame_is_refused() {
    let key = Keypair::generate();
    let relay = RelayProc::start("size", &key, &[("SKYTALE_RELAY_MAX_FRAME_BYTES", "4096")]);
    let (a, mut p) = relay.authed(&key, "acme", "alice").await;
    a.create_channel("acme/a/b").await.unwrap();
    // just under the cap is fine
    a.send("acme/a/b", "ok", Kind::Application, 0, vec![7u8; 3900]).await.unwrap();
    let big = Frame::new(
        99,
        Body::Send(Send {
            channel: "acme/a/b".into(),
            client_msg_id: "big".into(),
            kind: Kind::Application as i32,
            epoch: 0,
            payload: vec![1u8; 8192],
            ..Default::default()
        }),
    );
    a.send_raw(&encode_frame(&big, usize::MAX).unwrap()).await.unwrap();
    let f = next_push(&mut p, T).await.expect("error frame");
    match f.body {
        Some(Body::Error(e)) => {
            assert_eq!(e.code, "SKYTALE_FRAME_TOO_LARGE");
            assert!(e.fatal);
        }
        other => panic!("unexpected {other:?}"),
    }
    let closed = tokio::time::timeout(T, a.closed()).await.unwrap();
    assert_eq!(closed.as_deref(), Some("SKYTALE_FRAME_TOO_LARGE"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ordered_exactly_once_never_echoed() {
    let key = Keypair::generate();
    let relay = RelayProc::start("order", &key, &[]);
    let ch = "acme/team/chat";
    let (a, mut pa) = relay.authed(&key, "acme", "alice").await;
    let (b, mut pb) = relay.authed(&key, "acme", "bob").await;
    let epoch = create_with_members(&a, ch, &["bob"]).await;
    a.subscribe(ch, 0).await.unwrap();
    b.subscribe(ch, 0).await.unwrap();
    let mut acks = Vec::new();
    for i in 0..50u32 {
        let ack =
            a.send(ch, &format!("m{i}"), Kind::Application, epoch, format!("payload-{i}").into_bytes()).await.unwrap();
        assert!(!ack.duplicate);
        acks.push(ack.seq);
    }
    assert!(acks.windows(2).all(|w| w[1] == w[0] + 1), "{acks:?}");
    // a retry with the same client_msg_id is acked with the original seq and not re-delivered
    let dup = a.send(ch, "m7", Kind::Application, epoch, b"payload-7".to_vec()).await.unwrap();
    assert!(dup.duplicate);
    assert_eq!(dup.seq, acks[7]);
    for (i, seq) in acks.iter().enumerate() {
        let d = next_deliver(&mut pb, T).await.expect("delivery");
        assert_eq!(d.seq, *seq);
        assert_eq!(d.payload, format!("payload-{i}").into_bytes());
        assert_eq!(d.sender, "alice");
        assert_eq!(d.kind, Kind::Application as i32);
    }
    // bob answers; alice gets exactly that, never her own
    b.send(ch, "r1", Kind::Application, epoch, b"reply".to_vec()).await.unwrap();
    let d = next_deliver(&mut pa, T).await.unwrap();
    assert_eq!((d.sender.as_str(), d.payload.as_slice()), ("bob", &b"reply"[..]));
    assert!(next_deliver(&mut pa, Duration::from_millis(300)).await.is_none());
    assert!(next_deliver(&mut pb, Duration::from_millis(300)).await.is_none());
    // wrong epoch for an application message
    let e = a.send(ch, "old", Kind::Application, 5, b"x".to_vec()).await.unwrap_err();
    assert!(matches!(e, ProtoError::WrongEpoch { current_epoch: 1, .. }), "{e}");
    // unknown channel
    let e = a.send("acme/no/such", "z", Kind::Application, 0, b"x".to_vec()).await.unwrap_err();
    assert_eq!(code(&e), "SKYTALE_CHANNEL_NOT_FOUND");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn archive_replay_and_fetch() {
    let key = Keypair::generate();
    let relay = RelayProc::start("replay", &key, &[]);
    let ch = "acme/ops/log";
    let (a, _pa) = relay.authed(&key, "acme", "alice").await;
    // carol and dave are members from the start (the adding commit is seq 1)
    let epoch = create_with_members(&a, ch, &["carol", "dave"]).await;
    for i in 2..=11u32 {
        a.send(ch, &format!("m{i}"), Kind::Application, epoch, vec![i as u8]).await.unwrap();
    }
    // late subscriber from 0 gets everything after its addition, then live
    let (c, mut pc) = relay.authed(&key, "acme", "carol").await;
    let info = c.subscribe(ch, 0).await.unwrap();
    assert_eq!(info.last_seq, 11);
    a.send(ch, "m12", Kind::Application, epoch, vec![12]).await.unwrap();
    for seq in 2..=12u64 {
        assert_eq!(next_deliver(&mut pc, T).await.unwrap().seq, seq);
    }
    // resume after seq 5
    let (d, mut pd) = relay.authed(&key, "acme", "dave").await;
    d.subscribe(ch, 5).await.unwrap();
    for seq in 6..=12u64 {
        let m = next_deliver(&mut pd, T).await.unwrap();
        assert_eq!((m.seq, m.payload[0] as u64), (seq, seq));
    }
    assert!(next_deliver(&mut pd, Duration::from_millis(300)).await.is_none());
    // fetch in pages
    let (items, done) = d.fetch(ch, 2, 3).await.unwrap();
    assert_eq!(items.iter().map(|i| i.seq).collect::<Vec<_>>(), vec![3, 4, 5]);
    assert!(done.more);
    assert_eq!(done.last_seq, 5);
    let (items, done) = d.fetch(ch, 5, 100).await.unwrap();
    assert_eq!(items.len(), 7);
    assert!(!done.more);
    assert_eq!(done.last_seq, 12);
    // the sender's own items are not fetched back
    let (items, done) = a.fetch(ch, 0, 100).await.unwrap();
    assert!(items.is_empty());
    assert_eq!(done.last_seq, 12);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commits_first_wins_then_nack() {
    let key = Keypair::generate();
    let relay = RelayProc::start("commit", &key, &[]);
    let ch = "acme/team/plan";
    let (a, _pa) = relay.authed(&key, "acme", "alice").await;
    let (b, _pb) = relay.authed(&key, "acme", "bob").await;
    let (w, mut pw) = relay.authed(&key, "acme", "watcher").await;
    assert_eq!(create_with_members(&a, ch, &["bob", "watcher"]).await, 1);
    w.subscribe(ch, 0).await.unwrap();
    let mk = |id: &str, epoch: u64| Commit {
        channel: ch.into(),
        client_msg_id: id.into(),
        epoch,
        payload: id.as_bytes().to_vec(),
        welcome: None,
        ..Default::default()
    };
    let (ra, rb) = tokio::join!(a.commit(mk("ca", 1)), b.commit(mk("cb", 1)));
    let (winner, loser, ack, err) = match (ra, rb) {
        (Ok(ack), Err(e)) => (&a, &b, ack, e),
        (Err(e), Ok(ack)) => (&b, &a, ack, e),
        other => panic!("expected one ack and one nack, got {other:?}"),
    };
    assert_eq!((ack.seq, ack.epoch), (2, 2));
    match err {
        ProtoError::WrongEpoch { current_epoch, last_seq, .. } => assert_eq!((current_epoch, last_seq), (2, 2)),
        e => panic!("expected nack, got {e}"),
    }
    // the loser catches up and retries at the new epoch
    let (items, _) = loser.fetch(ch, 1, 10).await.unwrap();
    assert_eq!(items.len(), 1);
    assert_eq!(items[0].kind, Kind::Commit as i32);
    let loser_id = if std::ptr::eq(loser, &a) { "ca2" } else { "cb2" };
    let ack2 = loser.commit(mk(loser_id, 2)).await.unwrap();
    assert_eq!((ack2.seq, ack2.epoch), (3, 3));
    // resending the first commit after the epoch moved is a duplicate, not a nack
    let win_id = if std::ptr::eq(winner, &a) { "ca" } else { "cb" };
    let dup = winner.commit(mk(win_id, 1)).await.unwrap();
    assert!(dup.duplicate);
    assert_eq!((dup.seq, dup.epoch), (2, 2));
    // application message at epoch 3
    winner.send(ch, "hello", Kind::Application, 3, b"hi".to_vec()).await.unwrap();
    // the watcher (added by seq 1) sees commit(e1), commit(e2), message(e3) in seq order
    let seen: Vec<(u64, u64, i32)> = {
        let mut v = Vec::new();
        for _ in 0..3 {
            let d = next_deliver(&mut pw, T).await.unwrap();
            v.push((d.seq, d.epoch, d.kind));
        }
        v
    };
    assert_eq!(seen, vec![(2, 1, Kind::Commit as i32), (3, 2, Kind::Commit as i32), (4, 3, Kind::Application as i32)]);
    let (status, metrics) = relay.http_get("/metrics");
    assert_eq!(status, 200);
    assert!(metrics.contains("skytale_relay_commits_acked_total 3"), "{metrics}");
    assert!(metrics.contains("skytale_relay_commits_nacked_total 1"), "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_packages_claimed_exactly_once() {
    let key = Keypair::generate();
    let relay = RelayProc::start("kp", &key, &[]);
    let (b, _pb) = relay.authed(&key, "acme", "bob").await;
    let kps: Vec<Vec<u8>> = (0..5u8).map(|i| vec![i; 16]).collect();
    assert_eq!(b.publish_key_packages(kps.clone()).await.unwrap(), 5);
    assert_eq!(b.count_key_packages().await.unwrap(), 5);
    let mut claimers = Vec::new();
    for i in 0..4 {
        claimers.push(relay.authed(&key, "acme", &format!("claimer{i}")).await.0);
    }
    let mut tasks = Vec::new();
    for i in 0..12 {
        let c = claimers[i % 4].clone();
        tasks.push(tokio::spawn(async move { c.claim_key_package("bob").await }));
    }
    let mut got = HashSet::new();
    let mut not_found = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(kp) => assert!(got.insert(kp), "a key package was handed out twice"),
            Err(e) => {
                assert_eq!(code(&e), "SKYTALE_KEY_PACKAGE_NOT_FOUND");
                not_found += 1;
            }
        }
    }
    assert_eq!(got.len(), 5);
    assert_eq!(not_found, 7);
    assert_eq!(got, kps.into_iter().collect());
    assert_eq!(b.count_key_packages().await.unwrap(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn welcomes_wait_for_offline_recipients() {
    let key = Keypair::generate();
    let relay = RelayProc::start("welcome", &key, &[("SKYTALE_RELAY_MAX_PENDING_WELCOMES", "2")]);
    let ch = "acme/team/chat";
    let (a, _pa) = relay.authed(&key, "acme", "alice").await;
    let (carol, mut pcarol) = relay.authed(&key, "acme", "carol").await;
    a.create_channel(ch).await.unwrap();
    let ack = a
        .commit(Commit {
            channel: ch.into(),
            client_msg_id: "add".into(),
            epoch: 0,
            payload: b"commit-add".to_vec(),
            welcome: Some(WelcomeOut {
                recipients: vec!["bob".into(), "carol".into()],
                payload: b"welcome-1".to_vec(),
            }),
            added: vec!["bob".into(), "carol".into()],
            ..Default::default()
        })
        .await
        .unwrap();
    // online recipient gets it pushed live
    let f = next_push(&mut pcarol, T).await.unwrap();
    match f.body {
        Some(Body::Welcome(w)) => {
            assert_eq!((w.channel.as_str(), w.sender.as_str(), w.commit_seq), (ch, "alice", ack.seq));
            assert_eq!(w.payload, b"welcome-1");
            carol.ack_welcome(w.welcome_id).await.unwrap();
        }
        other => panic!("expected welcome, got {other:?}"),
    }
    assert!(carol.fetch_welcomes().await.unwrap().is_empty());
    // offline bob gets it on connect, again on FetchWelcomes, until acked
    let (b, mut pb) = relay.authed(&key, "acme", "bob").await;
    let f = next_push(&mut pb, T).await.unwrap();
    let Some(Body::Welcome(w)) = f.body else { panic!("expected welcome") };
    assert_eq!(w.payload, b"welcome-1");
    let again = b.fetch_welcomes().await.unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].welcome_id, w.welcome_id);
    b.ack_welcome(w.welcome_id).await.unwrap();
    assert!(b.fetch_welcomes().await.unwrap().is_empty());
    // bob joins from the commit's seq
    b.subscribe(ch, w.commit_seq).await.unwrap();

    // pending limit per offline recipient
    for i in 0..2u64 {
        a.commit(Commit {
            channel: ch.into(),
            client_msg_id: format!("c{i}"),
            epoch: 1 + i,
            payload: b"c".to_vec(),
            welcome: Some(WelcomeOut { recipients: vec!["dave".into()], payload: b"w".to_vec() }),
            added: vec!["dave".into()],
            ..Default::default()
        })
        .await
        .unwrap();
    }
    let e = a
        .commit(Commit {
            channel: ch.into(),
            client_msg_id: "c-full".into(),
            epoch: 3,
            payload: b"c".to_vec(),
            welcome: Some(WelcomeOut { recipients: vec!["dave".into()], payload: b"w".to_vec() }),
            added: vec!["dave".into()],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(code(&e), "SKYTALE_RECIPIENT_QUEUE_FULL");
    // the refused commit did not advance the channel
    assert_eq!(a.channel_state(ch).await.unwrap().epoch, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_restart_keeps_identity_archive_and_exactly_once() {
    let key = Keypair::generate();
    let mut relay = RelayProc::start("restart", &key, &[]);
    let first_addr = relay.addr.clone();
    let ch = "acme/team/stream";
    const N: u32 = 60;
    let mut received: Vec<Vec<u8>> = Vec::new();
    let mut last_seq = 0u64;
    let mut next_to_send = 0u32;
    let mut killed = false;
    // loop: (re)connect, resume, send the rest; kill -9 the relay once mid-stream
    for round in 0..3 {
        let (a, _pa) = relay.authed(&key, "acme", "alice").await;
        let (b, mut pb) = relay.authed(&key, "acme", "bob").await;
        if round == 0 {
            // bob and carol are members from seq 1 on; the messages are at epoch 1
            assert_eq!(create_with_members(&a, ch, &["bob", "carol"]).await, 1);
        }
        b.subscribe(ch, last_seq).await.unwrap();
        let mut unacked_from = next_to_send;
        while next_to_send < N {
            let i = next_to_send;
            if !killed && i == N / 2 {
                // "crash": the message i is sent but we kill before reading the ack
                let a2 = a.clone();
                let _task = tokio::spawn(async move {
                    a2.send(ch, &format!("msg-{i}"), Kind::Application, 1, format!("body-{i}").into_bytes()).await
                });
                tokio::time::sleep(Duration::from_millis(50)).await;
                relay.kill9();
                killed = true;
                break;
            }
            a.send(ch, &format!("msg-{i}"), Kind::Application, 1, format!("body-{i}").into_bytes()).await.unwrap();
            next_to_send += 1;
            unacked_from = next_to_send;
        }
        // drain what bob got (dedupe by seq as a client would)
        while let Some(d) = next_deliver(&mut pb, Duration::from_millis(500)).await {
            if d.seq > last_seq {
                last_seq = d.seq;
                received.push(d.payload);
            }
        }
        if next_to_send >= N {
            break;
        }
        // restart on the same data dir; the sender re-sends from its first unacked message
        relay.restart();
        assert_eq!(relay.addr.endpoint_id, first_addr.endpoint_id, "endpoint id must be stable");
        next_to_send = unacked_from;
    }
    assert!(killed);
    let expected: Vec<Vec<u8>> = (0..N).map(|i| format!("body-{i}").into_bytes()).collect();
    assert_eq!(received.len(), N as usize, "every message exactly once");
    assert_eq!(received, expected);
    // the archive survived: a fresh subscriber replays all N
    let (c, mut pc) = relay.authed(&key, "acme", "carol").await;
    let info = c.subscribe(ch, 0).await.unwrap();
    assert_eq!(info.last_seq, N as u64 + 1);
    for seq in 2..=N as u64 + 1 {
        assert_eq!(next_deliver(&mut pc, T).await.unwrap().seq, seq);
    }
    let (_, health) = relay.http_get("/health");
    let v: serde_json::Value = serde_json::from_str(&health).unwrap();
    assert_eq!(v["address"].as_str().unwrap(), relay.addr_str);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_token_or_plaintext_marker_in_logs_and_health_metrics_work() {
    let key = Keypair::generate();
    let relay = RelayProc::start("logs", &key, &[]);
    let marker = format!("PLAINTEXT-MARKER-{}", rand::random::<u64>());
    let token = key.token("acme", "alice");
    let (a, _pa) = relay.connect().await;
    a.auth(&token, "alice").await.unwrap();
    let (b, mut pb) = relay.authed(&key, "acme", "bob").await;
    a.create_channel("acme/x/y").await.unwrap();
    a.commit(Commit {
        channel: "acme/x/y".into(),
        client_msg_id: "c".into(),
        epoch: 0,
        payload: marker.clone().into_bytes(),
        welcome: Some(WelcomeOut { recipients: vec!["zed".into()], payload: marker.clone().into_bytes() }),
        added: vec!["bob".into(), "zed".into()],
        ..Default::default()
    })
    .await
    .unwrap();
    b.subscribe("acme/x/y", 0).await.unwrap();
    a.send("acme/x/y", "m", Kind::Application, 1, marker.clone().into_bytes()).await.unwrap();
    assert!(next_deliver(&mut pb, T).await.is_some());
    // failing auth with a token must not log it either
    let bad = Keypair::generate().token("acme", "x");
    let (c, _pc) = relay.connect().await;
    let _ = c.auth(&bad, "x").await;

    let (status, health) = relay.http_get("/health");
    assert_eq!(status, 200);
    let v: serde_json::Value = serde_json::from_str(&health).unwrap();
    assert_eq!(v["status"], "ok");
    assert_eq!(v["address"].as_str().unwrap(), relay.addr_str);
    assert!(relay.addr_str.starts_with("iroh://") && relay.addr_str.contains("@127.0.0.1:"));
    let (status, metrics) = relay.http_get("/metrics");
    assert_eq!(status, 200);
    for m in [
        "skytale_relay_connections ",
        "skytale_relay_frames_in_total",
        "skytale_relay_bytes_out_total",
        "skytale_relay_archive_items 2",
    ] {
        assert!(metrics.contains(m), "missing {m} in {metrics}");
    }
    assert_eq!(relay.http_get("/nope").0, 404);

    let logs = relay.logs();
    assert!(logs.contains("authenticated"), "logs look empty: {logs}");
    assert!(!logs.contains(&marker), "payload marker leaked into logs");
    assert!(!logs.contains(&token), "token leaked into logs");
    assert!(!logs.contains(&bad), "token leaked into logs");
    let sig = token.rsplit('.').next().unwrap();
    assert!(!logs.contains(sig));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_rate_idle_connections() {
    let key = Keypair::generate();
    let relay = RelayProc::start(
        "limits",
        &key,
        &[
            ("SKYTALE_RELAY_FRAMES_PER_SECOND", "5"),
            ("SKYTALE_RELAY_BURST", "5"),
            ("SKYTALE_RELAY_IDLE_TIMEOUT_MS", "1500"),
            ("SKYTALE_RELAY_MAX_CONNECTIONS", "2"),
        ],
    );
    let (a, _pa) = relay.authed(&key, "acme", "alice").await;
    let mut limited = None;
    for _ in 0..20 {
        if let Err(e) = a.ping().await {
            limited = Some(e);
            break;
        }
    }
    match limited {
        Some(ProtoError::Relay { code, retry_after_ms, .. }) => {
            assert_eq!(code, "SKYTALE_RATE_LIMITED");
            assert!(retry_after_ms > 0);
        }
        other => panic!("expected rate limiting, got {other:?}"),
    }
    // not fatal: after waiting, requests pass again
    tokio::time::sleep(Duration::from_millis(400)).await;
    a.ping().await.unwrap();

    // connection limit: a is #1, b is #2, c is refused
    let (_b, _pb) = relay.authed(&key, "acme", "bob").await;
    let (c, _pc) = relay.connect().await;
    let e = c.auth(&key.token("acme", "carol"), "carol").await.unwrap_err();
    assert_eq!(code(&e), "SKYTALE_TOO_MANY_CONNECTIONS");

    // idle timeout: say nothing and get closed
    let (_, mut pa) = (a.clone(), _pa);
    let f = next_push(&mut pa, Duration::from_secs(5)).await.expect("idle error");
    let Some(Body::Error(e)) = f.body else { panic!("expected error") };
    assert_eq!(e.code, "SKYTALE_IDLE_TIMEOUT");
    assert_eq!(tokio::time::timeout(T, a.closed()).await.unwrap().as_deref(), Some("SKYTALE_IDLE_TIMEOUT"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwks_fetched_at_start_and_refetched_on_unknown_kid() {
    let k1 = Keypair::generate();
    let k2 = Keypair::generate();
    let jwks = JwksServer::start(vec![k1.jwk("k1")]);
    let relay = RelayProc::start_with_key(
        "jwks",
        String::new(),
        &[("SKYTALE_RELAY_JWKS_URL", jwks.url.as_str()), ("SKYTALE_RELAY_JWKS_MIN_REFETCH_SECS", "0")],
    );
    let fetched_at_start = jwks.hits.load(std::sync::atomic::Ordering::SeqCst);
    assert_eq!(fetched_at_start, 1);
    // a token of the published key works
    let (c, _p) = relay.connect().await;
    c.auth(&k1.sign_kid(&claims("acme", "a", 3600), "k1"), "a").await.unwrap();
    // an unknown kid triggers a refetch; not there yet → refused
    let (c, _p) = relay.connect().await;
    let e = c.auth(&k2.sign_kid(&claims("acme", "b", 3600), "k2"), "b").await.unwrap_err();
    assert_eq!(code(&e), "SKYTALE_AUTH_INVALID");
    assert!(jwks.hits.load(std::sync::atomic::Ordering::SeqCst) > fetched_at_start);
    // the API server rotates: k2 is published, the relay picks it up on demand
    jwks.set(vec![k1.jwk("k1"), k2.jwk("k2")]);
    let (c, _p) = relay.connect().await;
    c.auth(&k2.sign_kid(&claims("acme", "b", 3600), "k2"), "b").await.unwrap();
    // k2's token with kid k1 (signature mismatch) is refused
    let (c, _p) = relay.connect().await;
    let e = c.auth(&k2.sign_kid(&claims("acme", "b", 3600), "k1"), "b").await.unwrap_err();
    assert_eq!(code(&e), "SKYTALE_AUTH_INVALID");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reauth_refreshes_token_and_identity_binding() {
    let key = Keypair::generate();
    let relay = RelayProc::start("reauth", &key, &[]);
    let (a, _pa) = relay.authed(&key, "acme", "alice").await;
    // refresh with a new token on the same connection
    let ok = a.auth(&key.token("acme", "alice"), "alice").await.unwrap();
    assert_eq!(ok.identity, "alice");
    // switching org or identity on a live connection is refused (fatal)
    let e = a.auth(&key.token("globex", "alice"), "alice").await.unwrap_err();
    assert_eq!(code(&e), "SKYTALE_AUTH_INVALID");
    // a token carrying an identity claim binds it
    let mut cl = claims("acme", "acct-1", 3600);
    cl["identity"] = "agent-7".into();
    let (c, _p) = relay.connect().await;
    let e = c.auth(&key.sign(&cl), "agent-8").await.unwrap_err();
    assert_eq!(code(&e), "SKYTALE_AUTH_INVALID");
    // an empty Auth.identity takes the token's identity claim
    let (c, _p) = relay.connect().await;
    assert_eq!(c.auth(&key.sign(&cl), "").await.unwrap().identity, "agent-7");
    // a token without an identity claim is refused: the client cannot declare who it is
    let mut no_identity = claims("acme", "acct-2", 3600);
    no_identity.as_object_mut().unwrap().remove("identity");
    let (c, _p) = relay.connect().await;
    let e = c.auth(&key.sign(&no_identity), "acct-2").await.unwrap_err();
    assert_eq!(code(&e), "SKYTALE_AUTH_INVALID");
    // an unknown scope is refused
    let mut odd_scope = claims("acme", "acct-3", 3600);
    odd_scope["scope"] = "relay".into();
    let (c, _p) = relay.connect().await;
    let e = c.auth(&key.sign(&odd_scope), "").await.unwrap_err();
    assert_eq!(code(&e), "SKYTALE_AUTH_INVALID");
    let (c, _p) = relay.connect().await;
    assert_eq!(c.auth(&key.sign(&cl), "agent-7").await.unwrap().identity, "agent-7");
    // a short-lived token: the session is closed with SKYTALE_AUTH_EXPIRED once it runs out
    let (d, mut pd) = relay.connect().await;
    d.auth(&key.sign(&claims("acme", "dave", -27)), "dave").await.unwrap(); // within the 30 s leeway
    let f = next_push(&mut pd, Duration::from_secs(8)).await.expect("expiry error");
    let Some(Body::Error(e)) = f.body else { panic!("expected error") };
    assert_eq!(e.code, "SKYTALE_AUTH_EXPIRED");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribe_during_a_burst_keeps_order_without_gaps() {
    let key = Keypair::generate();
    let relay = RelayProc::start(
        "burst",
        &key,
        &[("SKYTALE_RELAY_FRAMES_PER_SECOND", "10000"), ("SKYTALE_RELAY_BURST", "10000")],
    );
    let ch = "acme/load/burst";
    let (a, _pa) = relay.authed(&key, "acme", "alice").await;
    let epoch = create_with_members(&a, ch, &["bob"]).await;
    const N: u64 = 300;
    let sender = {
        let a = a.clone();
        tokio::spawn(async move {
            for i in 0..N {
                a.send(ch, &format!("m{i}"), Kind::Application, epoch, i.to_be_bytes().to_vec()).await.unwrap();
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(20)).await;
    let (b, mut pb) = relay.authed(&key, "acme", "bob").await;
    b.subscribe(ch, 0).await.unwrap();
    sender.await.unwrap();
    // seq 1 is the commit that added bob: his items start after it
    for seq in 2..=N + 1 {
        let d = next_deliver(&mut pb, T).await.expect("delivery");
        assert_eq!(d.seq, seq, "replay and live must join without gaps or reordering");
        assert_eq!(d.payload, (seq - 2).to_be_bytes().to_vec());
    }
    assert!(next_deliver(&mut pb, Duration::from_millis(200)).await.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn archive_ttl_prunes_old_items() {
    let key = Keypair::generate();
    let relay = RelayProc::start("ttl", &key, &[("SKYTALE_RELAY_ARCHIVE_TTL_SECS", "1")]);
    let ch = "acme/tmp/ttl";
    let (a, _pa) = relay.authed(&key, "acme", "alice").await;
    let (b, _pb) = relay.authed(&key, "acme", "bob").await;
    let epoch = create_with_members(&a, ch, &["bob"]).await;
    a.send(ch, "m1", Kind::Application, epoch, b"old".to_vec()).await.unwrap();
    assert_eq!(b.fetch(ch, 0, 10).await.unwrap().0.len(), 1);
    tokio::time::sleep(Duration::from_millis(2600)).await;
    let (items, done) = b.fetch(ch, 0, 10).await.unwrap();
    assert!(items.is_empty(), "expired items are pruned");
    // sequence numbers keep increasing after pruning
    assert_eq!(done.last_seq, 2);
    assert_eq!(a.send(ch, "m2", Kind::Application, epoch, b"new".to_vec()).await.unwrap().seq, 3);
}
