//! `skytale-mitm`: an adversarial relay for the end-to-end tests (issue #10). It is a QUIC
//! man-in-the-middle between clients and the real relay: an iroh endpoint that accepts client
//! connections with the relay's ALPN and, per client connection, opens its own connection to
//! the real relay and forwards frames both ways, decoded with `skytale-proto` so that scripted
//! faults can target frame kinds, channels, identities and seqs. It sees what a compromised
//! relay sees (routing metadata, opaque ciphertext). Never shipped.
//!
//! ```text
//! skytale-mitm --relay iroh://<relay-id>@127.0.0.1:4433 [--listen 127.0.0.1:0]
//! ```
//! Prints `skytale-mitm listening iroh://<id>@127.0.0.1:<port>` once ready; agents use that as
//! their relay. Controlled with JSON lines on stdin, one JSON answer per line on stdout
//! (`{"id":…,"ok":true,"value":…}` or `{"id":…,"ok":false,"message":…}`):
//!
//! - `{"op":"add","rule":{…}}` → the rule's index (see [`rules`] for the rule format);
//! - `{"op":"clear"}` removes every rule (frames pass untouched again);
//! - `{"op":"stats"}` → each rule with its `matched`/`fired` counts, frames forwarded each way,
//!   connections by identity, refused commits seen;
//! - `{"op":"inject","to":"bob","channel":…,"payload":"garbage"|"replay"|"refused",
//!   "seq":…,"replay_seq":…,"kind":"application"|"commit","epoch":…,"sender":…}` pushes a
//!   made-up `Deliver` to every connection of `to` (default seq: the channel's last + 1;
//!   `replay`: the payload of the delivery `replay_seq`; `refused`: a commit the relay refused).

mod rules;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use iroh::endpoint::{Connection, ConnectionError, RecvStream, SendStream};
use iroh::EndpointAddr;
use rules::{Action, Dir, Rule};
use serde_json::{json, Value};
use skytale_proto::codec::{decode_frame, encode_frame, read_frame_bytes};
use skytale_proto::conn::{closed_endpoint, RelayAddr};
use skytale_proto::frames::{Ack, Body, Commit, Deliver, Frame, Kind};
use skytale_proto::{ALPN, DEFAULT_MAX_FRAME_SIZE, RELAY_FRAME_ALLOWANCE};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

/// Largest frame forwarded either way.
const MAX_FRAME: usize = DEFAULT_MAX_FRAME_SIZE + 2 * RELAY_FRAME_ALLOWANCE;
/// How long a reordered frame waits for a next frame before it is sent anyway.
const REORDER_HOLD: Duration = Duration::from_millis(1000);
/// How long a `substitute` rule waits for a refused commit of the delivered commit's epoch.
const SUBSTITUTE_WAIT: Duration = Duration::from_secs(5);

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// One side of a proxied connection: frames written in order.
struct Writer {
    stream: tokio::sync::Mutex<SendStream>,
}

impl Writer {
    async fn write(&self, frame: &Frame) -> bool {
        let Ok(bytes) = encode_frame(frame, MAX_FRAME) else { return false };
        self.stream.lock().await.write_all(&bytes).await.is_ok()
    }
}

/// A client connection and its connection to the real relay.
struct Conn {
    identity: Mutex<String>,
    to_client: Writer,
    to_relay: Writer,
    /// `Commit` requests in flight (request id → commit), to learn which ones the relay refused.
    commits: Mutex<HashMap<u64, Commit>>,
    /// A frame held by a `reorder` rule, per direction (0: to client, 1: to relay).
    held: [Mutex<Option<Frame>>; 2],
}

impl Conn {
    fn writer(&self, dir: Dir) -> &Writer {
        match dir {
            Dir::ToClient => &self.to_client,
            Dir::ToRelay => &self.to_relay,
        }
    }

    fn held(&self, dir: Dir) -> &Mutex<Option<Frame>> {
        &self.held[if dir == Dir::ToClient { 0 } else { 1 }]
    }

