//! Only members touch a channel: the relay roster against a same-org non-member with a valid
//! token, removal, `since_seq`, welcome recipients, and external commits with invites.

mod common;

use std::time::{Duration, Instant};

use common::*;
use skytale_proto::conn::PushReceiver;
use skytale_proto::frames::{Body, Commit, CreateInvite, Kind, WelcomeOut};
use skytale_proto::ProtoError;

const T: Duration = Duration::from_secs(10);

fn code<T: std::fmt::Debug>(r: Result<T, ProtoError>) -> String {
    match r {
        Ok(v) => panic!("expected a refusal, got {v:?}"),
        Err(e) => e.code().to_string(),
    }
}

fn invite(channel: &str, id: &str, auth: &[u8], ttl: u64) -> CreateInvite {
    CreateInvite {
        channel: channel.into(),
        invite_id: id.into(),
        invite_auth: auth.to_vec(),
        max_uses: 10,
        expires_at: now() + ttl,
        group_info: b"group-info".to_vec(),
    }
}

fn external(channel: &str, id: &str, epoch: u64, me: &str, invite_id: &str) -> Commit {
    Commit {
        channel: channel.into(),
        client_msg_id: id.into(),
        epoch,
        payload: b"external-commit".to_vec(),
        added: vec![me.into()],
        invite_id: invite_id.into(),
        ..Default::default()
    }
}

