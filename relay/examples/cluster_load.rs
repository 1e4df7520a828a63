//! `relay-cluster-load`: throughput of a relay cluster on NATS JetStream against one relay, raw
//! (no MLS). Starts real `nats-server` and `skytale-relay` processes and runs the same workload
//! on each setup, one after the other, in one run:
//!
//! - `sqlite`: 1 relay, embedded SQLite (the default store)
//! - `nats-r1`: 1 relay on 1 NATS node (JetStream, 1 replica)
//! - `nats-r3`: 1 relay on a 3-node NATS cluster (3 replicas)
//! - `cluster`: 3 relays on the 3-node NATS cluster (3 replicas)
//!
//! Workload `spread`: `--channels` channels (default 12), each with one sender sending
//! `--messages` (default 2000) 256-byte items, up to `--window` (32) in flight, and one
//! subscriber; with 3 relays the sender of channel `c` is on node `c % 3` and its subscriber on
//! node `c + 1`. Workload `hot`: one channel, three senders (one per node with 3 relays), three
//! subscribers. Throughput = items delivered to subscribers / time from the first send to the
//! last delivery; CPU = user + system time of every relay and nats-server process per item.
//! Every subscriber also checks that it sees one increasing order, each item once.
//!
//! ```sh
//! cargo run --release -p skytale-relay --example relay-cluster-load -- \
//!   [--relay target/release/skytale-relay] [--only sqlite,nats-r1,nats-r3,cluster] [--workload spread,hot]
//! ```

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use skytale_proto::conn::{client_endpoint, RelayAddr, RelayConnection};
use skytale_proto::frames::{Body, Kind};
use tokio::task::JoinSet;

type Res<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

fn arg(name: &str) -> Option<String> {
    let v: Vec<String> = std::env::args().collect();
    v.iter().position(|a| a == &format!("--{name}")).and_then(|i| v.get(i + 1).cloned())
}

fn num(name: &str, def: u64) -> u64 {
    arg(name).and_then(|v| v.parse().ok()).unwrap_or(def)
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

struct Signer {
    enc: EncodingKey,
    x: String,
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
            "iss": "skytale-bench", "aud": "skytale-relay", "sub": identity, "org": "bench",
            "identity": identity, "scope": "channels:rw", "iat": now, "exp": now + 3600,
        });
        let mut h = Header::new(Algorithm::EdDSA);
        h.kid = Some("bench".to_string());
        Ok(jsonwebtoken::encode(&h, &claims, &self.enc)?)
    }
}

/// A child process killed on drop, with its temp dir.
struct Proc {
    child: Child,
    dir: PathBuf,
}