    /// Writes the frame, then a frame held back by `reorder` (now overtaken).
    async fn forward(&self, dir: Dir, frame: &Frame) -> bool {
        let ok = self.writer(dir).write(frame).await;
        let held = lock(self.held(dir)).take();
        if let Some(h) = held {
            return self.writer(dir).write(&h).await && ok;
        }
        ok
    }
}

/// A commit the relay refused: (epoch, payload, committer).
type Refused = (u64, Vec<u8>, String);

#[derive(Default)]
struct Proxy {
    rules: Mutex<Vec<Rule>>,
    conns: Mutex<HashMap<u64, Arc<Conn>>>,
    next_conn: AtomicU64,
    /// Deliveries seen per channel (seq → item), for replays and injections.
    seen: Mutex<HashMap<String, BTreeMap<u64, Deliver>>>,
    /// Commits the relay refused, per channel: (epoch, payload, committer).
    refused: Mutex<HashMap<String, Vec<Refused>>>,
    /// Highest seq seen per channel (deliveries and acks).
    last_seq: Mutex<HashMap<String, u64>>,
    forwarded: [AtomicU64; 2],
}

impl Proxy {
    fn note_seq(&self, channel: &str, seq: u64) {
        let mut m = lock(&self.last_seq);
        let e = m.entry(channel.to_string()).or_default();
        *e = (*e).max(seq);
    }

    fn last_seq(&self, channel: &str) -> u64 {
        lock(&self.last_seq).get(channel).copied().unwrap_or(0)
    }

    /// Learns from a frame: identities, deliveries, refused commits.
    fn observe(&self, conn: &Conn, dir: Dir, frame: &Frame) {
        match (&frame.body, dir) {
            (Some(Body::AuthOk(ok)), Dir::ToClient) => *lock(&conn.identity) = ok.identity.clone(),
            (Some(Body::Deliver(d)), Dir::ToClient) => {
                self.note_seq(&d.channel, d.seq);
                lock(&self.seen).entry(d.channel.clone()).or_default().entry(d.seq).or_insert_with(|| d.clone());
            }
            (Some(Body::Ack(a)), Dir::ToClient) => {
                self.note_seq(&a.channel, a.seq);
                lock(&conn.commits).remove(&frame.request_id);
            }
            (Some(Body::Commit(c)), Dir::ToRelay) => {
                lock(&conn.commits).insert(frame.request_id, c.clone());
            }
            (Some(Body::Nack(_)), Dir::ToClient) => {
                if let Some(c) = lock(&conn.commits).remove(&frame.request_id) {
                    let who = lock(&conn.identity).clone();
                    lock(&self.refused).entry(c.channel.clone()).or_default().push((c.epoch, c.payload, who));
                }
            }
            _ => {}
        }
    }

    /// The first rule that fires on the frame.
    fn decide(&self, identity: &str, dir: Dir, frame: &Frame) -> Option<Rule> {
        let mut rules = lock(&self.rules);
        for r in rules.iter_mut() {
            if r.matches(dir, identity, frame) && r.fire() {
                return Some(r.clone());
            }
        }
        None
    }

    fn refused_commit(&self, channel: &str, epoch: Option<u64>) -> Option<Refused> {
        let refused = lock(&self.refused);
        let list = refused.get(channel)?;
        list.iter().rev().find(|(e, _, _)| epoch.map(|x| x == *e).unwrap_or(true)).cloned()
    }

