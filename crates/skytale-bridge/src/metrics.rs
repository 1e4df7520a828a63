//! Counters of the bridge and a tiny HTTP endpoint serving them as Prometheus text on
//! `/metrics`, plus `/health` (200 once the SLIM data plane is up), and `grpc.health.v1`.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
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

/// Serves `/metrics` and `/health` on `addr` until the process ends, with hyper's HTTP/1.1
/// server (as the relay does): a request is read whole, however it arrives, before the answer
/// is written, and a failed `accept` (a connection reset before it was taken, too many open
/// files) is logged and the endpoint keeps serving.
pub async fn serve(addr: String, metrics: Arc<Metrics>) -> anyhow::Result<()> {
    let listener = TcpListener::bind(&addr).await?;
    tracing::info!(%addr, "metrics endpoint listening");
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                tracing::warn!(error = %e, "metrics endpoint: accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| {
                let metrics = metrics.clone();
                async move { Ok::<_, Infallible>(route(&metrics, &req)) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .keep_alive(false)
                .serve_connection(TokioIo::new(stream), svc);
            if let Ok(Err(e)) = tokio::time::timeout(Duration::from_secs(10), conn).await {
                tracing::debug!(error = %e, "metrics endpoint: connection failed");
            }
        });
    }
}

/// The answer to one request: `GET /metrics`, `GET /health`, 404 for other paths, 405 for
/// other methods.
fn route(metrics: &Metrics, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    let (status, body) = match (req.method(), req.uri().path()) {
        (&Method::GET, "/metrics") => (StatusCode::OK, metrics.render()),
        (&Method::GET, "/health") => (StatusCode::OK, "ok\n".to_string()),
        (&Method::GET, _) => (StatusCode::NOT_FOUND, "not found\n".to_string()),
        _ => (StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n".to_string()),
    };
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("text/plain; version=0.0.4"));
    resp
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
