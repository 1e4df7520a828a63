//! Test harness: starts the real `skytale-relay` binary, mints tokens with a test Ed25519 key,
//! and connects with `skytale_proto::conn`.
#![allow(dead_code)]

pub mod nats;
pub use nats::*;

use std::io::{BufRead, BufReader, Read, Write};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use skytale_proto::conn::{client_endpoint, PushReceiver, RelayAddr, RelayConnection};
use skytale_proto::frames::{Body, Deliver, Frame};

pub const ISSUER: &str = "skytale-test";

pub fn b64url(data: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        let chars = chunk.len() + 1;
        for i in 0..chars {
            out.push(T[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

pub fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

/// A test signing key (what the API server would hold).
pub struct Keypair {
    enc: EncodingKey,
    /// base64url raw public key (JWK `x`).
    pub x: String,
}

impl Keypair {
    pub fn generate() -> Keypair {
        let seed: [u8; 32] = rand::random();
        let sk = ed25519_dalek::SigningKey::from_bytes(&seed);
        let x = b64url(sk.verifying_key().as_bytes());
        let mut der =
            vec![0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20];
        der.extend_from_slice(&seed);
        Keypair { enc: EncodingKey::from_ed_der(&der), x }
    }

    pub fn sign(&self, claims: &serde_json::Value) -> String {
        self.sign_kid(claims, "test-kid")
    }

    pub fn sign_kid(&self, claims: &serde_json::Value, kid: &str) -> String {
        let mut h = Header::new(Algorithm::EdDSA);
        h.kid = Some(kid.to_string());
        jsonwebtoken::encode(&h, claims, &self.enc).unwrap()
    }

    /// This key as a JWK of the API server's JWKS.
    pub fn jwk(&self, kid: &str) -> serde_json::Value {
        serde_json::json!({"kty": "OKP", "crv": "Ed25519", "x": self.x, "kid": kid, "alg": "EdDSA", "use": "sig"})
    }

    /// A valid token for `org`/`sub`.
    pub fn token(&self, org: &str, sub: &str) -> String {
        self.sign(&claims(org, sub, 3600))
    }
}

pub fn claims(org: &str, sub: &str, ttl: i64) -> serde_json::Value {
    let now = now() as i64;
    serde_json::json!({
        "iss": ISSUER, "aud": "skytale-relay", "sub": sub, "org": org,
        "identity": sub, "scope": "channels:rw", "jti": format!("jti-{}", rand::random::<u64>()),
        "iat": now, "exp": now + ttl,
    })
}

pub struct RelayProc {
    child: Option<Child>,
    pub addr: RelayAddr,
    pub addr_str: String,
    pub http: String,
    pub dir: PathBuf,
    pub log: PathBuf,
    key_x: String,
    env: Vec<(String, String)>,
    /// The NATS server of a relay on the JetStream store (`SKYTALE_TEST_RELAY_STORE=nats`).
    pub nats: Option<NatsCluster>,
}

/// The store the relay tests run against: `SKYTALE_TEST_RELAY_STORE` = `sqlite` (default) or
/// `nats` (each relay gets its own JetStream server).
pub fn test_store() -> String {
    std::env::var("SKYTALE_TEST_RELAY_STORE").unwrap_or_else(|_| "sqlite".to_string())
}

pub fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!(
        "skytale-relay-test-{name}-{}-{}",
        std::process::id(),
        rand::random::<u32>()
    ));
    std::fs::create_dir_all(&d).unwrap();
    d
}

impl RelayProc {
    pub fn start(name: &str, key: &Keypair, env: &[(&str, &str)]) -> RelayProc {
        Self::start_with_key(name, key.x.clone(), env)
    }

    /// `key_x` empty = no configured key (use a JWKS URL from `env`).
    pub fn start_with_key(name: &str, key_x: String, env: &[(&str, &str)]) -> RelayProc {
        let dir = temp_dir(name);
        let mut env: Vec<(String, String)> = env.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect();
        let nats = if test_store() == "nats" && !env.iter().any(|(k, _)| k == "SKYTALE_RELAY_STORE") {
            let n = NatsCluster::start(1);
            env.push(("SKYTALE_RELAY_STORE".to_string(), "nats".to_string()));
            env.push(("SKYTALE_RELAY_NATS_URL".to_string(), n.urls()));
            Some(n)
        } else {
            None
        };
        let mut r = RelayProc {
            child: None,
            addr: placeholder_addr(),
            addr_str: String::new(),
            http: String::new(),
            dir,
            log: PathBuf::new(),
            key_x,
            env,
            nats,
        };
        r.spawn();
        r
    }

    fn spawn(&mut self) {
        let (dir, key_x, env) = (self.dir.clone(), self.key_x.clone(), self.env.clone());
        let log = dir.join(format!("relay-{}.log", rand::random::<u32>()));
        let logf = std::fs::File::create(&log).unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_skytale-relay"));
        cmd.env_clear()
            .env("SKYTALE_RELAY_DATA_DIR", dir.join("data"))
            .env("SKYTALE_RELAY_LISTEN", "127.0.0.1:0")
            .env("SKYTALE_RELAY_HTTP_LISTEN", "127.0.0.1:0")
            .env("SKYTALE_RELAY_PUBLIC_KEY", &key_x)
            .env("SKYTALE_RELAY_ISSUER", ISSUER)
            .env("RUST_LOG", "info,skytale_relay=trace")
            .stdout(Stdio::piped())
            .stderr(Stdio::from(logf))
            .stdin(Stdio::null());
        for (k, v) in &env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn relay");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut r = BufReader::new(stdout);
            let mut line = String::new();
            let _ = r.read_line(&mut line);
            let _ = tx.send(line);
            // keep draining
            let mut sink = Vec::new();
            let _ = r.read_to_end(&mut sink);
        });
        let line = rx.recv_timeout(Duration::from_secs(30)).unwrap_or_else(|_| {
            panic!("relay did not start; log: {}", std::fs::read_to_string(&log).unwrap_or_default())
        });
        let parts: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(
            parts.len(),
            4,
            "unexpected start line {line:?}; log: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        assert_eq!(&parts[..2], &["skytale-relay", "listening"]);
        self.addr_str = parts[2].to_string();
        self.addr = self.addr_str.parse().unwrap();
        self.http = parts[3].to_string();
        self.log = log;
        self.child = Some(child);
    }

    /// The relay's process id (while it runs).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("relay running").id()
    }

    /// SIGKILL the relay.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill(); // SIGKILL on unix
            let _ = c.wait();
        }
    }

    /// Starts the relay again on the same data dir (new ports).
    pub fn restart(&mut self) {
        self.kill9();
        self.spawn();
    }

    pub fn logs(&self) -> String {
        let mut s = String::new();
        if let Ok(rd) = std::fs::read_dir(&self.dir) {
            for e in rd.flatten() {
                if e.file_name().to_string_lossy().ends_with(".log") {
                    s.push_str(&std::fs::read_to_string(e.path()).unwrap_or_default());
                }
            }
        }
        s
    }

    pub fn http_get(&self, path: &str) -> (u16, String) {
        let hostport = self.http.trim_start_matches("http://");
        let mut s = std::net::TcpStream::connect(hostport).unwrap();
        write!(s, "GET {path} HTTP/1.1\r\nhost: {hostport}\r\nconnection: close\r\n\r\n").unwrap();
        let mut resp = String::new();
        s.read_to_string(&mut resp).unwrap();
        let status: u16 = resp.split_whitespace().nth(1).unwrap().parse().unwrap();
        let body = resp.split_once("\r\n\r\n").map(|x| x.1.to_string()).unwrap_or_default();
        (status, body)
    }

    pub async fn connect(&self) -> (RelayConnection, PushReceiver) {
        let ep = client_endpoint("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let (c, p) = RelayConnection::connect(&ep, &self.addr).await.unwrap();
        // keep the endpoint alive as long as the test runs
        std::mem::forget(ep);
        (c, p)
    }

    pub async fn authed(&self, key: &Keypair, org: &str, identity: &str) -> (RelayConnection, PushReceiver) {
        let (c, p) = self.connect().await;
        let ok = c.auth(&key.token(org, identity), identity).await.unwrap();
        assert_eq!(ok.identity, identity);
        (c, p)
    }
}

