//! End-to-end tests of invites and join requests against the relay binary.

mod common;

use std::time::Duration;

use common::*;
use skytale_proto::conn::RelayConnection;
use skytale_proto::frames::{Body, Commit, CreateInvite, Kind, Send};
use skytale_proto::ProtoError;

const T: Duration = Duration::from_secs(10);

fn code(e: &ProtoError) -> String {
    e.code().to_string()
}

fn invite(channel: &str, id: &str, auth: &[u8], max_uses: u32, ttl: u64, group_info: &[u8]) -> CreateInvite {
    CreateInvite {
        channel: channel.into(),
        invite_id: id.into(),
        invite_auth: auth.to_vec(),
        max_uses,
        expires_at: now() + ttl,
        group_info: group_info.to_vec(),
    }
}

async fn commit(c: &RelayConnection, channel: &str, id: &str, epoch: u64) -> u64 {
    c.commit(Commit {
        channel: channel.into(),
        client_msg_id: id.into(),
        epoch,
        payload: id.as_bytes().to_vec(),
        welcome: None,
        ..Default::default()
    })
    .await
    .unwrap()
    .seq
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_validate_update_revoke_and_org_isolation() {
    let key = Keypair::generate();
    let relay = RelayProc::start("inv-basic", &key, &[]);
    let ch = "acme/team/chat";
    let other = "acme/team/other";
    let (a, _pa) = relay.authed(&key, "acme", "alice").await;
    a.create_channel(ch).await.unwrap();
    a.create_channel(other).await.unwrap();

    // create: valid; channel must exist; field validation; duplicate id
    a.create_invite(invite(ch, "inv-1", b"auth-1", 5, 3600, b"gi-1")).await.unwrap();
    let e = a.create_invite(invite("acme/no/such", "inv-x", b"x", 1, 3600, b"")).await.unwrap_err();
    assert_eq!(code(&e), "SKYTALE_CHANNEL_NOT_FOUND");
    let e = a.create_invite(invite(ch, "inv-1", b"other", 1, 3600, b"")).await.unwrap_err();
    assert_eq!(code(&e), "SKYTALE_INVALID_REQUEST", "duplicate id");
    for bad in ["", "bad id", "bad/id", "bad.id", &"x".repeat(65)] {
        let e = a.create_invite(invite(ch, bad, b"x", 1, 3600, b"")).await.unwrap_err();
        assert_eq!(code(&e), "SKYTALE_INVALID_REQUEST", "id {bad:?}");
    }
    a.create_invite(invite(ch, &format!("Az09_-{}", "x".repeat(58)), b"x", 1, 3600, b"")).await.unwrap();
    let e = a.create_invite(invite(ch, "inv-zero", b"x", 0, 3600, b"")).await.unwrap_err();
    assert_eq!(code(&e), "SKYTALE_INVALID_REQUEST", "max_uses 0");
    let mut past = invite(ch, "inv-past", b"x", 1, 0, b"");
    past.expires_at = now() - 10;
    let e = a.create_invite(past).await.unwrap_err();
    assert_eq!(code(&e), "SKYTALE_INVALID_REQUEST", "expired at creation");
    let e = a.create_invite(invite(ch, "inv-noauth", b"", 1, 3600, b"")).await.unwrap_err();
    assert_eq!(code(&e), "SKYTALE_INVALID_REQUEST", "empty invite_auth");

    // an org-B token can neither create, update, revoke, fetch nor use an org-A invite
    let (m, _pm) = relay.authed(&key, "globex", "mallory").await;
    let e = m.create_invite(invite(ch, "inv-m", b"x", 1, 3600, b"")).await.unwrap_err();
    assert_eq!(code(&e), "SKYTALE_FORBIDDEN_CHANNEL");
    let e = m.update_invite("inv-1", b"evil".to_vec()).await.unwrap_err();
    assert_eq!(code(&e), "SKYTALE_FORBIDDEN_CHANNEL");
    let e = m.revoke_invite("inv-1").await.unwrap_err();
    assert_eq!(code(&e), "SKYTALE_FORBIDDEN_CHANNEL");
    let e = m.fetch_invite(ch, "inv-1", b"auth-1".to_vec()).await.unwrap_err();
    assert_eq!(code(&e), "SKYTALE_FORBIDDEN_CHANNEL");
    let e = m.send_join_request(ch, "j", "inv-1", b"auth-1".to_vec(), b"jr".to_vec()).await.unwrap_err();
    assert_eq!(code(&e), "SKYTALE_FORBIDDEN_CHANNEL");

    // wrong auth / unknown id / other channel / missing channel: one code for all
    let (b, _pb) = relay.authed(&key, "acme", "bob").await;
    for (channel, id, auth) in [
        (ch, "inv-1", &b"wrong"[..]),
        (ch, "inv-1", &b""[..]),
        (ch, "no-such", &b"auth-1"[..]),
        (other, "inv-1", &b"auth-1"[..]),
        ("acme/no/such", "inv-1", &b"auth-1"[..]),
    ] {
        let e = b.send_join_request(channel, "j", id, auth.to_vec(), b"jr".to_vec()).await.unwrap_err();
        assert_eq!(code(&e), "SKYTALE_INVITE_INVALID", "join {channel} {id}");
        let e = b.fetch_invite(channel, id, auth.to_vec()).await.unwrap_err();
        assert_eq!(code(&e), "SKYTALE_INVITE_INVALID", "fetch {channel} {id}");
    }
    // update/revoke of an unknown invite
    let e = a.update_invite("no-such", b"x".to_vec()).await.unwrap_err();
    assert_eq!(code(&e), "SKYTALE_INVITE_INVALID");
    let e = a.revoke_invite("no-such").await.unwrap_err();
    assert_eq!(code(&e), "SKYTALE_INVITE_INVALID");

    // FetchInvite returns the stored group info and the channel's current state, counts a use
    let info = b.fetch_invite(ch, "inv-1", b"auth-1".to_vec()).await.unwrap();
    assert_eq!((info.channel.as_str(), info.invite_id.as_str()), (ch, "inv-1"));
    assert_eq!(info.group_info, b"gi-1");
    assert_eq!((info.epoch, info.last_seq, info.uses, info.max_uses), (0, 0, 1, 5));
    assert!(info.expires_at > now() && info.expires_at <= now() + 3600);
    // the channel moves on; UpdateInvite replaces the group info
    let seq = commit(&a, ch, "c0", 0).await;
    a.update_invite("inv-1", b"gi-2".to_vec()).await.unwrap();
    let info = b.fetch_invite(ch, "inv-1", b"auth-1".to_vec()).await.unwrap();
    assert_eq!(info.group_info, b"gi-2");
    assert_eq!((info.epoch, info.last_seq, info.uses), (1, seq, 1), "same identity is counted once");
    let (c, _pc) = relay.authed(&key, "acme", "carol").await;
    assert_eq!(c.fetch_invite(ch, "inv-1", b"auth-1".to_vec()).await.unwrap().uses, 2);

    // caps: max_uses and expiry are capped to the relay limits
    a.create_invite(invite(ch, "inv-big", b"x", u32::MAX, 365 * 24 * 3600, b"")).await.unwrap();
    let info = b.fetch_invite(ch, "inv-big", b"x".to_vec()).await.unwrap();
    assert_eq!(info.max_uses, 10_000);
    assert!(info.expires_at <= now() + 30 * 24 * 3600, "{}", info.expires_at);

    // invite fields are refused on ordinary sends
    let e = b
        .request(Body::Send(Send {
            channel: ch.into(),
            client_msg_id: "app".into(),
            kind: Kind::Application as i32,
            epoch: 1,
            payload: b"x".to_vec(),
            invite_id: "inv-1".into(),
            invite_auth: b"auth-1".to_vec(),
        }))
        .await
        .unwrap_err();
    assert_eq!(code(&e), "SKYTALE_INVALID_REQUEST");

    // revoke: later uses are invalid (also for identities that used it before); the id stays taken
    a.revoke_invite("inv-1").await.unwrap();
    a.revoke_invite("inv-1").await.unwrap(); // idempotent
    let e = b.fetch_invite(ch, "inv-1", b"auth-1".to_vec()).await.unwrap_err();
    assert_eq!(code(&e), "SKYTALE_INVITE_INVALID");
    let e = b.send_join_request(ch, "j2", "inv-1", b"auth-1".to_vec(), b"jr".to_vec()).await.unwrap_err();
    assert_eq!(code(&e), "SKYTALE_INVITE_INVALID");
    let e = a.update_invite("inv-1", b"gi-3".to_vec()).await.unwrap_err();
    assert_eq!(code(&e), "SKYTALE_INVITE_INVALID");
    let e = a.create_invite(invite(ch, "inv-1", b"auth-1", 1, 3600, b"")).await.unwrap_err();
    assert_eq!(code(&e), "SKYTALE_INVALID_REQUEST");

    let (_, metrics) = relay.http_get("/metrics");
    assert_eq!(metric(&metrics, "skytale_relay_invites_created_total"), 3);
    assert_eq!(metric(&metrics, "skytale_relay_invite_uses_total"), 3);
    assert_eq!(metric(&metrics, "skytale_relay_invite_refusals_total"), 12);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_uses_per_identity_and_expiry() {
    let key = Keypair::generate();
    let relay = RelayProc::start("inv-uses", &key, &[]);
    let ch = "acme/team/chat";
    let (a, _pa) = relay.authed(&key, "acme", "alice").await;
    a.create_channel(ch).await.unwrap();
    a.create_invite(invite(ch, "once", b"k", 1, 3600, b"gi")).await.unwrap();
    a.create_invite(invite(ch, "short", b"s", 10, 2, b"gi")).await.unwrap();

    let (x, _px) = relay.authed(&key, "acme", "joiner-a").await;
    let (y, _py) = relay.authed(&key, "acme", "joiner-b").await;
    let ack = x.send_join_request(ch, "j1", "once", b"k".to_vec(), b"req-1".to_vec()).await.unwrap();
    assert!(!ack.duplicate);
    // the same identity again (new request, fetch): still fine, not counted twice
    let ack2 = x.send_join_request(ch, "j2", "once", b"k".to_vec(), b"req-2".to_vec()).await.unwrap();
    assert_eq!(ack2.seq, ack.seq + 1);
    assert_eq!(x.fetch_invite(ch, "once", b"k".to_vec()).await.unwrap().uses, 1);
    // a second identity: used up
    let e = y.send_join_request(ch, "j1", "once", b"k".to_vec(), b"req".to_vec()).await.unwrap_err();
    assert_eq!(code(&e), "SKYTALE_INVITE_USED_UP");
    let e = y.fetch_invite(ch, "once", b"k".to_vec()).await.unwrap_err();
    assert_eq!(code(&e), "SKYTALE_INVITE_USED_UP");
    // a wrong auth on a used-up invite still says only "invalid"
    let e = y.fetch_invite(ch, "once", b"nope".to_vec()).await.unwrap_err();
    assert_eq!(code(&e), "SKYTALE_INVITE_INVALID");

    // expiry
    y.fetch_invite(ch, "short", b"s".to_vec()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(3100)).await;
    let e = y.send_join_request(ch, "j2", "short", b"s".to_vec(), b"req".to_vec()).await.unwrap_err();
    assert_eq!(code(&e), "SKYTALE_INVITE_EXPIRED");
    let e = x.fetch_invite(ch, "short", b"s".to_vec()).await.unwrap_err();
    assert_eq!(code(&e), "SKYTALE_INVITE_EXPIRED");
    let e = x.fetch_invite(ch, "short", b"wrong".to_vec()).await.unwrap_err();
    assert_eq!(code(&e), "SKYTALE_INVITE_INVALID");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn join_requests_reach_live_and_offline_members_never_the_joiner() {
    let key = Keypair::generate();
    let relay = RelayProc::start("inv-deliver", &key, &[]);
    let ch = "acme/team/chat";
    let (a, mut pa) = relay.authed(&key, "acme", "alice").await;
    a.create_channel(ch).await.unwrap();
    let s1 = a.commit(add_commit(ch, "c0", 0, &["carol"])).await.unwrap().seq; // epoch 1
    a.subscribe(ch, s1).await.unwrap();
    a.create_invite(invite(ch, "inv", b"auth", 3, 3600, b"gi")).await.unwrap();

    // the joiner knows no epoch and is no member: it cannot read, but posts a join request
    let (j, mut pj) = relay.authed(&key, "acme", "joiner").await;
    assert_eq!(code(&j.subscribe(ch, 0).await.unwrap_err()), "SKYTALE_NOT_A_MEMBER");
    let ack = j.send_join_request(ch, "join-1", "inv", b"auth".to_vec(), b"join-payload".to_vec()).await.unwrap();
    assert_eq!((ack.seq, ack.epoch, ack.duplicate), (s1 + 1, 1, false));
    // the live member gets it
    let d = next_deliver(&mut pa, T).await.unwrap();
    assert_eq!((d.seq, d.epoch, d.kind), (ack.seq, 1, Kind::JoinRequest as i32));
    assert_eq!((d.sender.as_str(), d.payload.as_slice()), ("joiner", &b"join-payload"[..]));
    // a retry is deduped: original ack, nothing new delivered or archived
    let dup = j.send_join_request(ch, "join-1", "inv", b"auth".to_vec(), b"join-payload".to_vec()).await.unwrap();
    assert!(dup.duplicate);
    assert_eq!(dup.seq, ack.seq);
    assert!(next_deliver(&mut pa, Duration::from_millis(300)).await.is_none());
    // nothing reaches the joiner (not a member: no subscription, no fetch)
    assert!(next_deliver(&mut pj, Duration::from_millis(300)).await.is_none());
    assert_eq!(code(&j.fetch(ch, 0, 100).await.unwrap_err()), "SKYTALE_NOT_A_MEMBER");

    // an offline member gets it on Subscribe replay and through Fetch
    let (c, mut pc) = relay.authed(&key, "acme", "carol").await;
    c.subscribe(ch, s1).await.unwrap();
    let d = next_deliver(&mut pc, T).await.unwrap();
    assert_eq!((d.seq, d.kind, d.sender.as_str()), (ack.seq, Kind::JoinRequest as i32, "joiner"));
    assert_eq!(d.payload, b"join-payload");
    let (items, _) = c.fetch(ch, s1, 10).await.unwrap();
    assert_eq!(items.len(), 1);
    assert_eq!(items[0].kind, Kind::JoinRequest as i32);

    // an external commit needs an invite its committer used: without one, or with one it never
    // used, it is refused; after FetchInvite it is accepted and makes the committer a member
    let (e, _pe) = relay.authed(&key, "acme", "external").await;
    let ext_commit = |invite_id: &str| Commit {
        channel: ch.into(),
        client_msg_id: "ext".into(),
        epoch: 1,
        payload: b"external-commit".to_vec(),
        welcome: None,
        added: vec!["external".into()],
        removed: Vec::new(),
        invite_id: invite_id.into(),
    };
    assert_eq!(code(&e.commit(ext_commit("")).await.unwrap_err()), "SKYTALE_NOT_A_MEMBER");
    assert_eq!(code(&e.commit(ext_commit("inv")).await.unwrap_err()), "SKYTALE_NOT_A_MEMBER");
    e.fetch_invite(ch, "inv", b"auth".to_vec()).await.unwrap();
    let ext = e.commit(ext_commit("inv")).await.unwrap();
    assert_eq!((ext.seq, ext.epoch), (ack.seq + 1, 2));
    let d = next_deliver(&mut pa, T).await.unwrap();
    assert_eq!((d.seq, d.kind, d.sender.as_str()), (ext.seq, Kind::Commit as i32, "external"));
    // the joiner reads from its own commit on
    let info = e.subscribe(ch, 0).await.unwrap();
    assert_eq!(info.last_seq, ext.seq);
    // join requests need no epoch: after the epoch moved they carry the current one
    let ack2 = j.send_join_request(ch, "join-2", "inv", b"auth".to_vec(), b"again".to_vec()).await.unwrap();
    assert_eq!((ack2.seq, ack2.epoch), (ext.seq + 1, 2));
    let d = next_deliver(&mut pa, T).await.unwrap();
    assert_eq!((d.seq, d.epoch, d.kind), (ack2.seq, 2, Kind::JoinRequest as i32));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invites_and_uses_survive_restart() {
    let key = Keypair::generate();
    let mut relay = RelayProc::start("inv-restart", &key, &[]);
    let ch = "acme/team/chat";
    {
        let (a, _pa) = relay.authed(&key, "acme", "alice").await;
        a.create_channel(ch).await.unwrap();
        a.create_invite(invite(ch, "once", b"k", 1, 3600, b"gi")).await.unwrap();
        let (x, _px) = relay.authed(&key, "acme", "joiner-a").await;
        x.send_join_request(ch, "j1", "once", b"k".to_vec(), b"req".to_vec()).await.unwrap();
    }
    relay.kill9();
    relay.restart();
    let (x, _px) = relay.authed(&key, "acme", "joiner-a").await;
    let info = x.fetch_invite(ch, "once", b"k".to_vec()).await.unwrap();
    assert_eq!((info.uses, info.group_info.as_slice()), (1, &b"gi"[..]));
    let (y, _py) = relay.authed(&key, "acme", "joiner-b").await;
    let e = y.fetch_invite(ch, "once", b"k".to_vec()).await.unwrap_err();
    assert_eq!(code(&e), "SKYTALE_INVITE_USED_UP");
    let (a, _pa) = relay.authed(&key, "acme", "alice").await;
    let (items, _) = a.fetch(ch, 0, 10).await.unwrap();
    assert_eq!(items.len(), 1);
    assert_eq!(items[0].kind, Kind::JoinRequest as i32);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_invites_are_pruned_and_secrets_never_logged() {
    let key = Keypair::generate();
    let relay = RelayProc::start("inv-prune", &key, &[("SKYTALE_RELAY_ARCHIVE_TTL_SECS", "1")]);
    let ch = "acme/team/chat";
    let auth = format!("AUTH-MARKER-{}", rand::random::<u64>());
    let gi = format!("GROUPINFO-MARKER-{}", rand::random::<u64>());
    let jr = format!("JOIN-MARKER-{}", rand::random::<u64>());
    let (a, _pa) = relay.authed(&key, "acme", "alice").await;
    a.create_channel(ch).await.unwrap();
    a.create_invite(invite(ch, "gone", auth.as_bytes(), 2, 2, gi.as_bytes())).await.unwrap();
    let (x, _px) = relay.authed(&key, "acme", "joiner").await;
    x.send_join_request(ch, "j", "gone", auth.as_bytes().to_vec(), jr.clone().into_bytes()).await.unwrap();
    let e = x.fetch_invite(ch, "gone", b"bad".to_vec()).await.unwrap_err();
    assert_eq!(code(&e), "SKYTALE_INVITE_INVALID");
    // expired (2 s) and then older than the archive TTL (1 s): pruned, so the id is free again
    tokio::time::sleep(Duration::from_millis(5000)).await;
    let e = x.fetch_invite(ch, "gone", auth.as_bytes().to_vec()).await.unwrap_err();
    assert_eq!(code(&e), "SKYTALE_INVITE_INVALID");
    a.create_invite(invite(ch, "gone", b"new", 1, 3600, b"")).await.unwrap();
    let logs = relay.logs();
    for marker in [&auth, &gi, &jr] {
        assert!(!logs.contains(marker.as_str()), "a secret/payload marker leaked into the logs");
    }
}
