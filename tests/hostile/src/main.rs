//! `skytale-hostile`: what an attacker with a valid API key of the org (or a compromised member)
//! can do with its own code, for the end-to-end tests. It uses the real core and wire protocol
//! but skips every check an honest SDK makes on its own side. Never shipped.
//!
//! ```text
//! skytale-hostile publish-forged --dir D --identity bob --org acme --relay ADDR --token JWT --forge self
//! skytale-hostile publish-forged --dir D --identity bob --relay ADDR --token JWT --forge other-org --api URL --api-key KEY
//! skytale-hostile commit-add --dir MALLORY_DIR --identity mallory --keystore-key HEX --channel CH
//!                            --relay ADDR --token JWT --org acme --forged-identity bob
//! skytale-hostile member-add --dir BOB_DIR --identity bob --keystore-key HEX --channel CH
//!                            --relay ADDR --token JWT --add carol
//! skytale-hostile propose-update --dir BOB_DIR --identity bob --keystore-key HEX --channel CH
//!                                --relay ADDR --token JWT
//! skytale-hostile probe --relay ADDR --token JWT [--channel CH] [--epoch E] [--invite-id ID]
//! skytale-hostile --help
//! ```
//! Prints one JSON line: `{"ok":true,…}` or `{"ok":false,"code":…,"message":…}`. The keys of
//! `probe` are listed in [`USAGE`] (`--help`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use ed25519_dalek::{Signer, SigningKey};
use skytale_core::{Agent, AgentOptions, CommitMode, KeystoreSecret, SecretKey32, CREDENTIAL_AUD, CREDENTIAL_TYP};
use skytale_proto::conn::{client_endpoint, RelayAddr, RelayConnection};
use skytale_proto::frames::{Commit, WelcomeOut};

type Res<T> = Result<T, (String, String)>;

/// `--help` text: the commands and the JSON keys each prints.
const USAGE: &str = "\
skytale-hostile: a hostile agent for the end-to-end tests (never shipped).