    async fn handle(self: &Arc<Self>, conn: &Arc<Conn>, dir: Dir, mut frame: Frame) -> bool {
        self.observe(conn, dir, &frame);
        self.forwarded[if dir == Dir::ToClient { 0 } else { 1 }].fetch_add(1, Ordering::Relaxed);
        let identity = lock(&conn.identity).clone();
        let Some(rule) = self.decide(&identity, dir, &frame) else { return conn.forward(dir, &frame).await };
        match rule.action {
            Action::Drop => true,
            Action::Duplicate => conn.forward(dir, &frame).await && conn.forward(dir, &frame).await,
            Action::Delay => {
                let (conn, ms) = (conn.clone(), rule.delay_ms.unwrap_or(500));
                tokio::spawn(async move {
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                    conn.writer(dir).write(&frame).await;
                });
                true
            }
            Action::Reorder => {
                let earlier = lock(conn.held(dir)).replace(frame);
                let ok = match earlier {
                    Some(e) => conn.writer(dir).write(&e).await,
                    None => true,
                };
                let conn = conn.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(REORDER_HOLD).await;
                    let held = lock(conn.held(dir)).take();
                    if let Some(h) = held {
                        conn.writer(dir).write(&h).await;
                    }
                });
                ok
            }
            Action::Replay => {
                let ok = conn.forward(dir, &frame).await;
                let channel = rules::about(&frame).0.map(str::to_string);
                let old = channel.and_then(|c| {
                    let seen = lock(&self.seen);
                    let items: Vec<Deliver> =
                        seen.get(&c)?.values().filter(|d| d.sender != identity).cloned().collect();
                    (!items.is_empty()).then(|| items[rand::random::<usize>() % items.len()].clone())
                });
                if let Some(d) = old {
                    conn.writer(Dir::ToClient).write(&Frame::new(0, Body::Deliver(d))).await;
                }
                ok
            }
            Action::FakeAck => match &frame.body {
                Some(Body::Commit(c)) => {
                    let ack = Ack {
                        channel: c.channel.clone(),
                        seq: self.last_seq(&c.channel) + 1,
                        epoch: c.epoch + 1,
                        duplicate: false,
                    };
                    conn.writer(Dir::ToClient).write(&Frame::new(frame.request_id, Body::Ack(ack))).await
                }
                _ => conn.forward(dir, &frame).await,
            },
            Action::Substitute => {
                if let Some(Body::Deliver(d)) = &mut frame.body {
                    if d.kind == Kind::Commit as i32 {
                        // The commit the relay refuses for this epoch may still be in flight:
                        // wait for it (this direction stays in order meanwhile).
                        let deadline = tokio::time::Instant::now() + SUBSTITUTE_WAIT;
                        let mut refused = self.refused_commit(&d.channel, Some(d.epoch));
                        while refused.is_none() && tokio::time::Instant::now() < deadline {
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            refused = self.refused_commit(&d.channel, Some(d.epoch));
                        }
                        if let Some((_, payload, who)) = refused {
                            d.payload = payload;
                            d.sender = who;
                        }
                    }
                }
                conn.forward(dir, &frame).await
            }
            Action::Spoof => {
                let claimed = rule.as_sender.clone().unwrap_or_else(|| "mallory".to_string());
                match &mut frame.body {
                    Some(Body::Deliver(d)) => d.sender = claimed,
                    Some(Body::Welcome(w)) => w.sender = claimed,
                    _ => {}
                }
                conn.forward(dir, &frame).await
            }
        }
    }

    fn inject(&self, cmd: &Value) -> Result<Value, String> {
        let to = cmd["to"].as_str().ok_or("inject needs `to`")?;
        let channel = cmd["channel"].as_str().ok_or("inject needs `channel`")?.to_string();
        let seq = cmd["seq"].as_u64().unwrap_or_else(|| self.last_seq(&channel) + 1);
        let mut kind = match cmd["kind"].as_str() {
            Some("commit") => Kind::Commit,
            _ => Kind::Application,
        };
        let mut epoch = cmd["epoch"].as_u64().unwrap_or(0);
        let mut sender = cmd["sender"].as_str().unwrap_or("mallory").to_string();
        let payload = match cmd["payload"].as_str().unwrap_or("garbage") {
            "garbage" => (0..cmd["len"].as_u64().unwrap_or(300)).map(|_| rand::random::<u8>()).collect(),
            "replay" => {
                let at = cmd["replay_seq"].as_u64().ok_or("replay needs `replay_seq`")?;
                let d = lock(&self.seen).get(&channel).and_then(|m| m.get(&at).cloned()).ok_or("no such delivery")?;
                (kind, epoch, sender) = (Kind::try_from(d.kind).unwrap_or(Kind::Application), d.epoch, d.sender);
                d.payload
            }
            "refused" => {
                let (e, p, who) = self.refused_commit(&channel, cmd["epoch"].as_u64()).ok_or("no refused commit")?;
                (kind, epoch, sender) = (Kind::Commit, e, who);
                p
            }
            other => B64.decode(other).map_err(|e| format!("payload: {e}"))?,
        };
        let d = Deliver { channel, seq, epoch, kind: kind as i32, sender, payload, timestamp_ms: 0 };
        let targets: Vec<Arc<Conn>> =
            lock(&self.conns).values().filter(|c| *lock(&c.identity) == to).cloned().collect();
        let n = targets.len();
        for c in targets {
            let f = Frame::new(0, Body::Deliver(d.clone()));
            tokio::spawn(async move { c.to_client.write(&f).await });
        }
        Ok(json!({"seq": seq, "connections": n}))
    }

    fn stats(&self) -> Value {
        let rules: Vec<Value> = lock(&self.rules)
            .iter()
            .map(|r| json!({"action": format!("{:?}", r.action), "matched": r.matched, "fired": r.fired}))
            .collect();
        let conns: Vec<String> = lock(&self.conns).values().map(|c| lock(&c.identity).clone()).collect();
        let refused: usize = lock(&self.refused).values().map(Vec::len).sum();
        json!({
            "rules": rules,
            "connections": conns,
            "refusedCommits": refused,
            "toClient": self.forwarded[0].load(Ordering::Relaxed),
            "toRelay": self.forwarded[1].load(Ordering::Relaxed),
        })
    }

    fn control(&self, line: &str) -> Value {
        let cmd: Value = match serde_json::from_str(line) {
            Ok(v) => v,
            Err(e) => return json!({"ok": false, "message": format!("bad JSON: {e}")}),
        };
        let id = cmd["id"].clone();
        let res: Result<Value, String> = match cmd["op"].as_str() {
            Some("add") => {
                serde_json::from_value::<Rule>(cmd["rule"].clone()).map_err(|e| format!("rule: {e}")).map(|r| {
                    let mut rules = lock(&self.rules);
                    rules.push(r);
                    json!(rules.len() - 1)
                })
            }
            Some("clear") => {
                lock(&self.rules).clear();
                Ok(json!(true))
            }
            Some("stats") => Ok(self.stats()),
            Some("inject") => self.inject(&cmd),
            _ => Err("unknown op".to_string()),
        };
        match res {
            Ok(value) => json!({"id": id, "ok": true, "value": value}),
            Err(message) => json!({"id": id, "ok": false, "message": message}),
        }
    }
}