impl Proc {
    fn cpu_s(&self) -> f64 {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).unwrap_or_default();
        let f: Vec<&str> = stat.rsplit_once(')').map(|x| x.1).unwrap_or("").split_whitespace().collect();
        let t = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        (t(11) + t(12)) as f64 / 100.0
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn tmp(name: &str) -> Res<PathBuf> {
    let d = std::env::temp_dir().join(format!("skytale-cluster-load-{name}-{}", rand::random::<u32>()));
    std::fs::create_dir_all(&d)?;
    Ok(d)
}

fn free_port() -> Res<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// `n` nats-server nodes with JetStream (clustered when n > 1); returns them and their URLs.
fn start_nats(n: usize) -> Res<(Vec<Proc>, Vec<String>)> {
    let bin = std::env::var("NATS_SERVER_BIN").unwrap_or_else(|_| "nats-server".to_string());
    let ports: Vec<(u16, u16)> = (0..n).map(|_| Ok((free_port()?, free_port()?))).collect::<Res<_>>()?;
    let mut procs = Vec::new();
    for (i, (p, c)) in ports.iter().enumerate() {
        let dir = tmp(&format!("nats{i}"))?;
        let mut cmd = Command::new(&bin);
        cmd.args(["-js", "-a", "127.0.0.1", "-p", &p.to_string(), "-n", &format!("n{i}")]).arg("-sd").arg(&dir);
        if n > 1 {
            let routes: Vec<String> =
                ports.iter().filter(|x| x.1 != *c).map(|x| format!("nats://127.0.0.1:{}", x.1)).collect();
            cmd.args([
                "--cluster_name",
                "bench",
                "--cluster",
                &format!("nats://127.0.0.1:{c}"),
                "--routes",
                &routes.join(","),
            ]);
        }
        let child = cmd.stdout(Stdio::null()).stderr(Stdio::null()).spawn()?;
        procs.push(Proc { child, dir });
    }
    for (p, _) in &ports {
        let deadline = Instant::now() + Duration::from_secs(15);
        while std::net::TcpStream::connect(("127.0.0.1", *p)).is_err() {
            if Instant::now() > deadline {
                return Err("nats-server did not start".into());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    Ok((procs, ports.iter().map(|(p, _)| format!("nats://127.0.0.1:{p}")).collect()))
}

fn start_relay(bin: &str, s: &Signer, nats: Option<&str>) -> Res<(Proc, RelayAddr)> {
    let dir = tmp("relay")?;
    let mut cmd = Command::new(bin);
    cmd.env("SKYTALE_RELAY_DATA_DIR", dir.join("data"))
        .env("SKYTALE_RELAY_LISTEN", "127.0.0.1:0")
        .env("SKYTALE_RELAY_HTTP_LISTEN", "127.0.0.1:0")
        .env("SKYTALE_RELAY_PUBLIC_KEY", &s.x)
        .env("SKYTALE_RELAY_ISSUER", "skytale-bench")
        .env("SKYTALE_RELAY_FRAMES_PER_SECOND", "10000000")
        .env("SKYTALE_RELAY_BURST", "10000000")
        .env("SKYTALE_RELAY_OUTBOUND_QUEUE", "65536")
        .env("RUST_LOG", "warn");
    if let Some(urls) = nats {
        cmd.env("SKYTALE_RELAY_STORE", "nats").env("SKYTALE_RELAY_NATS_URL", urls);
    }
    let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::null()).spawn()?;
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line)?;
    let addr = line.split_whitespace().nth(2).ok_or_else(|| format!("relay did not start: {line:?}"))?.parse()?;
    Ok((Proc { child, dir }, addr))
}

async fn connect(addr: &RelayAddr, s: &Signer, who: &str) -> Res<(RelayConnection, skytale_proto::conn::PushReceiver)> {
    let ep = client_endpoint("127.0.0.1:0".parse()?).await?;
    let (c, p) = RelayConnection::connect(&ep, addr).await?;
    std::mem::forget(ep);
    c.auth(&s.token(who)?, who).await?;
    Ok((c, p))
}

/// Runs a workload against relays at `addrs`; `procs` are measured for CPU.
async fn workload(kind: &str, addrs: &[RelayAddr], procs: &[&Proc], s: &Signer) -> Res<serde_json::Value> {
    let (chans, senders_per) = if kind == "hot" { (1, 3) } else { (num("channels", 12) as usize, 1) };
    let msgs = num("messages", 2000);
    let window = num("window", 32) as usize;
    let n = addrs.len();
    let delivered = Arc::new(AtomicU64::new(0));
    let disorder = Arc::new(AtomicU64::new(0));
    let mut senders = Vec::new();
    let mut keep = Vec::new();
    let mut subs = Vec::new();
    for c in 0..chans {
        let ch = format!("bench/{kind}/c{c}-{}", rand::random::<u32>());
        let (owner, _) = connect(&addrs[c % n], s, "owner").await?;
        owner.create_channel(&ch).await?;
        // the senders and subscribers join the roster by one commit (seq 1; sends are at epoch 1)
        let who: Vec<String> = (0..senders_per).flat_map(|k| [format!("s{c}-{k}"), format!("r{c}-{k}")]).collect();
        owner
            .commit(skytale_proto::frames::Commit {
                channel: ch.clone(),
                client_msg_id: "add".into(),
                epoch: 0,
                payload: b"add".to_vec(),
                added: who,
                ..Default::default()
            })
            .await?;
        for k in 0..senders_per {
            let (snd, ps) = connect(&addrs[(c + k) % n], s, &format!("s{c}-{k}")).await?;
            senders.push((snd, ch.clone(), format!("s{c}-{k}")));
            keep.push(ps);
            let (sub, mut pu) = connect(&addrs[(c + k + 1) % n], s, &format!("r{c}-{k}")).await?;
            sub.subscribe(&ch, 1).await?;
            let (d, disorder) = (delivered.clone(), disorder.clone());
            tokio::spawn(async move {
                let mut last = 1;
                while let Some(f) = pu.recv().await {
                    if let Some(Body::Deliver(item)) = f.body {
                        d.fetch_add(1, Ordering::Relaxed);
                        // every subscriber must see one increasing order, each item once
                        if item.seq <= last {
                            disorder.fetch_add(1, Ordering::Relaxed);
                        }
                        last = item.seq;
                    }
                }
            });
            subs.push(sub);
        }
    }
    let total_sent = msgs * senders.len() as u64;
    // every subscriber of a channel gets every item not its own
    let want = total_sent * senders_per as u64;
    let cpu0: f64 = procs.iter().map(|p| p.cpu_s()).sum();
    let t0 = Instant::now();
    let mut set: JoinSet<Res<()>> = JoinSet::new();
    for (c, ch, tag) in senders {
        set.spawn(async move {
            let mut inflight: JoinSet<Res<()>> = JoinSet::new();
            for i in 0..msgs {
                while inflight.len() >= window {
                    if let Some(r) = inflight.join_next().await {
                        r??;
                    }
                }
                let (c, ch, id) = (c.clone(), ch.clone(), format!("{tag}-{i}"));
                inflight.spawn(async move {
                    // a rare SKYTALE_RATE_LIMITED (channel busy on other nodes) is retried
                    for _ in 0..50 {
                        match c.send(&ch, &id, Kind::Application, 1, vec![7u8; 256]).await {
                            Ok(_) => return Ok(()),
                            Err(skytale_proto::ProtoError::Relay { code, .. }) if code == "SKYTALE_RATE_LIMITED" => {
                                tokio::time::sleep(Duration::from_millis(5)).await
                            }
                            Err(e) => return Err(e.into()),
                        }
                    }
                    Err("gave up".into())
                });
            }
            while let Some(r) = inflight.join_next().await {
                r??;
            }
            Ok(())
        });
    }
    while let Some(r) = set.join_next().await {
        r??;
    }
    let acked_s = t0.elapsed().as_secs_f64();
    let deadline = Instant::now() + Duration::from_secs(120);
    while delivered.load(Ordering::Relaxed) < want && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let secs = t0.elapsed().as_secs_f64();
    let cpu1: f64 = procs.iter().map(|p| p.cpu_s()).sum();
    let got = delivered.load(Ordering::Relaxed);
    drop((keep, subs));
    Ok(serde_json::json!({
        "workload": kind, "channels": chans, "senders": total_sent / msgs, "sent": total_sent,
        "delivered": got, "expected": want, "out_of_order_or_repeated": disorder.load(Ordering::Relaxed),
        "seconds": secs,
        "acked_per_s": total_sent as f64 / acked_s, "delivered_per_s": got as f64 / secs,
        "cpu_us_per_item": (cpu1 - cpu0) / total_sent as f64 * 1e6,
    }))
}

async fn setup(name: &str, bin: &str, kind: &str) -> Res<serde_json::Value> {
    let s = Signer::new();
    let (nats, urls) = match name {
        "sqlite" => (Vec::new(), Vec::new()),
        "nats-r1" => start_nats(1)?,
        _ => start_nats(3)?,
    };
    let relays = if name == "cluster" { 3 } else { 1 };
    let mut rs = Vec::new();
    for i in 0..relays {
        let list = if urls.is_empty() {
            None
        } else {
            let mut u = urls.clone();
            let k = i % u.len();
            u.rotate_left(k);
            Some(u.join(","))
        };
        rs.push(start_relay(bin, &s, list.as_deref())?);
    }
    let addrs: Vec<RelayAddr> = rs.iter().map(|(_, a)| a.clone()).collect();
    let procs: Vec<&Proc> = rs.iter().map(|(p, _)| p).chain(nats.iter()).collect();
    eprintln!("[cluster-load] {name} / {kind} …");
    let mut v = workload(kind, &addrs, &procs, &s).await?;
    v["setup"] = name.into();
    eprintln!("[cluster-load] {v}");
    Ok(v)
}

#[tokio::main]
async fn main() -> Res<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let default_bin = std::env::current_exe()?
        .parent()
        .and_then(|p| p.parent())
        .map(|p| p.join("skytale-relay").to_string_lossy().to_string())
        .unwrap_or_default();
    let bin = arg("relay").unwrap_or(default_bin);
    let only = arg("only").unwrap_or_else(|| "sqlite,nats-r1,nats-r3,cluster".to_string());
    let kinds = arg("workload").unwrap_or_else(|| "spread,hot".to_string());
    let mut report = serde_json::json!({
        "loadavg_before": std::fs::read_to_string("/proc/loadavg").unwrap_or_default().trim(),
        "relay": bin, "results": [],
    });
    let mut rate = std::collections::HashMap::new();
    for kind in kinds.split(',') {
        for name in only.split(',') {
            let v = setup(name, &bin, kind).await?;
            rate.insert(format!("{kind}/{name}"), v["delivered_per_s"].as_f64().unwrap_or(0.0));
            if let Some(a) = report["results"].as_array_mut() {
                a.push(v);
            }
        }
    }
    let ratio = |a: &str, b: &str| match (rate.get(a), rate.get(b)) {
        (Some(x), Some(y)) if *y > 0.0 => serde_json::json!(x / y),
        _ => serde_json::Value::Null,
    };
    report["ratios"] = serde_json::json!({
        "spread: nats-r1 / sqlite": ratio("spread/nats-r1", "spread/sqlite"),
        "spread: cluster (3 relays) / nats-r3 (1 relay)": ratio("spread/cluster", "spread/nats-r3"),
        "spread: cluster / sqlite": ratio("spread/cluster", "spread/sqlite"),
        "hot: nats-r1 / sqlite": ratio("hot/nats-r1", "hot/sqlite"),
        "hot: cluster (3 relays) / nats-r3 (1 relay)": ratio("hot/cluster", "hot/nats-r3"),
    });
    report["loadavg_after"] = std::fs::read_to_string("/proc/loadavg").unwrap_or_default().trim().into();
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}
