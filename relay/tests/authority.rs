//! Who may do what on the relay: token scope, revocation of API keys and agents (sessions
//! closed, new sessions refused), and the JWKS refresh timer (a dropped key stops verifying).

mod common;

use std::time::{Duration, Instant};

use common::*;
use skytale_proto::frames::{Commit, CreateInvite, Kind};
use skytale_proto::ProtoError;

const T: Duration = Duration::from_secs(10);

fn code(e: &ProtoError) -> String {
    e.code().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_only_scope_cannot_send_commit_create_or_invite() {
    let key = Keypair::generate();
    let relay = RelayProc::start("scope", &key, &[]);
    let ch = "acme/scope/ro";
    let (w, _pw) = relay.authed(&key, "acme", "writer").await;
    // the reader is a member (reads need membership; the scope still forbids its writes)
    let epoch = create_with_members(&w, ch, &["reader"]).await;
    w.send(ch, "m1", Kind::Application, epoch, b"x".to_vec()).await.unwrap();

    let mut cl = claims("acme", "reader", 3600);
    cl["scope"] = "channels:r".into();
    let (r, _pr) = relay.connect().await;
    r.auth(&key.sign(&cl), "reader").await.unwrap();
    // reads work
    r.subscribe(ch, 0).await.unwrap();
    let (items, _) = r.fetch(ch, 0, 0).await.unwrap();
    assert_eq!(items.len(), 1);
    // writes are refused with a clear, non-fatal code
    let e = r.send(ch, "r1", Kind::Application, epoch, b"y".to_vec()).await.unwrap_err();
    assert_eq!(code(&e), "SKYTALE_SCOPE_FORBIDDEN");
    let commit = Commit {
        channel: ch.into(),
        client_msg_id: "c1".into(),
        epoch,
        payload: b"c".to_vec(),
        welcome: None,
        ..Default::default()
    };
    assert_eq!(code(&r.commit(commit).await.unwrap_err()), "SKYTALE_SCOPE_FORBIDDEN");
    assert_eq!(code(&r.create_channel("acme/scope/other").await.unwrap_err()), "SKYTALE_SCOPE_FORBIDDEN");
    let inv = CreateInvite {
        channel: ch.into(),
        invite_id: "inv1".into(),
        invite_auth: vec![0; 32],
        expires_at: 9_999_999_999,
        max_uses: 1,
        group_info: vec![1],
    };
    assert_eq!(code(&r.create_invite(inv).await.unwrap_err()), "SKYTALE_SCOPE_FORBIDDEN");
    assert_eq!(code(&r.claim_key_package("writer").await.unwrap_err()), "SKYTALE_SCOPE_FORBIDDEN");
    // the session survives the refusals, and nothing was archived
    r.ping().await.unwrap();
    let (items, _) = r.fetch(ch, 0, 0).await.unwrap();
    assert_eq!(items.len(), 1);
}

/// Waits until the connection is closed by the relay, returning the close code and how long it took.
async fn closed_within(c: &skytale_proto::conn::RelayConnection, limit: Duration) -> (Option<String>, Duration) {
    let t0 = Instant::now();
    let code = tokio::time::timeout(limit, c.closed()).await.expect("session not closed in time");
    (code, t0.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoked_api_key_and_agent_lose_their_sessions_and_cannot_reconnect() {
    let key = Keypair::generate();
    let jwks = JwksServer::start(vec![key.jwk("test-kid")]);
    let relay = RelayProc::start_with_key(
        "revoke",
        String::new(),
        &[("SKYTALE_RELAY_JWKS_URL", jwks.url.as_str()), ("SKYTALE_RELAY_REVOCATION_POLL_SECS", "1")],
    );
    let mut by_key = claims("acme", "alice", 3600);
    by_key["akid"] = "key_alice".into();
    let (a, _pa) = relay.connect().await;
    a.auth(&key.sign(&by_key), "alice").await.unwrap();
    let (b, _pb) = relay.authed(&key, "acme", "bob").await;
    let (c, _pc) = relay.authed(&key, "acme", "carol").await;

    // The API key that minted alice's token is revoked.
    *jwks.revocations.lock().unwrap() =
        r#"{"cursor":1,"apiKeys":[{"id":"key_alice","revokedAt":1}],"agents":[]}"#.into();
    let (code_a, took) = closed_within(&a, T).await;
    assert_eq!(code_a.as_deref(), Some("SKYTALE_AUTH_INVALID"));
    assert!(took < Duration::from_secs(30));
    let (a2, _) = relay.connect().await;
    assert_eq!(code(&a2.auth(&key.sign(&by_key), "alice").await.unwrap_err()), "SKYTALE_AUTH_INVALID");

    // Agent bob is revoked: tokens issued before the revocation die, a later one works.
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    *jwks.revocations.lock().unwrap() = format!(
        r#"{{"cursor":2,"apiKeys":[{{"id":"key_alice","revokedAt":1}}],"agents":[{{"org":"acme","identity":"bob","revokedAt":{now}}}]}}"#
    );
    let (code_b, _) = closed_within(&b, T).await;
    assert_eq!(code_b.as_deref(), Some("SKYTALE_AUTH_INVALID"));
    let mut earlier = claims("acme", "bob", 3600);
    earlier["iat"] = (now - 10).into();
    let (b2, _) = relay.connect().await;
    assert_eq!(code(&b2.auth(&key.sign(&earlier), "bob").await.unwrap_err()), "SKYTALE_AUTH_INVALID");
    let mut later = claims("acme", "bob", 3600);
    later["iat"] = (now + 5).into();
    let (b3, _) = relay.connect().await;
    b3.auth(&key.sign(&later), "bob").await.unwrap();
    // carol is untouched
    c.ping().await.unwrap();
    assert!(!c.is_closed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_dropped_from_the_jwks_stops_verifying_after_the_refresh_interval() {
    let k1 = Keypair::generate();
    let k2 = Keypair::generate();
    let jwks = JwksServer::start(vec![k1.jwk("k1"), k2.jwk("k2")]);
    let relay = RelayProc::start_with_key(
        "jwks-refresh",
        String::new(),
        &[("SKYTALE_RELAY_JWKS_URL", jwks.url.as_str()), ("SKYTALE_RELAY_JWKS_REFRESH_SECS", "1")],
    );
    // Both keys listed: old-key tokens keep working during the rotation.
    let (c, _p) = relay.connect().await;
    c.auth(&k1.sign_kid(&claims("acme", "a", 3600), "k1"), "a").await.unwrap();
    let (c, _p) = relay.connect().await;
    c.auth(&k2.sign_kid(&claims("acme", "b", 3600), "k2"), "b").await.unwrap();
    // k1 is dropped from the JWKS; after the refresh its tokens are refused.
    jwks.set(vec![k2.jwk("k2")]);
    let deadline = Instant::now() + T;
    loop {
        let (c, _p) = relay.connect().await;
        match c.auth(&k1.sign_kid(&claims("acme", "a", 3600), "k1"), "a").await {
            Err(e) => {
                assert_eq!(code(&e), "SKYTALE_AUTH_INVALID");
                break;
            }
            Ok(_) => {
                assert!(Instant::now() < deadline, "dropped key still verifies");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
    let (c, _p) = relay.connect().await;
    c.auth(&k2.sign_kid(&claims("acme", "b", 3600), "k2"), "b").await.unwrap();
}
