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
    a.create_channel(ch).await.unwrap();
    b.subscribe(ch, 0).await.unwrap();
    // 200 sends in flight at once, every 10th one twice (same client_msg_id)
    let mut tasks = Vec::new();
    for i in 0..200u32 {
        for _ in 0..if i % 10 == 0 { 2 } else { 1 } {
            let a = a.clone();
            tasks.push(tokio::spawn(async move {
                let ack = a.send(ch, &format!("m{i}"), Kind::Application, 0, vec![1; 16]).await.unwrap();
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
    assert_eq!(seqs, (1..=200).collect::<Vec<u64>>());
    // the subscriber sees exactly 1..=200 in order
    for want in 1..=200u64 {
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
    a.create_channel(ch).await.unwrap();
    assert_eq!(a.send(ch, "x1", Kind::Application, 0, b"1".to_vec()).await.unwrap().seq, 1);
    // no subscribers and no requests for longer than the actor's idle time (30 s)
    tokio::time::sleep(Duration::from_secs(32)).await;
    a.ping().await.unwrap();
    let again = a.send(ch, "x1", Kind::Application, 0, b"1".to_vec()).await.unwrap();
    assert!(again.duplicate);
    assert_eq!(again.seq, 1);
    assert_eq!(a.send(ch, "x2", Kind::Application, 0, b"2".to_vec()).await.unwrap().seq, 2);
    let (b, mut pb) = relay.authed(&key, "acme", "bob").await;
    b.subscribe(ch, 0).await.unwrap();
    assert_eq!(next_deliver(&mut pb, T).await.unwrap().seq, 1);
    assert_eq!(next_deliver(&mut pb, T).await.unwrap().seq, 2);
    assert_eq!(a.send(ch, "x3", Kind::Application, 0, b"3".to_vec()).await.unwrap().seq, 3);
    assert_eq!(next_deliver(&mut pb, T).await.unwrap().seq, 3);
}
