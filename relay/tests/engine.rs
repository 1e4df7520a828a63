//! The engine under concurrency: one connection's pipelined sends (group-committed batches)
//! get contiguous sequence numbers, in-flight duplicates get the original's Ack, and an idle
//! channel actor that stopped is restarted transparently with its state from the store.

mod common;

use std::time::Duration;

use common::*;
use skytale_proto::frames::Kind;

const T: Duration = Duration::from_secs(10);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_sends_are_contiguous_and_deduped_in_flight() {
    let key = Keypair::generate();
    let relay = RelayProc::start(
        "pipeline",
        &key,
        &[("SKYTALE_RELAY_FRAMES_PER_SECOND", "100000"), ("SKYTALE_RELAY_BURST", "100000")],
    );
    let ch = "acme/engine/pipe";
    let (a, _pa) = relay.authed(&key, "acme", "alice").await;
    let (b, mut pb) = relay.authed(&key, "acme", "bob").await;
    let epoch = create_with_members(&a, ch, &["bob"]).await;
    b.subscribe(ch, 0).await.unwrap();
    // 200 sends in flight at once, every 10th one twice (same client_msg_id)
    let mut tasks = Vec::new();
    for i in 0..200u32 {
        for _ in 0..if i % 10 == 0 { 2 } else { 1 } {
            let a = a.clone();
            tasks.push(tokio::spawn(async move {
                let ack = a.send(ch, &format!("m{i}"), Kind::Application, epoch, vec![1; 16]).await.unwrap();
                (i, ack)
            }));
        }
    }
    let mut seq_of = std::collections::HashMap::new();
    for t in tasks {
        let (i, ack) = t.await.unwrap();
        let prev = seq_of.insert(i, ack.seq);
        if let Some(p) = prev {
            assert_eq!(p, ack.seq, "a duplicate must get the original's seq");
        }
    }
    let mut seqs: Vec<u64> = seq_of.values().copied().collect();
    seqs.sort();
    // seq 1 is the commit that added bob
    assert_eq!(seqs, (2..=201).collect::<Vec<u64>>());
    // the subscriber sees exactly 2..=201 in order
    for want in 2..=201u64 {
        let d = next_deliver(&mut pb, T).await.expect("delivery");
        assert_eq!(d.seq, want);
    }
    assert!(next_deliver(&mut pb, Duration::from_millis(300)).await.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_channel_actor_restarts_with_its_state() {
    let key = Keypair::generate();
    let relay = RelayProc::start("idle", &key, &[]);
    let ch = "acme/engine/idle";
    let (a, _pa) = relay.authed(&key, "acme", "alice").await;
    let epoch = create_with_members(&a, ch, &["bob"]).await;
    assert_eq!(a.send(ch, "x1", Kind::Application, epoch, b"1".to_vec()).await.unwrap().seq, 2);
    // no subscribers and no requests for longer than the actor's idle time (30 s)
    tokio::time::sleep(Duration::from_secs(32)).await;
    a.ping().await.unwrap();
    let again = a.send(ch, "x1", Kind::Application, epoch, b"1".to_vec()).await.unwrap();
    assert!(again.duplicate);
    assert_eq!(again.seq, 2);
    assert_eq!(a.send(ch, "x2", Kind::Application, epoch, b"2".to_vec()).await.unwrap().seq, 3);
    // the restarted actor reloaded the roster: bob is still a member, strangers are not
    let (b, mut pb) = relay.authed(&key, "acme", "bob").await;
    b.subscribe(ch, 0).await.unwrap();
    assert_eq!(next_deliver(&mut pb, T).await.unwrap().seq, 2);
    assert_eq!(next_deliver(&mut pb, T).await.unwrap().seq, 3);
    let (x, _px) = relay.authed(&key, "acme", "stranger").await;
    assert_eq!(x.subscribe(ch, 0).await.unwrap_err().code(), "SKYTALE_NOT_A_MEMBER");
    assert_eq!(a.send(ch, "x3", Kind::Application, epoch, b"3".to_vec()).await.unwrap().seq, 4);
    assert_eq!(next_deliver(&mut pb, T).await.unwrap().seq, 4);
}