/// Connects to a relay address; returns the error (a dead node) instead of panicking.
pub async fn try_connect(addr: &RelayAddr) -> Result<(RelayConnection, PushReceiver), skytale_proto::ProtoError> {
    let ep = client_endpoint("127.0.0.1:0".parse().unwrap()).await?;
    let r = RelayConnection::connect(&ep, addr).await;
    // keep the endpoint alive as long as the test runs
    std::mem::forget(ep);
    r
}

fn placeholder_addr() -> RelayAddr {
    RelayAddr { endpoint_id: iroh::SecretKey::generate().public(), socket_addr: "127.0.0.1:1".parse().unwrap() }
}

impl Drop for RelayProc {
    fn drop(&mut self) {
        self.kill9();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Next pushed Deliver within `t`.
pub async fn next_deliver(p: &mut PushReceiver, t: Duration) -> Option<Deliver> {
    loop {
        match tokio::time::timeout(t, p.recv()).await {
            Ok(Some(Frame { body: Some(Body::Deliver(d)), .. })) => return Some(d),
            Ok(Some(_)) => continue,
            _ => return None,
        }
    }
}

/// Next pushed frame within `t`.
pub async fn next_push(p: &mut PushReceiver, t: Duration) -> Option<Frame> {
    tokio::time::timeout(t, p.recv()).await.ok().flatten()
}

/// A tiny JWKS HTTP server whose document can be replaced; counts requests.
pub struct JwksServer {
    pub url: String,
    pub doc: std::sync::Arc<std::sync::Mutex<String>>,
    pub hits: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    /// The document served at `/v1/revocations` (the relay's revocation feed).
    pub revocations: std::sync::Arc<std::sync::Mutex<String>>,
}

impl JwksServer {
    pub fn start(keys: Vec<serde_json::Value>) -> JwksServer {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/.well-known/jwks.json", l.local_addr().unwrap());
        let doc = std::sync::Arc::new(std::sync::Mutex::new(serde_json::json!({ "keys": keys }).to_string()));
        let hits = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let revocations =
            std::sync::Arc::new(std::sync::Mutex::new(r#"{"cursor":0,"apiKeys":[],"agents":[]}"#.to_string()));
        let (d, h, r) = (doc.clone(), hits.clone(), revocations.clone());
        std::thread::spawn(move || {
            for s in l.incoming() {
                let Ok(mut s) = s else { continue };
                let mut buf = [0u8; 4096];
                let n = s.read(&mut buf).unwrap_or(0);
                let body = if buf[..n].starts_with(b"GET /v1/revocations") {
                    r.lock().unwrap().clone()
                } else {
                    h.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    d.lock().unwrap().clone()
                };
                let _ = write!(
                    s,
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{}",
                    body.len(),
                    body
                );
            }
        });
        JwksServer { url, doc, hits, revocations }
    }

    pub fn set(&self, keys: Vec<serde_json::Value>) {
        *self.doc.lock().unwrap() = serde_json::json!({ "keys": keys }).to_string();
    }
}

/// A commit (at `epoch`) that adds `members` to `channel`'s roster, without a welcome.
pub fn add_commit(channel: &str, id: &str, epoch: u64, members: &[&str]) -> skytale_proto::frames::Commit {
    skytale_proto::frames::Commit {
        channel: channel.into(),
        client_msg_id: id.into(),
        epoch,
        payload: format!("commit-{id}").into_bytes(),
        added: members.iter().map(|m| m.to_string()).collect(),
        ..Default::default()
    }
}

/// Creates `channel` (the caller is its first member) and, if `members` is not empty, adds them
/// with one commit at epoch 0. Returns the channel's epoch afterwards (0 or 1).
pub async fn create_with_members(c: &RelayConnection, channel: &str, members: &[&str]) -> u64 {
    c.create_channel(channel).await.unwrap();
    if members.is_empty() {
        return 0;
    }
    c.commit(add_commit(channel, "setup-add", 0, members)).await.unwrap().epoch
}

/// A counter or labelled counter line of `/metrics` (`name` includes the labels, if any).
pub fn metric(metrics: &str, name: &str) -> u64 {
    metrics
        .lines()
        .find(|l| l.starts_with(&format!("{name} ")))
        .and_then(|l| l.split_whitespace().last())
        .unwrap_or_else(|| panic!("{name} missing in {metrics}"))
        .parse()
        .unwrap()
}

/// `skytale_relay_refusals_total{code=…,reason=…}`.
pub fn refusals(metrics: &str, code: &str, reason: &str) -> u64 {
    metric(metrics, &format!("skytale_relay_refusals_total{{code=\"{code}\",reason=\"{reason}\"}}"))
}