/// Next pushed `Error` frame within `t` (skipping deliveries).
async fn next_error(p: &mut PushReceiver, t: Duration) -> Option<skytale_proto::frames::Error> {
    let deadline = tokio::time::Instant::now() + t;
    loop {
        match tokio::time::timeout_at(deadline, p.recv()).await {
            Ok(Some(f)) => {
                if let Some(Body::Error(e)) = f.body {
                    return Some(e);
                }
            }
            _ => return None,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_same_org_non_member_is_refused_everything_and_changes_nothing() {
    let key = Keypair::generate();
    let relay = RelayProc::start("non-member", &key, &[]);
    let ch = "acme/team/secret";
    let (a, mut pa) = relay.authed(&key, "acme", "alice").await;
    let (b, _pb) = relay.authed(&key, "acme", "bob").await;
    let epoch = create_with_members(&a, ch, &["bob"]).await;
    a.subscribe(ch, 0).await.unwrap();
    b.send(ch, "b1", Kind::Application, epoch, b"hello".to_vec()).await.unwrap();
    assert_eq!(next_deliver(&mut pa, T).await.unwrap().sender, "bob");
    a.create_invite(invite(ch, "inv-a", b"auth-a", 3600)).await.unwrap();
    let before = a.channel_state(ch).await.unwrap();

    // eve: same org, valid token, not in the roster; knows the channel name and the invite id
    let (e, mut pe) = relay.authed(&key, "acme", "eve").await;
    assert_eq!(code(e.subscribe(ch, 0).await), "SKYTALE_NOT_A_MEMBER");
    assert_eq!(code(e.fetch(ch, 0, 0).await), "SKYTALE_NOT_A_MEMBER");
    assert_eq!(code(e.channel_state(ch).await), "SKYTALE_NOT_A_MEMBER");
    assert_eq!(code(e.send(ch, "e1", Kind::Application, epoch, b"x".to_vec()).await), "SKYTALE_NOT_A_MEMBER");
    assert_eq!(code(e.send(ch, "e2", Kind::Proposal, epoch, b"x".to_vec()).await), "SKYTALE_NOT_A_MEMBER");
    let garbage = Commit {
        channel: ch.into(),
        client_msg_id: "e3".into(),
        epoch,
        payload: b"garbage".to_vec(),
        ..Default::default()
    };
    assert_eq!(code(e.commit(garbage).await), "SKYTALE_NOT_A_MEMBER");
    // declaring itself added does not help without a used invite
    assert_eq!(code(e.commit(external(ch, "e4", epoch, "eve", "")).await), "SKYTALE_NOT_A_MEMBER");
    assert_eq!(code(e.commit(external(ch, "e5", epoch, "eve", "inv-a")).await), "SKYTALE_NOT_A_MEMBER");
    assert_eq!(code(e.create_invite(invite(ch, "inv-e", b"x", 3600)).await), "SKYTALE_NOT_A_MEMBER");
    assert_eq!(code(e.update_invite("inv-a", b"evil".to_vec()).await), "SKYTALE_NOT_A_MEMBER");
    assert_eq!(code(e.revoke_invite("inv-a").await), "SKYTALE_NOT_A_MEMBER");
    assert_eq!(code(e.create_channel(ch).await), "SKYTALE_CHANNEL_EXISTS");
    // nothing reached eve, and the session is still fine for its own channels
    assert!(next_deliver(&mut pe, Duration::from_millis(200)).await.is_none());
    e.create_channel("acme/eve/own").await.unwrap();

    // nothing changed: epoch, last_seq, the invite (group info, not revoked)
    let after = a.channel_state(ch).await.unwrap();
    assert_eq!((after.epoch, after.last_seq), (before.epoch, before.last_seq));
    let (c, _pc) = relay.authed(&key, "acme", "carol").await;
    let info = c.fetch_invite(ch, "inv-a", b"auth-a".to_vec()).await.unwrap();
    assert_eq!(info.group_info, b"group-info");
    // members keep working; CreateChannel is idempotent for a member
    let ack = b.send(ch, "b2", Kind::Application, epoch, b"still here".to_vec()).await.unwrap();
    assert_eq!(ack.seq, before.last_seq + 1);
    assert_eq!(next_deliver(&mut pa, T).await.unwrap().payload, b"still here");
    let again = b.create_channel(ch).await.unwrap();
    assert_eq!((again.created, again.epoch), (false, epoch));

    let (_, metrics) = relay.http_get("/metrics");
    assert_eq!(refusals(&metrics, "SKYTALE_NOT_A_MEMBER", "not_a_member"), 11, "{metrics}");
    assert_eq!(refusals(&metrics, "SKYTALE_CHANNEL_EXISTS", "channel_exists"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_creates_of_one_name_make_one_creator() {
    let key = Keypair::generate();
    let relay = RelayProc::start("create-race", &key, &[]);
    let ch = "acme/race/name";
    let (a, _pa) = relay.authed(&key, "acme", "alice").await;
    let (m, _pm) = relay.authed(&key, "acme", "mallory").await;
    let (ra, rm) = tokio::join!(a.create_channel(ch), m.create_channel(ch));
    let (winner, loser) = match (ra, rm) {
        (Ok(info), Err(e)) => ((a, info), (m, e)),
        (Err(e), Ok(info)) => ((m, info), (a, e)),
        other => panic!("expected one creator, got {other:?}"),
    };
    assert!(winner.1.created);
    assert_eq!(loser.1.code(), "SKYTALE_CHANNEL_EXISTS");
    assert_eq!(code(loser.0.subscribe(ch, 0).await), "SKYTALE_NOT_A_MEMBER");
    winner.0.subscribe(ch, 0).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_member_gets_nothing_more_and_is_refused() {
    let key = Keypair::generate();
    let relay = RelayProc::start("removal", &key, &[]);
    let ch = "acme/team/chat";
    let (a, _pa) = relay.authed(&key, "acme", "alice").await;
    let (b, mut pb) = relay.authed(&key, "acme", "bob").await;
    let (e, mut pe) = relay.authed(&key, "acme", "eve").await;
    let epoch = create_with_members(&a, ch, &["bob", "eve"]).await;
    b.subscribe(ch, 0).await.unwrap();
    e.subscribe(ch, 0).await.unwrap();
    let m1 = a.send(ch, "m1", Kind::Application, epoch, b"before".to_vec()).await.unwrap();
    assert_eq!(next_deliver(&mut pe, T).await.unwrap().seq, m1.seq);
    assert_eq!(next_deliver(&mut pb, T).await.unwrap().seq, m1.seq);
    let removal = Commit {
        channel: ch.into(),
        client_msg_id: "remove-eve".into(),
        epoch,
        payload: b"remove".to_vec(),
        removed: vec!["eve".into()],
        ..Default::default()
    };
    let r = a.commit(removal).await.unwrap();
    // eve gets the commit that removes her (so her client learns it), then a non-fatal notice
    let d = next_deliver(&mut pe, T).await.unwrap();
    assert_eq!((d.seq, d.kind), (r.seq, Kind::Commit as i32));
    let notice = next_error(&mut pe, T).await.expect("a removal notice");
    assert_eq!((notice.code.as_str(), notice.fatal), ("SKYTALE_NOT_A_MEMBER", false));
    assert_eq!(next_deliver(&mut pb, T).await.unwrap().seq, r.seq);
    // later items reach bob, never eve
    let m2 = a.send(ch, "m2", Kind::Application, r.epoch, b"after".to_vec()).await.unwrap();
    assert_eq!(next_deliver(&mut pb, T).await.unwrap().seq, m2.seq);
    assert!(next_deliver(&mut pe, Duration::from_millis(300)).await.is_none());
    assert_eq!(code(e.send(ch, "e1", Kind::Application, r.epoch, b"x".to_vec()).await), "SKYTALE_NOT_A_MEMBER");
    assert_eq!(code(e.subscribe(ch, 0).await), "SKYTALE_NOT_A_MEMBER");
    assert_eq!(code(e.fetch(ch, 0, 0).await), "SKYTALE_NOT_A_MEMBER");
    assert_eq!(code(e.channel_state(ch).await), "SKYTALE_NOT_A_MEMBER");
    // her connection is otherwise fine
    e.ping().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_member_reads_only_after_the_commit_that_added_it() {
    let key = Keypair::generate();
    let relay = RelayProc::start("since", &key, &[]);
    let ch = "acme/team/history";
    let (a, _pa) = relay.authed(&key, "acme", "alice").await;
    a.create_channel(ch).await.unwrap();
    for i in 1..=3u32 {
        a.send(ch, &format!("old{i}"), Kind::Application, 0, b"before carol".to_vec()).await.unwrap();
    }
    let add = a.commit(add_commit(ch, "add-carol", 0, &["carol"])).await.unwrap();
    assert_eq!(add.seq, 4);
    let m = a.send(ch, "new", Kind::Application, add.epoch, b"for carol".to_vec()).await.unwrap();
    let (c, mut pc) = relay.authed(&key, "acme", "carol").await;
    for after in [0, 2, 4] {
        let (items, done) = c.fetch(ch, after, 0).await.unwrap();
        assert_eq!(items.iter().map(|d| d.seq).collect::<Vec<_>>(), vec![m.seq], "fetch after {after}");
        assert_eq!((done.last_seq, done.more), (m.seq, false));
    }
    c.subscribe(ch, 0).await.unwrap();
    let d = next_deliver(&mut pc, T).await.unwrap();
    assert_eq!((d.seq, d.payload.as_slice()), (m.seq, &b"for carol"[..]));
    assert!(next_deliver(&mut pc, Duration::from_millis(300)).await.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn welcome_recipients_must_be_added_and_added_lists_are_capped() {
    let key = Keypair::generate();
    let relay = RelayProc::start("recipients", &key, &[("SKYTALE_RELAY_MAX_COMMIT_ADDED", "3")]);
    let ch = "acme/team/adds";
    let (a, _pa) = relay.authed(&key, "acme", "alice").await;
    a.create_channel(ch).await.unwrap();
    let with = |id: &str, added: &[&str], recipients: &[&str]| Commit {
        channel: ch.into(),
        client_msg_id: id.into(),
        epoch: 0,
        payload: b"add".to_vec(),
        welcome: Some(WelcomeOut {
            recipients: recipients.iter().map(|r| r.to_string()).collect(),
            payload: b"welcome".to_vec(),
        }),
        added: added.iter().map(|r| r.to_string()).collect(),
        ..Default::default()
    };
    assert_eq!(code(a.commit(with("c1", &[], &["bob"])).await), "SKYTALE_INVALID_REQUEST");
    assert_eq!(code(a.commit(with("c2", &["carol"], &["bob", "carol"])).await), "SKYTALE_INVALID_REQUEST");
    assert_eq!(code(a.commit(with("c3", &["b", "c", "d", "e"], &["b"])).await), "SKYTALE_INVALID_REQUEST");
    assert_eq!(code(a.commit(with("c4", &["Not Valid!"], &["Not Valid!"])).await), "SKYTALE_INVALID_REQUEST");
    let state = a.channel_state(ch).await.unwrap();
    assert_eq!((state.epoch, state.last_seq), (0, 0), "refused commits change nothing");
    let ok = a.commit(with("c5", &["bob", "carol"], &["bob"])).await.unwrap();
    assert_eq!(ok.epoch, 1);
    // carol was added without a welcome (e.g. she joins otherwise): she is a member all the same
    let (c, _pc) = relay.authed(&key, "acme", "carol").await;
    c.subscribe(ch, 0).await.unwrap();
    let (b, _pb) = relay.authed(&key, "acme", "bob").await;
    assert_eq!(b.fetch_welcomes().await.unwrap().len(), 1);
    assert!(c.fetch_welcomes().await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_external_commit_needs_a_used_valid_invite() {
    let key = Keypair::generate();
    let relay = RelayProc::start("external", &key, &[]);
    let ch = "acme/team/open";
    let other = "acme/team/other";
    let (a, mut pa) = relay.authed(&key, "acme", "alice").await;
    a.create_channel(ch).await.unwrap();
    a.create_channel(other).await.unwrap();
    a.subscribe(ch, 0).await.unwrap();
    a.create_invite(invite(ch, "inv", b"auth", 3600)).await.unwrap();
    a.create_invite(invite(ch, "short", b"auth-s", 2)).await.unwrap();
    a.create_invite(invite(other, "inv-other", b"auth-o", 3600)).await.unwrap();

    // x used the invite (FetchInvite): only a commit adding exactly x, removing nobody, passes
    let (x, _px) = relay.authed(&key, "acme", "x-joiner").await;
    assert_eq!(code(x.commit(external(ch, "x0", 0, "x-joiner", "inv")).await), "SKYTALE_NOT_A_MEMBER");
    x.fetch_invite(ch, "inv", b"auth".to_vec()).await.unwrap();
    let mut two = external(ch, "x1", 0, "x-joiner", "inv");
    two.added.push("friend".into());
    assert_eq!(code(x.commit(two).await), "SKYTALE_NOT_A_MEMBER");
    let mut evict = external(ch, "x2", 0, "x-joiner", "inv");
    evict.removed.push("alice".into());
    assert_eq!(code(x.commit(evict).await), "SKYTALE_NOT_A_MEMBER");
    let mut not_me = external(ch, "x3", 0, "x-joiner", "inv");
    not_me.added = vec!["alice".into()];
    assert_eq!(code(x.commit(not_me).await), "SKYTALE_NOT_A_MEMBER");
    let joined = x.commit(external(ch, "x4", 0, "x-joiner", "inv")).await.unwrap();
    assert_eq!((joined.seq, joined.epoch), (1, 1));
    assert_eq!(next_deliver(&mut pa, T).await.unwrap().sender, "x-joiner");
    x.subscribe(ch, joined.seq).await.unwrap();
    x.send(ch, "x-hello", Kind::Application, 1, b"hi".to_vec()).await.unwrap();

    // an invite of another channel does not open this one
    let (w, _pw) = relay.authed(&key, "acme", "w-joiner").await;
    w.fetch_invite(other, "inv-other", b"auth-o".to_vec()).await.unwrap();
    assert_eq!(code(w.commit(external(ch, "w1", 1, "w-joiner", "inv-other")).await), "SKYTALE_NOT_A_MEMBER");

    // a revoked invite no longer admits, even someone who used it before
    let (y, _py) = relay.authed(&key, "acme", "y-joiner").await;
    y.send_join_request(ch, "y-join", "inv", b"auth".to_vec(), b"jr".to_vec()).await.unwrap();
    a.revoke_invite("inv").await.unwrap();
    assert_eq!(code(y.commit(external(ch, "y1", 1, "y-joiner", "inv")).await), "SKYTALE_INVITE_INVALID");

    // an expired one neither
    let (z, _pz) = relay.authed(&key, "acme", "z-joiner").await;
    z.fetch_invite(ch, "short", b"auth-s".to_vec()).await.unwrap();
    // wait (by polling the invite) until it has expired
    let deadline = Instant::now() + T;
    loop {
        match z.fetch_invite(ch, "short", b"auth-s".to_vec()).await {
            Err(e) if e.code() == "SKYTALE_INVITE_EXPIRED" => break,
            Err(e) => panic!("unexpected {e}"),
            Ok(_) => {
                assert!(Instant::now() < deadline, "the invite did not expire");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    assert_eq!(code(z.commit(external(ch, "z1", 1, "z-joiner", "short")).await), "SKYTALE_INVITE_EXPIRED");
    let state = a.channel_state(ch).await.unwrap();
    assert_eq!(state.epoch, 1, "no refused external commit moved the epoch");
    for (conn, name) in [(&y, "y"), (&z, "z"), (&w, "w")] {
        assert_eq!(code(conn.subscribe(ch, 0).await), "SKYTALE_NOT_A_MEMBER", "{name}");
    }
}

/// The tables of a relay store written before rosters (schema version 0), as a fixture.
const STORE_V0: &str = "
CREATE TABLE channels (name TEXT PRIMARY KEY, org TEXT NOT NULL, epoch INTEGER NOT NULL DEFAULT 0,
  last_seq INTEGER NOT NULL DEFAULT 0, created_ms INTEGER NOT NULL);
CREATE TABLE messages (channel TEXT NOT NULL, seq INTEGER NOT NULL, epoch INTEGER NOT NULL, kind INTEGER NOT NULL,
  sender TEXT NOT NULL, client_msg_id TEXT NOT NULL, payload BLOB NOT NULL, created_ms INTEGER NOT NULL,
  PRIMARY KEY (channel, seq)) WITHOUT ROWID;
CREATE UNIQUE INDEX messages_dedupe ON messages(channel, sender, client_msg_id) WHERE client_msg_id <> '';
CREATE INDEX messages_created ON messages(created_ms);
CREATE TABLE welcomes (id INTEGER PRIMARY KEY AUTOINCREMENT, org TEXT NOT NULL, recipient TEXT NOT NULL,
  channel TEXT NOT NULL, sender TEXT NOT NULL, commit_seq INTEGER NOT NULL, payload BLOB NOT NULL,
  created_ms INTEGER NOT NULL);
CREATE INDEX welcomes_recipient ON welcomes(org, recipient);
CREATE TABLE key_packages (id INTEGER PRIMARY KEY AUTOINCREMENT, org TEXT NOT NULL, identity TEXT NOT NULL,
  payload BLOB NOT NULL, created_ms INTEGER NOT NULL);
CREATE INDEX key_packages_identity ON key_packages(org, identity);
CREATE TABLE invites (id TEXT PRIMARY KEY, org TEXT NOT NULL, channel TEXT NOT NULL, auth_hash BLOB NOT NULL,
  max_uses INTEGER NOT NULL, expires_at INTEGER NOT NULL, group_info BLOB NOT NULL,
  revoked INTEGER NOT NULL DEFAULT 0, created_by TEXT NOT NULL, created_ms INTEGER NOT NULL);
CREATE INDEX invites_expires ON invites(expires_at);
CREATE TABLE invite_uses (invite_id TEXT NOT NULL, identity TEXT NOT NULL, used_ms INTEGER NOT NULL,
  PRIMARY KEY (invite_id, identity)) WITHOUT ROWID;
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_from_before_rosters_keeps_its_members() {
    if test_store() == "nats" {
        return; // a migration of the SQLite file: the JetStream store had rosters from the start
    }
    let key = Keypair::generate();
    let mut relay = RelayProc::start("migrate", &key, &[]);
    relay.kill9();
    // Replace the store with one written before rosters: alice committed and bob sent in
    // acme/old/chat, carol has a queued welcome; acme/old/empty has no history at all.
    let data = relay.dir.join("data");
    for f in ["relay.sqlite3", "relay.sqlite3-wal", "relay.sqlite3-shm"] {
        let _ = std::fs::remove_file(data.join(f));
    }
    let now_ms = now() * 1000;
    {
        let c = rusqlite::Connection::open(data.join("relay.sqlite3")).unwrap();
        c.execute_batch(STORE_V0).unwrap();
        c.execute_batch(&format!(
            "INSERT INTO channels VALUES ('acme/old/chat', 'acme', 1, 2, {now_ms}), ('acme/old/empty', 'acme', 0, 0, {now_ms});
             INSERT INTO messages VALUES ('acme/old/chat', 1, 0, 3, 'alice', 'c1', X'01', {now_ms}),
                                         ('acme/old/chat', 2, 1, 1, 'bob', 'm1', X'6869', {now_ms});
             INSERT INTO welcomes (org, recipient, channel, sender, commit_seq, payload, created_ms)
               VALUES ('acme', 'carol', 'acme/old/chat', 'alice', 1, X'77656c636f6d65', {now_ms});"
        ))
        .unwrap();
    }
    relay.restart();
    let (a, mut pa) = relay.authed(&key, "acme", "alice").await;
    a.subscribe("acme/old/chat", 0).await.unwrap();
    let d = next_deliver(&mut pa, T).await.unwrap();
    assert_eq!((d.seq, d.sender.as_str(), d.payload.as_slice()), (2, "bob", &b"hi"[..]));
    // carol's queued welcome survived (same id) and she is a member from the start
    let (c, mut pc) = relay.authed(&key, "acme", "carol").await;
    let f = next_push(&mut pc, T).await.expect("welcome");
    let Some(Body::Welcome(w)) = f.body else { panic!("expected a welcome, got {f:?}") };
    assert_eq!((w.welcome_id, w.payload.as_slice(), w.commit_seq, w.commit_epoch), (1, &b"welcome"[..], 1, 1));
    c.ack_welcome(w.welcome_id).await.unwrap();
    c.subscribe("acme/old/chat", w.commit_seq).await.unwrap();
    // strangers are not, and a channel without history or roster goes to whoever creates it first
    let (d, _pd) = relay.authed(&key, "acme", "dave").await;
    assert_eq!(code(d.subscribe("acme/old/chat", 0).await), "SKYTALE_NOT_A_MEMBER");
    assert_eq!(code(d.create_channel("acme/old/chat").await), "SKYTALE_CHANNEL_EXISTS");
    let claimed = d.create_channel("acme/old/empty").await.unwrap();
    assert_eq!((claimed.created, claimed.last_seq), (false, 0));
    d.subscribe("acme/old/empty", 0).await.unwrap();
    let (e, _pe) = relay.authed(&key, "acme", "erin").await;
    assert_eq!(code(e.create_channel("acme/old/empty").await), "SKYTALE_CHANNEL_EXISTS");
    // new welcome ids continue after the old ones
    let mut add = add_commit("acme/old/chat", "add-fay", 1, &["fay"]);
    add.welcome = Some(WelcomeOut { recipients: vec!["fay".into()], payload: b"w2".to_vec() });
    a.commit(add).await.unwrap();
    let (fy, _pf) = relay.authed(&key, "acme", "fay").await;
    let ws = fy.fetch_welcomes().await.unwrap();
    assert_eq!(ws.len(), 1);
    assert!(ws[0].welcome_id > 1);
}