/// Forwards frames of one direction until the stream ends.
async fn pump(proxy: Arc<Proxy>, conn: Arc<Conn>, dir: Dir, mut recv: RecvStream) {
    loop {
        let bytes = match read_frame_bytes(&mut recv, MAX_FRAME).await {
            Ok(Some(b)) => b,
            _ => break,
        };
        let ok = match decode_frame(&bytes) {
            Ok(frame) => proxy.handle(&conn, dir, frame).await,
            // Not a frame we understand: forwarded as is (the far side answers it).
            Err(_) => {
                let mut raw = (bytes.len() as u32).to_be_bytes().to_vec();
                raw.extend_from_slice(&bytes);
                conn.writer(dir).stream.lock().await.write_all(&raw).await.is_ok()
            }
        };
        if !ok {
            break;
        }
    }
    let _ = conn.writer(dir).stream.lock().await.finish();
}

fn close_reason(err: &ConnectionError) -> (u32, Vec<u8>) {
    match err {
        ConnectionError::ApplicationClosed(c) => {
            (u32::try_from(c.error_code.into_inner()).unwrap_or(0), c.reason.to_vec())
        }
        _ => (0, b"relay connection lost".to_vec()),
    }
}

async fn serve(proxy: Arc<Proxy>, upstream: iroh::Endpoint, relay: RelayAddr, client: Connection) {
    let Ok((c_send, c_recv)) = client.accept_bi().await else { return };
    let relay_conn = match upstream.connect(EndpointAddr::from(&relay), ALPN).await {
        Ok(c) => c,
        Err(e) => {
            eprintln!("skytale-mitm: connecting to the relay: {e}");
            client.close(0u32.into(), b"SKYTALE_RELAY_UNAVAILABLE");
            return;
        }
    };
    let Ok((r_send, r_recv)) = relay_conn.open_bi().await else { return };
    let conn = Arc::new(Conn {
        identity: Mutex::new(String::new()),
        to_client: Writer { stream: tokio::sync::Mutex::new(c_send) },
        to_relay: Writer { stream: tokio::sync::Mutex::new(r_send) },
        commits: Mutex::new(HashMap::new()),
        held: [Mutex::new(None), Mutex::new(None)],
    });
    let id = proxy.next_conn.fetch_add(1, Ordering::Relaxed);
    lock(&proxy.conns).insert(id, conn.clone());
    let up = tokio::spawn(pump(proxy.clone(), conn.clone(), Dir::ToRelay, c_recv));
    let down = tokio::spawn(pump(proxy.clone(), conn.clone(), Dir::ToClient, r_recv));
    tokio::select! {
        err = relay_conn.closed() => {
            let (code, reason) = close_reason(&err);
            client.close(code.into(), &reason);
        }
        _ = client.closed() => relay_conn.close(0u32.into(), b"client gone"),
    }
    up.abort();
    down.abort();
    lock(&proxy.conns).remove(&id);
}

