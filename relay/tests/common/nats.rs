//! Real `nats-server` processes for the JetStream store: one node or a cluster of three with
//! JetStream and routes on loopback, each with a temp store dir, killed on drop.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The `nats-server` binary: `$NATS_SERVER_BIN`, else from `PATH`, else `/usr/sbin/nats-server`.
pub fn nats_server_bin() -> Option<PathBuf> {
    if let Ok(p) = std::env::var("NATS_SERVER_BIN") {
        return Some(PathBuf::from(p));
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/local/bin")])
        .map(|d| d.join("nats-server"))
        .find(|p| p.is_file())
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// One nats-server process.
pub struct NatsNode {
    child: Option<Child>,
    pub port: u16,
    pub cluster_port: u16,
    pub name: String,
    dir: PathBuf,
    routes: Vec<u16>,
}

impl NatsNode {
    fn spawn(&mut self) {
        let bin =
            nats_server_bin().expect("nats-server not found (apt-get install nats-server or set NATS_SERVER_BIN)");
        let mut cmd = Command::new(bin);
        cmd.args(["-js", "-a", "127.0.0.1", "-p", &self.port.to_string(), "-n", &self.name])
            .arg("-sd")
            .arg(self.dir.join("js"))
            .stdout(Stdio::null())
            .stderr(Stdio::from(std::fs::File::create(self.dir.join(format!("{}.log", self.name))).unwrap()))
            .stdin(Stdio::null());
        if !self.routes.is_empty() {
            let routes: Vec<String> = self.routes.iter().map(|p| format!("nats://127.0.0.1:{p}")).collect();
            cmd.args(["--cluster_name", "skytale-test"])
                .args(["--cluster", &format!("nats://127.0.0.1:{}", self.cluster_port)])
                .args(["--routes", &routes.join(",")]);
        }
        self.child = Some(cmd.spawn().expect("spawn nats-server"));
        let deadline = Instant::now() + Duration::from_secs(15);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "nats-server {} did not listen", self.name);
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// SIGKILL.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again with the same ports and store dir.
    pub fn restart(&mut self) {
        self.kill9();
        self.spawn();
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }
}

impl Drop for NatsNode {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// A set of nats-server nodes (1 = standalone JetStream, 3 = a JetStream cluster).
pub struct NatsCluster {
    pub nodes: Vec<NatsNode>,
    dir: PathBuf,
}

impl NatsCluster {
    pub fn start(n: usize) -> NatsCluster {
        let dir = super::temp_dir("nats");
        let ports: Vec<(u16, u16)> = (0..n).map(|_| (free_port(), free_port())).collect();
        let mut nodes: Vec<NatsNode> = ports
            .iter()
            .enumerate()
            .map(|(i, (p, c))| NatsNode {
                child: None,
                port: *p,
                cluster_port: *c,
                name: format!("n{}", i + 1),
                dir: dir.join(format!("n{}", i + 1)),
                routes: if n > 1 { ports.iter().filter(|x| x.1 != *c).map(|x| x.1).collect() } else { Vec::new() },
            })
            .collect();
        for node in &mut nodes {
            std::fs::create_dir_all(&node.dir).unwrap();
            node.spawn();
        }
        NatsCluster { nodes, dir }
    }

    /// Comma-separated client URLs of every node.
    pub fn urls(&self) -> String {
        self.nodes.iter().map(|n| n.url()).collect::<Vec<_>>().join(",")
    }

    pub fn logs(&self) -> String {
        let mut s = String::new();
        for n in &self.nodes {
            s.push_str(&std::fs::read_to_string(n.dir.join(format!("{}.log", n.name))).unwrap_or_default());
        }
        s
    }
}

impl Drop for NatsCluster {
    fn drop(&mut self) {
        for n in &mut self.nodes {
            n.kill9();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
