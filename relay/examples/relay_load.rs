//! `relay-load`: raw load generator for the relay (no MLS, no decryption). It starts a relay
//! binary with a throwaway signing key, connects raw `skytale_proto::conn::RelayConnection`s
//! and measures:
//!
//! - `fanout`: 1 sender → `--subscribers` raw subscribers in one channel, `--messages` sends
//!   (up to `--window` in flight); deliveries/s = deliveries counted by all subscribers /
//!   time from the first send to the last delivery.
//! - `cpu`: relay CPU per send (utime + stime of the relay process / sends) for `--sends` sends
//!   on an empty channel, then again after `--history` items were archived in that channel.
//! - `channels`: `--channels` writers, each on its own connection and channel, flood
//!   `--per-channel` sends each at the same time (up to `--window` in flight each): relay CPU
//!   per send and sends/s over all channels (sends of many channels that arrive together share
//!   the storage round's group commit).
//! - `memory`: relay RSS growth per connection with `--agents` agents × `--per-agent` channels.
//! - `latency`: 1 sender → 1 raw subscriber, `--rate` sends/s for `--seconds`, each sent when
//!   due (not waiting for earlier acks): p50/p90/p99/max of send → ack and send → delivery, the
//!   relay's own share of the agents' latency (`npm run bench:relay -- --only latency`).
//!
//! ```sh
//! cargo run --release -p skytale-relay --example relay-load -- \
//!   [--relay target/release/skytale-relay] [--old /tmp/relay-old/skytale-relay] \
//!   [--only fanout,cpu,memory,latency,channels] [--subscribers 1000] [--messages 200] [--history 100000]
//!   [--rate 2000] [--seconds 10] [--latency-history 0] [--size 256] [--channels 16] [--per-channel 2000]
//! ```
//! With `--old`, every phase runs against both binaries (same process, one after the other).
//! Subscribers are made channel members first (commits declaring them `added`, as clients do),
//! since the relay serves members only.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use iroh::Endpoint;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use skytale_proto::conn::{client_endpoint, RelayAddr, RelayConnection};
use skytale_proto::frames::{Body, Commit, Kind};
use tokio::task::JoinSet;

type Res<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

const ORG: &str = "bench";
/// Connections per client endpoint (one UDP socket serves many QUIC connections).
const CONNS_PER_ENDPOINT: usize = 50;

struct Args(HashMap<String, String>);

impl Args {
    fn parse() -> Args {
        let v: Vec<String> = std::env::args().skip(1).collect();
        let mut m = HashMap::new();
        let mut i = 0;
        while i < v.len() {
            if let Some(k) = v[i].strip_prefix("--") {
                let val = v.get(i + 1).filter(|x| !x.starts_with("--")).cloned();
                i += if val.is_some() { 2 } else { 1 };
                m.insert(k.to_string(), val.unwrap_or_else(|| "true".to_string()));
            } else {
                i += 1;
            }
        }
        Args(m)
    }
    fn num(&self, k: &str, def: u64) -> u64 {
        self.0.get(k).and_then(|v| v.replace('_', "").parse().ok()).unwrap_or(def)
    }
    fn str(&self, k: &str) -> Option<String> {
        self.0.get(k).cloned()
    }
}

struct Signer {
    enc: EncodingKey,
    x: String,
}

