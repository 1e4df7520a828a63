//! Counters of the bridge and a tiny HTTP endpoint serving them as Prometheus text on
//! `/metrics`, plus `/health` (200 once the SLIM data plane is up), and `grpc.health.v1`.

use std::sync::atomic::{AtomicU64, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// Process-wide counters.
#[derive(Default)]
pub struct Metrics {
    /// Messages from SLIM apps encrypted into channels.
    pub to_channel: AtomicU64,
    /// Channel messages published to SLIM apps.
    pub to_app: AtomicU64,
    /// Sessions accepted.
    pub sessions: AtomicU64,
    /// Sessions or requests refused (unknown channel, other org, failed join, …).
    pub refused: AtomicU64,
    /// SLIM identity tokens that failed verification (wrong secret).
    pub auth_failures: AtomicU64,
    /// Control operations answered.
    pub control_ops: AtomicU64,
}

impl Metrics {
    /// Adds one to `counter`.
    pub fn inc(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let rows = [
            (
                "skytale_bridge_to_channel_total",
                "Messages from SLIM apps sent into Skytale channels",
                &self.to_channel,
            ),
            (
                "skytale_bridge_to_app_total",
                "Channel messages published to SLIM apps",
                &self.to_app,
            ),
            (
                "skytale_bridge_sessions_total",
                "SLIM sessions accepted",
                &self.sessions,
            ),
            (
                "skytale_bridge_refused_total",
                "Sessions or requests refused",
                &self.refused,
            ),
            (
                "skytale_bridge_auth_failures_total",
                "SLIM identity tokens that failed verification",
                &self.auth_failures,
            ),
            (
                "skytale_bridge_control_ops_total",
                "Control operations answered",
                &self.control_ops,
            ),
        ];
        let mut out = String::new();
        for (name, help, value) in rows {
            out.push_str(&format!(
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}\n",
                value.load(Ordering::Relaxed)
            ));
        }
        out
    }
}

/// Serves `/metrics` and `/health` on `addr` until the process ends.
pub async fn serve(addr: String, metrics: std::sync::Arc<Metrics>) -> anyhow::Result<()> {
    let listener = TcpListener::bind(&addr).await?;
    tracing::info!(%addr, "metrics endpoint listening");
    loop {
        let (mut sock, _) = listener.accept().await?;
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let mut buf = [0u8; 1024];
            let n = sock.read(&mut buf).await.unwrap_or(0);
            let req = String::from_utf8_lossy(&buf[..n]);
            let path = req.split_whitespace().nth(1).unwrap_or("/");
            let (status, body) = match path {
                "/metrics" => ("200 OK", metrics.render()),
                "/health" => ("200 OK", "ok\n".to_string()),
                _ => ("404 Not Found", "not found\n".to_string()),
            };
            let resp = format!(
                "HTTP/1.1 {status}\r\ncontent-type: text/plain; version=0.0.4\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = sock.write_all(resp.as_bytes()).await;
        });
    }
}

/// Serves `grpc.health.v1.Health` on `addr`: `""` and `skytale.bridge` are SERVING (the bridge
/// starts this only once the SLIM data plane is up and every identity is connected).
pub async fn serve_grpc_health(addr: String) -> anyhow::Result<()> {
    let (reporter, service) = tonic_health::server::health_reporter();
    reporter
        .set_service_status("skytale.bridge", tonic_health::ServingStatus::Serving)
        .await;
    let sock: std::net::SocketAddr = addr
        .parse()
        .map_err(|e| anyhow::anyhow!("health_grpc_listen {addr}: {e}"))?;
    tracing::info!(%addr, "grpc.health.v1 listening");
    tonic::transport::Server::builder()
        .add_service(service)
        .serve(sock)
        .await?;
    Ok(())
}
