//! `GET /health` (JSON with the relay address) and `GET /metrics` (Prometheus text), served
//! with hyper's HTTP/1.1 server (already in the dependency tree through reqwest).

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use crate::Relay;

/// After a failed `accept`, the endpoint waits this long before it tries again.
const ACCEPT_RETRY: Duration = Duration::from_millis(100);
/// A failed `accept` is logged at most once per this interval.
const ACCEPT_LOG_EVERY: Duration = Duration::from_secs(10);

/// Serves HTTP on `listener` until the process ends.
///
/// A failed `accept` (out of file descriptors, say, because someone holds many idle
/// connections open) is logged, and the endpoint waits [`ACCEPT_RETRY`] before trying again.
/// Retrying at once would spin a tokio worker at full CPU for as long as the descriptors are
/// exhausted, since the waiting connection keeps the listener readable.
pub async fn serve(listener: TcpListener, relay: Arc<Relay>) {
    let mut last_logged: Option<tokio::time::Instant> = None;
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                if last_logged.is_none_or(|at| at.elapsed() >= ACCEPT_LOG_EVERY) {
                    tracing::warn!(error = %e, "HTTP endpoint: accept failed; retrying every 100 ms");
                    last_logged = Some(tokio::time::Instant::now());
                }
                tokio::time::sleep(ACCEPT_RETRY).await;
                continue;
            }
        };
        let relay = relay.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| {
                let relay = relay.clone();
                async move { Ok::<_, Infallible>(route(&relay, &req)) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .keep_alive(false)
                .serve_connection(TokioIo::new(stream), svc);
            let _ = tokio::time::timeout(Duration::from_secs(10), conn).await;
        });
    }
}

fn route(relay: &Relay, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    let (status, ctype, body) = match (req.method(), req.uri().path()) {
        (&Method::GET, "/health") => (StatusCode::OK, "application/json", relay.health_json()),
        (&Method::GET, "/metrics") => (StatusCode::OK, "text/plain; version=0.0.4", relay.metrics.render()),
        (&Method::GET, _) => (StatusCode::NOT_FOUND, "text/plain", "not found\n".to_string()),
        _ => (StatusCode::METHOD_NOT_ALLOWED, "text/plain", "method not allowed\n".to_string()),
    };
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    resp.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static(ctype));
    resp
}