commands (each prints one JSON line; {\"ok\":false,\"code\",\"message\"} and exit 1 on failure):
  publish-forged --dir D --identity ID --relay ADDR --token JWT --forge self --org ORG
  publish-forged --dir D --identity ID --relay ADDR --token JWT --forge other-org --api URL --api-key KEY
      -> {ok, published}
  commit-add --dir D --identity ID --keystore-key HEX --channel CH --relay ADDR --token JWT
             --org ORG --forged-identity ID
      -> {ok, seq, epoch}
  member-add --dir D --identity ID --keystore-key HEX --channel CH --relay ADDR --token JWT --add ID
      -> {ok, seq, epoch}
  propose-update --dir D --identity ID --keystore-key HEX --channel CH --relay ADDR --token JWT
      -> {ok, seq}   (an MLS Update proposal of the member's leaf, sent as a Proposal item)
  probe --relay ADDR --token JWT [--channel CH] [--epoch E] [--invite-id ID]
      Authenticates with the token; without --channel prints {ok: true}. With --channel it tries,
      in this order, every request on CH and reports each outcome as \"ok\" or the error code:
        fetch      Fetch{CH, after 0}
        subscribe  Subscribe{CH, after 0}
        state      ChannelState{CH}
        create     CreateChannel{CH + \"-probe\"} (a new channel)
        send       Send{Application, epoch E}
        proposal   Send{Proposal, epoch E}
        commit     Commit{epoch E, garbage payload}
        external   Commit{epoch E, added: [the token's identity], invite_id: ID or \"\"}
        invite     CreateInvite{CH, id \"probe-invite\"}
        update_invite  UpdateInvite{ID}   (only with --invite-id)
        revoke_invite  RevokeInvite{ID}   (only with --invite-id; last, so the others see the invite)
      E defaults to 0. Keys added later never change the meaning of the earlier ones.
";

fn fail<E: std::fmt::Display>(code: &str) -> impl FnOnce(E) -> (String, String) + '_ {
    move |e| (code.to_string(), e.to_string())
}

fn args() -> (String, HashMap<String, String>) {
    let mut it = std::env::args().skip(1);
    let cmd = it.next().unwrap_or_default();
    let mut map = HashMap::new();
    while let Some(k) = it.next() {
        if let Some(name) = k.strip_prefix("--") {
            map.insert(name.to_string(), it.next().unwrap_or_default());
        }
    }
    (cmd, map)
}

fn arg<'a>(m: &'a HashMap<String, String>, k: &str) -> Res<&'a str> {
    m.get(k).map(String::as_str).ok_or_else(|| ("USAGE".to_string(), format!("--{k} is required")))
}

fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

fn fresh_key() -> KeystoreSecret {
    KeystoreSecret::Key(SecretKey32::from_bytes(rand::random::<[u8; 32]>()))
}

/// A credential that looks like the API server's but is signed by a key the attacker made up.
fn self_signed_credential(org: &str, identity: &str, signature_key: &[u8]) -> String {
    let forger = SigningKey::from_bytes(&rand::random::<[u8; 32]>());
    let header = serde_json::json!({"alg": "EdDSA", "typ": CREDENTIAL_TYP, "kid": "forged"});
    let claims = serde_json::json!({
        "iss": "skytale-api", "aud": CREDENTIAL_AUD, "sub": identity, "identity": identity, "org": org,
        "sig_key": URL_SAFE_NO_PAD.encode(signature_key), "iat": now(), "exp": now() + 86_400, "jti": "forged",
    });
    let h = URL_SAFE_NO_PAD.encode(header.to_string());
    let c = URL_SAFE_NO_PAD.encode(claims.to_string());
    let sig = forger.sign(format!("{h}.{c}").as_bytes());
    format!("{h}.{c}.{}", URL_SAFE_NO_PAD.encode(sig.to_bytes()))
}

/// An agent holding a self-signed credential for `identity` in `org`.
fn forged_agent(dir: &Path, identity: &str, org: &str) -> Res<Agent> {
    let agent = Agent::open(AgentOptions { data_dir: dir, identity, secret: &fresh_key() }).map_err(fail("CORE"))?;
    let key = agent.signature_public_key().map_err(fail("CORE"))?;
    agent.set_credential(&self_signed_credential(org, identity, &key)).map_err(fail("CORE"))?;
    Ok(agent)
}

async fn relay(addr: &str, token: &str) -> Res<Arc<RelayConnection>> {
    Ok(relay_as(addr, token).await?.0)
}

/// A connection authenticated with `token`, and the identity the relay bound to it.
async fn relay_as(addr: &str, token: &str) -> Res<(Arc<RelayConnection>, String)> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let addr: RelayAddr = addr.parse().map_err(fail("ADDR"))?;
    let bind = "0.0.0.0:0".parse().map_err(fail("ADDR"))?;
    let endpoint = client_endpoint(bind).await.map_err(fail("TRANSPORT"))?;
    let (conn, pushes) = RelayConnection::connect(&endpoint, &addr).await.map_err(fail("TRANSPORT"))?;
    std::mem::forget(pushes);
    std::mem::forget(endpoint);
    let ok = conn.auth(token, "").await.map_err(|e| (e.code().to_string(), e.to_string()))?;
    Ok((Arc::new(conn), ok.identity))
}

async fn publish_forged(m: &HashMap<String, String>) -> Res<serde_json::Value> {
    let dir = PathBuf::from(arg(m, "dir")?);
    let identity = arg(m, "identity")?;
    let agent = match arg(m, "forge")? {
        "self" => forged_agent(&dir, identity, arg(m, "org")?)?,
        "other-org" => {
            // A real credential for the same identity, but from another org's account.
            let agent =
                Agent::open(AgentOptions { data_dir: &dir, identity, secret: &fresh_key() }).map_err(fail("CORE"))?;
            let api_key = skytale_core::Zeroizing::new(arg(m, "api-key")?.to_string());
            let source = skytale_client::TokenSource::for_identity(arg(m, "api")?, api_key, identity)
                .map_err(|e| (e.code().to_string(), e.to_string()))?;
            source.enroll(&agent).await.map_err(|e| (e.code().to_string(), e.to_string()))?;
            agent
        }
        other => return Err(("USAGE".into(), format!("unknown --forge {other}"))),
    };
    let kps = agent.generate_key_packages(3).map_err(fail("CORE"))?;
    let conn = relay(arg(m, "relay")?, arg(m, "token")?).await?;
    let held = conn.publish_key_packages(kps).await.map_err(|e| (e.code().to_string(), e.to_string()))?;
    Ok(serde_json::json!({ "ok": true, "published": held }))
}

async fn commit_add(m: &HashMap<String, String>) -> Res<serde_json::Value> {
    let dir = PathBuf::from(arg(m, "dir")?);
    let identity = arg(m, "identity")?;
    let channel = arg(m, "channel")?;
    let secret = keystore_secret(m)?;
    // The member's own SDK would refuse to add an uncertified leaf: drop its pinned issuer keys
    // (an attacker patches its client; this is the same).
    {
        let agent = Agent::open(AgentOptions { data_dir: &dir, identity, secret: &secret }).map_err(fail("CORE"))?;
        agent.kv_delete("trust/anchors").map_err(fail("CORE"))?;
    }
    let agent = Agent::open(AgentOptions { data_dir: &dir, identity, secret: &secret }).map_err(fail("CORE"))?;
    let forged_identity = arg(m, "forged-identity")?;
    let forged_dir = dir.join(format!("forged-{forged_identity}-{}", rand::random::<u32>()));
    let forged = forged_agent(&forged_dir, forged_identity, arg(m, "org")?)?;
    let kp = forged.generate_key_packages(1).map_err(fail("CORE"))?;
    let conn = relay(arg(m, "relay")?, arg(m, "token")?).await?;
    let epoch = conn.channel_state(channel).await.map_err(|e| (e.code().to_string(), e.to_string()))?.epoch;
    let out = agent.add_members_bypassing_policy(channel, &kp, CommitMode::Stage).map_err(fail("CORE"))?;
    let commit = Commit {
        channel: channel.to_string(),
        client_msg_id: hex::encode(rand::random::<[u8; 16]>()),
        epoch,
        payload: out.commit,
        welcome: out.welcome.map(|w| WelcomeOut { recipients: vec![forged_identity.to_string()], payload: w }),
        added: vec![forged_identity.to_string()],
        ..Default::default()
    };
    let ack = conn.commit(commit).await.map_err(|e| (e.code().to_string(), e.to_string()))?;
    Ok(serde_json::json!({ "ok": true, "seq": ack.seq, "epoch": ack.epoch }))
}

/// `--keystore-key` (64 hex characters) as the keystore secret.
fn keystore_secret(m: &HashMap<String, String>) -> Res<KeystoreSecret> {
    let key: [u8; 32] = hex::decode(arg(m, "keystore-key")?)
        .ok()
        .and_then(|k| k.try_into().ok())
        .ok_or_else(|| ("USAGE".to_string(), "--keystore-key must be 64 hex chars".to_string()))?;
    Ok(KeystoreSecret::Key(SecretKey32::from_bytes(key)))
}

/// The member's own keystore (`--dir`, `--identity`, `--keystore-key`).
fn open_member(m: &HashMap<String, String>) -> Res<Agent> {
    let dir = PathBuf::from(arg(m, "dir")?);
    let secret = keystore_secret(m)?;
    Agent::open(AgentOptions { data_dir: &dir, identity: arg(m, "identity")?, secret: &secret }).map_err(fail("CORE"))
}

/// A member adds a real, certified identity although the channel policy does not let it (its own
/// SDK would refuse): the other members must reject the commit.
async fn member_add(m: &HashMap<String, String>) -> Res<serde_json::Value> {
    let channel = arg(m, "channel")?;
    let agent = open_member(m)?;
    let added = arg(m, "add")?;
    let conn = relay(arg(m, "relay")?, arg(m, "token")?).await?;
    let kp = conn.claim_key_package(added).await.map_err(|e| (e.code().to_string(), e.to_string()))?;
    let epoch = conn.channel_state(channel).await.map_err(|e| (e.code().to_string(), e.to_string()))?.epoch;
    let out = agent.add_members_bypassing_policy(channel, &[kp], CommitMode::Stage).map_err(fail("CORE"))?;
    let commit = Commit {
        channel: channel.to_string(),
        client_msg_id: hex::encode(rand::random::<[u8; 16]>()),
        epoch,
        payload: out.commit,
        welcome: out.welcome.map(|w| WelcomeOut { recipients: vec![added.to_string()], payload: w }),
        added: vec![added.to_string()],
        ..Default::default()
    };
    let ack = conn.commit(commit).await.map_err(|e| (e.code().to_string(), e.to_string()))?;
    agent.clear_pending_commit(channel).map_err(fail("CORE"))?;
    Ok(serde_json::json!({ "ok": true, "seq": ack.seq, "epoch": ack.epoch }))
}

/// A member proposes an update of its own leaf (the SDK only ever proposes leaving): the other
/// members must refuse it and keep sending.
async fn propose_update(m: &HashMap<String, String>) -> Res<serde_json::Value> {
    let channel = arg(m, "channel")?;
    let agent = open_member(m)?;
    let conn = relay(arg(m, "relay")?, arg(m, "token")?).await?;
    let epoch = conn.channel_state(channel).await.map_err(|e| (e.code().to_string(), e.to_string()))?.epoch;
    let proposal = agent.update_proposal_unsupported(channel).map_err(fail("CORE"))?;
    let id = hex::encode(rand::random::<[u8; 16]>());
    let ack = conn
        .send(channel, &id, skytale_proto::frames::Kind::Proposal, epoch, proposal)
        .await
        .map_err(|e| (e.code().to_string(), e.to_string()))?;
    Ok(serde_json::json!({ "ok": true, "seq": ack.seq }))
}

/// Authenticates with `--token`; with `--channel`, tries every request on it and reports each
/// outcome (`"ok"` or the error code). See [`USAGE`] for the keys.
async fn probe(m: &HashMap<String, String>) -> Res<serde_json::Value> {
    let (conn, me) = relay_as(arg(m, "relay")?, arg(m, "token")?).await?;
    let Some(channel) = m.get("channel") else {
        return Ok(serde_json::json!({ "ok": true }));
    };
    let epoch: u64 = match m.get("epoch") {
        Some(e) => e.parse().map_err(|_| ("USAGE".to_string(), "--epoch must be a number".to_string()))?,
        None => 0,
    };
    let invite_id = m.get("invite-id").cloned();
    let outcome = |r: Result<(), skytale_proto::ProtoError>| match r {
        Ok(()) => "ok".to_string(),
        Err(e) => e.code().to_string(),
    };
    use skytale_proto::frames::Kind;
    let mut out = serde_json::Map::new();
    out.insert("ok".into(), true.into());
    out.insert("fetch".into(), outcome(conn.fetch(channel, 0, 0).await.map(|_| ())).into());
    out.insert("subscribe".into(), outcome(conn.subscribe(channel, 0).await.map(|_| ())).into());
    out.insert("state".into(), outcome(conn.channel_state(channel).await.map(|_| ())).into());
    let create = outcome(conn.create_channel(&format!("{channel}-probe")).await.map(|_| ()));
    out.insert("create".into(), create.into());
    let send = outcome(conn.send(channel, "probe-send", Kind::Application, epoch, b"x".to_vec()).await.map(|_| ()));
    out.insert("send".into(), send.into());
    let proposal =
        outcome(conn.send(channel, "probe-proposal", Kind::Proposal, epoch, b"p".to_vec()).await.map(|_| ()));
    out.insert("proposal".into(), proposal.into());
    let commit = Commit {
        channel: channel.clone(),
        client_msg_id: "probe-commit".into(),
        epoch,
        payload: b"c".to_vec(),
        welcome: None,
        ..Default::default()
    };
    out.insert("commit".into(), outcome(conn.commit(commit).await.map(|_| ())).into());
    let external = Commit {
        channel: channel.clone(),
        client_msg_id: "probe-external".into(),
        epoch,
        payload: b"e".to_vec(),
        added: vec![me.clone()],
        invite_id: invite_id.clone().unwrap_or_default(),
        ..Default::default()
    };
    out.insert("external".into(), outcome(conn.commit(external).await.map(|_| ())).into());
    let invite = skytale_proto::frames::CreateInvite {
        channel: channel.clone(),
        invite_id: "probe-invite".into(),
        invite_auth: vec![0; 32],
        max_uses: 1,
        expires_at: now() + 60,
        group_info: vec![1],
    };
    out.insert("invite".into(), outcome(conn.create_invite(invite).await).into());
    if let Some(id) = invite_id {
        out.insert("update_invite".into(), outcome(conn.update_invite(&id, b"probe".to_vec()).await).into());
        out.insert("revoke_invite".into(), outcome(conn.revoke_invite(&id).await).into());
    }
    Ok(serde_json::Value::Object(out))
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let (cmd, m) = args();
    let res = match cmd.as_str() {
        "publish-forged" => publish_forged(&m).await,
        "commit-add" => commit_add(&m).await,
        "member-add" => member_add(&m).await,
        "propose-update" => propose_update(&m).await,
        "probe" => probe(&m).await,
        "--help" | "-h" | "help" => {
            print!("{USAGE}");
            return;
        }
        _ => Err((
            "USAGE".into(),
            "commands: publish-forged, commit-add, member-add, propose-update, probe (see --help)".into(),
        )),
    };
    match res {
        Ok(v) => println!("{v}"),
        Err((code, message)) => {
            println!("{}", serde_json::json!({ "ok": false, "code": code, "message": message }));
            std::process::exit(1);
        }
    }
}