fn arg(name: &str) -> Option<String> {
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        if k == format!("--{name}") {
            return it.next();
        }
    }
    None
}

#[tokio::main]
async fn main() {
    if let Err(e) = run().await {
        eprintln!("skytale-mitm: {e}");
        std::process::exit(1);
    }
}

async fn run() -> Result<(), String> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let relay: RelayAddr = arg("relay").ok_or("--relay is required")?.parse().map_err(|e| format!("{e}"))?;
    let listen = arg("listen").unwrap_or_else(|| "127.0.0.1:0".into()).parse().map_err(|e| format!("--listen: {e}"))?;
    let server = closed_endpoint(listen, None, vec![ALPN.to_vec()]).await.map_err(|e| e.to_string())?;
    let upstream = closed_endpoint("127.0.0.1:0".parse().map_err(|e| format!("{e}"))?, None, Vec::new())
        .await
        .map_err(|e| e.to_string())?;
    let port = server.bound_sockets().iter().map(|a| a.port()).find(|p| *p != 0).ok_or("no bound socket")?;
    let proxy = Arc::new(Proxy::default());
    let mut out = tokio::io::stdout();
    let banner = format!("skytale-mitm listening iroh://{}@127.0.0.1:{port}\n", server.id());
    out.write_all(banner.as_bytes()).await.map_err(|e| e.to_string())?;
    out.flush().await.map_err(|e| e.to_string())?;
    let control = {
        let proxy = proxy.clone();
        tokio::spawn(async move {
            let mut lines = BufReader::new(tokio::io::stdin()).lines();
            let mut out = tokio::io::stdout();
            while let Ok(Some(line)) = lines.next_line().await {
                let answer = proxy.control(&line);
                let text = format!("{answer}\n");
                if out.write_all(text.as_bytes()).await.is_err() || out.flush().await.is_err() {
                    break;
                }
            }
        })
    };
    loop {
        tokio::select! {
            incoming = server.accept() => {
                let Some(incoming) = incoming else { break };
                let (proxy, upstream, relay) = (proxy.clone(), upstream.clone(), relay.clone());
                tokio::spawn(async move {
                    if let Ok(client) = incoming.await {
                        serve(proxy, upstream, relay, client).await;
                    }
                });
            }
            // stdin closed: the test is over.
            _ = async { while !control.is_finished() { tokio::time::sleep(Duration::from_millis(200)).await } } => break,
        }
    }
    server.close().await;
    Ok(())
}