fn b64url(data: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..=chunk.len() {
            out.push(T[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

impl Signer {
    fn new() -> Signer {
        let seed: [u8; 32] = rand::random();
        let sk = ed25519_dalek::SigningKey::from_bytes(&seed);
        let mut der =
            vec![0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20];
        der.extend_from_slice(&seed);
        Signer { enc: EncodingKey::from_ed_der(&der), x: b64url(sk.verifying_key().as_bytes()) }
    }
    fn token(&self, identity: &str) -> Res<String> {
        let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
        let claims = serde_json::json!({
            "iss": "skytale-bench", "aud": "skytale-relay", "sub": identity, "org": ORG,
            "identity": identity, "scope": "channels:rw", "iat": now, "exp": now + 3600,
        });
        let mut h = Header::new(Algorithm::EdDSA);
        h.kid = Some("bench".to_string());
        Ok(jsonwebtoken::encode(&h, &claims, &self.enc)?)
    }
}

struct Relay {
    child: Child,
    addr: RelayAddr,
    http: String,
    dir: PathBuf,
}

impl Relay {
    fn start(bin: &str, signer: &Signer) -> Res<Relay> {
        let dir = std::env::temp_dir().join(format!("skytale-relay-load-{}", rand::random::<u32>()));
        std::fs::create_dir_all(&dir)?;
        let mut child = Command::new(bin)
            .env("SKYTALE_RELAY_DATA_DIR", dir.join("data"))
            .env("SKYTALE_RELAY_LISTEN", "127.0.0.1:0")
            .env("SKYTALE_RELAY_HTTP_LISTEN", "127.0.0.1:0")
            .env("SKYTALE_RELAY_PUBLIC_KEY", &signer.x)
            .env("SKYTALE_RELAY_ISSUER", "skytale-bench")
            .env("SKYTALE_RELAY_FRAMES_PER_SECOND", "10000000")
            .env("SKYTALE_RELAY_BURST", "10000000")
            .env("SKYTALE_RELAY_MAX_CONNECTIONS", "10000")
            .env("SKYTALE_RELAY_MAX_CONNECTIONS_PER_IP", "10000")
            .env("SKYTALE_RELAY_MAX_CONNECTIONS_PER_ORG", "10000")
            .env("SKYTALE_RELAY_MAX_UNAUTHENTICATED", "10000")
            .env("SKYTALE_RELAY_OUTBOUND_QUEUE", "65536")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line)?;
        let parts: Vec<&str> = line.split_whitespace().collect();
        if parts.len() != 4 {
            return Err(format!("unexpected start line {line:?}").into());
        }
        Ok(Relay { child, addr: parts[2].parse()?, http: parts[3].to_string(), dir })
    }

    /// (cpu seconds, rss bytes) of the relay process.
    fn usage(&self) -> Res<(f64, u64)> {
        let pid = self.child.id();
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
        let rest = stat.rsplit_once(')').ok_or("bad stat")?.1;
        let f: Vec<&str> = rest.split_whitespace().collect();
        // after ")": state(0) … utime(11) stime(12); clock ticks of 10 ms (CLK_TCK = 100)
        let ticks: u64 = f.get(11).ok_or("stat")?.parse::<u64>()? + f.get(12).ok_or("stat")?.parse::<u64>()?;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
        let rss_kb: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        Ok((ticks as f64 / 100.0, rss_kb * 1024))
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

struct Client {
    endpoints: Vec<Endpoint>,
    n: usize,
}

impl Client {
    fn new() -> Client {
        Client { endpoints: Vec::new(), n: 0 }
    }
    async fn connect(
        &mut self,
        r: &Relay,
        s: &Signer,
        identity: &str,
    ) -> Res<(RelayConnection, skytale_proto::conn::PushReceiver)> {
        if self.n.is_multiple_of(CONNS_PER_ENDPOINT) {
            self.endpoints.push(client_endpoint("127.0.0.1:0".parse()?).await?);
        }
        self.n += 1;
        let ep = self.endpoints.last().ok_or("no endpoint")?;
        let (c, p) = RelayConnection::connect(ep, &r.addr).await?;
        c.auth(&s.token(identity)?, identity).await?;
        Ok((c, p))
    }
}

/// Adds `members` to `ch`'s roster with commits of at most 1,000 identities each, starting at
/// `epoch`; returns the channel's epoch afterwards.
async fn add_members(c: &RelayConnection, ch: &str, mut epoch: u64, members: &[String]) -> Res<u64> {
    for (i, chunk) in members.chunks(1000).enumerate() {
        let commit = Commit {
            channel: ch.to_string(),
            client_msg_id: format!("add-{i}"),
            epoch,
            payload: vec![3u8; 64],
            added: chunk.to_vec(),
            ..Default::default()
        };
        epoch = c.commit(commit).await?.epoch;
    }
    Ok(epoch)
}

/// Sends `n` messages of `size` bytes at `epoch` with up to `window` in flight; returns the
/// wall time.
async fn flood(
    c: &RelayConnection,
    ch: &str,
    epoch: u64,
    tag: &str,
    n: u64,
    size: usize,
    window: usize,
) -> Res<Duration> {
    let t0 = Instant::now();
    let mut set: JoinSet<Res<()>> = JoinSet::new();
    for i in 0..n {
        while set.len() >= window {
            if let Some(r) = set.join_next().await {
                r??;
            }
        }
        let c = c.clone();
        let (ch, id) = (ch.to_string(), format!("{tag}-{i}"));
        set.spawn(async move {
            c.send(&ch, &id, Kind::Application, epoch, vec![7u8; size]).await?;
            Ok(())
        });
    }
    while let Some(r) = set.join_next().await {
        r??;
    }
    Ok(t0.elapsed())
}

async fn fanout(r: &Relay, s: &Signer, a: &Args) -> Res<serde_json::Value> {
    let subs = a.num("subscribers", 1000) as usize;
    let msgs = a.num("messages", 200);
    let ch = "bench/load/fanout";
    let mut cl = Client::new();
    let (sender, _ps) = cl.connect(r, s, "sender").await?;
    sender.create_channel(ch).await?;
    let members: Vec<String> = (0..subs).map(|i| format!("sub-{i}")).collect();
    let epoch = add_members(&sender, ch, 0, &members).await?;
    let count = Arc::new(AtomicU64::new(0));
    let mut conns = Vec::new();
    let t_conn = Instant::now();
    for i in 0..subs {
        let (c, mut p) = cl.connect(r, s, &format!("sub-{i}")).await?;
        c.subscribe(ch, 0).await?;
        let count = count.clone();
        tokio::spawn(async move {
            while let Some(f) = p.recv().await {
                if matches!(f.body, Some(Body::Deliver(_))) {
                    count.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
        conns.push(c);
    }
    let connect_s = t_conn.elapsed().as_secs_f64();
    let (cpu0, _) = r.usage()?;
    let t0 = Instant::now();
    let want = msgs * subs as u64;
    flood(&sender, ch, epoch, "f", msgs, 256, a.num("window", 32) as usize).await?;
    let deadline = Instant::now() + Duration::from_secs(120);
    while count.load(Ordering::Relaxed) < want && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let secs = t0.elapsed().as_secs_f64();
    let (cpu1, _) = r.usage()?;
    let got = count.load(Ordering::Relaxed);
    for c in &conns {
        c.close();
    }
    Ok(serde_json::json!({
        "subscribers": subs, "messages": msgs, "deliveries": got, "expected": want,
        "seconds": secs, "deliveries_per_s": got as f64 / secs,
        "relay_cpu_s": cpu1 - cpu0, "connect_subscribe_s": connect_s,
    }))
}

async fn cpu(r: &Relay, s: &Signer, a: &Args) -> Res<serde_json::Value> {
    let sends = a.num("sends", 20_000);
    let history = a.num("history", 100_000);
    let window = a.num("window", 32) as usize;
    let ch = "bench/load/cpu";
    let mut cl = Client::new();
    let (c, _p) = cl.connect(r, s, "writer").await?;
    c.create_channel(ch).await?;
    let measure = |tag: &'static str| {
        let c = c.clone();
        async move {
            let (cpu0, _) = r.usage()?;
            let wall = flood(&c, ch, 0, tag, sends, 256, window).await?;
            let (cpu1, _) = r.usage()?;
            Res::Ok(((cpu1 - cpu0) / sends as f64 * 1e6, wall.as_secs_f64() / sends as f64 * 1e6))
        }
    };
    let (empty_cpu_us, empty_wall_us) = measure("empty").await?;
    let fill = history.saturating_sub(sends);
    let t_fill = Instant::now();
    flood(&c, ch, 0, "fill", fill, 256, 64).await?;
    let fill_s = t_fill.elapsed().as_secs_f64();
    let (full_cpu_us, full_wall_us) = measure("full").await?;
    let last = c.channel_state(ch).await?.last_seq;
    Ok(serde_json::json!({
        "sends": sends, "history": last - sends, "fill_seconds": fill_s,
        "empty": {"relay_cpu_us_per_send": empty_cpu_us, "wall_us_per_send": empty_wall_us},
        "full": {"relay_cpu_us_per_send": full_cpu_us, "wall_us_per_send": full_wall_us},
        "cpu_ratio": full_cpu_us / empty_cpu_us,
    }))
}

async fn channels(r: &Relay, s: &Signer, a: &Args) -> Res<serde_json::Value> {
    let k = a.num("channels", 16).max(1) as usize;
    let per = a.num("per-channel", 2000);
    let window = a.num("window", 32) as usize;
    let mut cl = Client::new();
    let mut writers = Vec::with_capacity(k);
    for i in 0..k {
        let (c, p) = cl.connect(r, s, &format!("writer-{i}")).await?;
        let ch = format!("bench/many/c{i}");
        c.create_channel(&ch).await?;
        writers.push((c, p, ch));
    }
    let (cpu0, _) = r.usage()?;
    let t0 = Instant::now();
    let mut set: JoinSet<Res<Duration>> = JoinSet::new();
    for (c, _, ch) in &writers {
        let (c, ch) = (c.clone(), ch.clone());
        set.spawn(async move { flood(&c, &ch, 0, "m", per, 256, window).await });
    }
    while let Some(res) = set.join_next().await {
        res??;
    }
    let secs = t0.elapsed().as_secs_f64();
    let (cpu1, _) = r.usage()?;
    let sends = per * k as u64;
    for (c, _, _) in &writers {
        c.close();
    }
    Ok(serde_json::json!({
        "channels": k, "sends": sends, "seconds": secs, "sends_per_s": sends as f64 / secs,
        "relay_cpu_us_per_send": (cpu1 - cpu0) / sends as f64 * 1e6,
    }))
}

/// p50/p90/p99/max in milliseconds of `v` (microseconds; sorted here).
fn percentiles(mut v: Vec<u64>) -> serde_json::Value {
    v.sort_unstable();
    let at = |q: f64| -> f64 {
        if v.is_empty() {
            return f64::NAN;
        }
        let i = ((v.len() as f64 * q).ceil() as usize).clamp(1, v.len()) - 1;
        v[i] as f64 / 1000.0
    };
    serde_json::json!({ "p50": at(0.5), "p90": at(0.9), "p99": at(0.99), "max": at(1.0), "n": v.len() })
}

async fn latency(r: &Relay, s: &Signer, a: &Args) -> Res<serde_json::Value> {
    let rate = a.num("rate", 2000).max(1);
    let n = rate * a.num("seconds", 10);
    let ch = "bench/load/latency";
    let mut cl = Client::new();
    let (sender, _ps) = cl.connect(r, s, "sender").await?;
    sender.create_channel(ch).await?;
    let epoch = add_members(&sender, ch, 0, &["sub".to_string()]).await?;
    // An archive to send on top of (`--latency-history N` items, flooded first): a large
    // archive changes what each paced commit costs (page cache, B-tree splits).
    let history = a.num("latency-history", 0);
    // `--size`: payload bytes (an agent's message padded to the 1 KiB bucket is ~1,150 bytes).
    let size = (a.num("size", 256) as usize).max(8);
    if history > 0 {
        flood(&sender, ch, epoch, "h", history, 256, 64).await?;
    }
    let (sub, mut p) = cl.connect(r, s, "sub").await?;
    let after = sender.channel_state(ch).await?.last_seq;
    sub.subscribe(ch, after).await?;
    let t0 = Instant::now();
    // Send and delivery instants, µs since t0, by message index (index 0 = "not yet").
    let sent: Arc<Vec<AtomicU64>> = Arc::new((0..n).map(|_| AtomicU64::new(0)).collect());
    let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel::<(u64, u64)>();
    let reader = tokio::spawn(async move {
        let mut got = 0u64;
        while let Some(f) = p.recv().await {
            if let Some(Body::Deliver(d)) = f.body {
                let at = t0.elapsed().as_micros() as u64;
                if d.payload.len() >= 8 {
                    let mut idx = [0u8; 8];
                    idx.copy_from_slice(&d.payload[..8]);
                    if done_tx.send((u64::from_le_bytes(idx), at)).is_err() {
                        break;
                    }
                    got += 1;
                    if got >= n {
                        break;
                    }
                }
            }
        }
    });
    let mut acks: JoinSet<Res<u64>> = JoinSet::new();
    let mut ack_us = Vec::with_capacity(n as usize);
    let (cpu0, _) = r.usage()?;
    let start = Instant::now();
    for i in 0..n {
        let due = start + Duration::from_secs_f64(i as f64 / rate as f64);
        tokio::time::sleep_until(due.into()).await;
        let mut payload = vec![7u8; size];
        payload[..8].copy_from_slice(&i.to_le_bytes());
        let sent_at = t0.elapsed().as_micros() as u64;
        sent[i as usize].store(sent_at.max(1), Ordering::Relaxed);
        let c = sender.clone();
        let id = format!("l-{i}");
        acks.spawn(async move {
            c.send(ch, &id, Kind::Application, epoch, payload).await?;
            Ok((t0.elapsed().as_micros() as u64).saturating_sub(sent_at))
        });
        while let Some(done) = acks.try_join_next() {
            ack_us.push(done??);
        }
    }
    while let Some(r) = acks.join_next().await {
        ack_us.push(r??);
    }
    let mut deliver_us = Vec::with_capacity(n as usize);
    let deadline = Instant::now() + Duration::from_secs(30);
    while (deliver_us.len() as u64) < n {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, done_rx.recv()).await {
            Ok(Some((idx, at))) => {
                let s_at = sent.get(idx as usize).map(|x| x.load(Ordering::Relaxed)).unwrap_or(0);
                deliver_us.push(at.saturating_sub(s_at));
            }
            _ => break,
        }
    }
    reader.abort();
    let wall = start.elapsed().as_secs_f64();
    let (cpu1, _) = r.usage()?;
    Ok(serde_json::json!({
        "rate": rate, "messages": n, "size": size, "history": history, "delivered": deliver_us.len(), "wall_s": wall,
        "relay_cpu_us_per_send": (cpu1 - cpu0) / n as f64 * 1e6,
        "send_to_ack_ms": percentiles(ack_us), "send_to_delivery_ms": percentiles(deliver_us),
    }))
}

async fn memory(r: &Relay, s: &Signer, a: &Args) -> Res<serde_json::Value> {
    let agents = a.num("agents", 1000) as usize;
    let per = a.num("per-agent", 5) as usize;
    let channels = agents.max(per);
    let mut cl = Client::new();
    let (admin, _pa) = cl.connect(r, s, "admin").await?;
    let mut members: Vec<Vec<String>> = vec![Vec::new(); channels];
    for i in 0..agents {
        for k in 0..per {
            members[(i * per + k) % channels].push(format!("agent-{i}"));
        }
    }
    for (k, m) in members.iter().enumerate() {
        let ch = format!("bench/mem/c{k}");
        admin.create_channel(&ch).await?;
        add_members(&admin, &ch, 0, m).await?;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (_, rss0) = r.usage()?;
    let mut keep = Vec::new();
    for i in 0..agents {
        let (c, p) = cl.connect(r, s, &format!("agent-{i}")).await?;
        for k in 0..per {
            c.subscribe(&format!("bench/mem/c{}", (i * per + k) % channels), 0).await?;
        }
        keep.push((c, p));
    }
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let (_, rss1) = r.usage()?;
    let health = reqwest_free_get(&r.http).unwrap_or_default();
    for (c, _) in &keep {
        c.close();
    }
    Ok(serde_json::json!({
        "agents": agents, "channels_per_agent": per, "rss_before_mb": rss0 as f64 / 1048576.0,
        "rss_after_mb": rss1 as f64 / 1048576.0,
        "kib_per_connection": (rss1.saturating_sub(rss0)) as f64 / 1024.0 / agents as f64,
        "health": health,
    }))
}

/// `GET /health` with a plain TCP request (the example needs no HTTP client).
fn reqwest_free_get(base: &str) -> Option<String> {
    use std::io::{Read, Write};
    let hostport = base.trim_start_matches("http://");
    let mut s = std::net::TcpStream::connect(hostport).ok()?;
    write!(s, "GET /health HTTP/1.1\r\nhost: {hostport}\r\nconnection: close\r\n\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    out.split_once("\r\n\r\n").map(|x| x.1.to_string())
}

async fn run_all(bin: &str, a: &Args) -> Res<serde_json::Value> {
    let only = a.str("only").unwrap_or_else(|| "fanout,cpu,memory,channels".to_string());
    let mut out = serde_json::Map::new();
    for phase in only.split(',') {
        let signer = Signer::new();
        let relay = Relay::start(bin, &signer)?;
        eprintln!("[relay-load] {bin}: {phase} …");
        let v = match phase {
            "fanout" => fanout(&relay, &signer, a).await?,
            "cpu" => cpu(&relay, &signer, a).await?,
            "memory" => memory(&relay, &signer, a).await?,
            "latency" => latency(&relay, &signer, a).await?,
            "channels" => channels(&relay, &signer, a).await?,
            other => return Err(format!("unknown phase {other}").into()),
        };
        eprintln!("[relay-load] {phase}: {v}");
        out.insert(phase.to_string(), v);
    }
    Ok(serde_json::Value::Object(out))
}

#[tokio::main]
async fn main() -> Res<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let a = Args::parse();
    let default_bin = std::env::current_exe()?
        .parent()
        .and_then(|p| p.parent())
        .map(|p| p.join("skytale-relay").to_string_lossy().to_string())
        .unwrap_or_default();
    let bin = a.str("relay").unwrap_or(default_bin);
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let mut report = serde_json::json!({ "loadavg_before": load.trim(), "relay": bin });
    report["new"] = run_all(&bin, &a).await?;
    if let Some(old) = a.str("old") {
        report["old"] = run_all(&old, &a).await?;
    }
    report["loadavg_after"] = std::fs::read_to_string("/proc/loadavg").unwrap_or_default().trim().into();
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}
