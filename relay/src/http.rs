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
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::Relay;

/// Most HTTP connections served at once; a connection past it is closed at once. Monitoring
/// needs a few; the cap bounds the file descriptors an unauthenticated client can hold here,
/// which the relay needs elsewhere (JWKS refresh and revocation polls open sockets).
pub const MAX_CONNECTIONS: usize = 256;
/// A connection must have sent its request headers within this time, or it is closed.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(2);
/// The whole exchange (headers, answer) must be over within this time.
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(10);

/// After a failed `accept`, the endpoint waits this long before it tries again.
const ACCEPT_RETRY: Duration = Duration::from_millis(100);
/// A failed `accept` is logged at most once per this interval.
const ACCEPT_LOG_EVERY: Duration = Duration::from_secs(10);

/// Serves HTTP on `listener` until the process ends.
///
/// Anyone who reaches the port can connect without a token, so what one client can hold is
/// bounded: at most [`MAX_CONNECTIONS`] connections at once (more are closed as soon as they
/// are accepted), each closed if its request headers have not arrived within
/// [`HEADER_READ_TIMEOUT`]. A failed `accept` (out of file descriptors, say) is logged, and the
/// endpoint waits [`ACCEPT_RETRY`] before trying again. Retrying at once would spin a tokio
/// worker at full CPU for as long as the descriptors are exhausted, since the waiting
/// connection keeps the listener readable.
pub async fn serve(listener: TcpListener, relay: Arc<Relay>) {
    let mut last_logged: Option<tokio::time::Instant> = None;
    let mut last_refused: Option<tokio::time::Instant> = None;
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
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
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            if last_refused.is_none_or(|at| at.elapsed() >= ACCEPT_LOG_EVERY) {
                tracing::warn!(max = MAX_CONNECTIONS, "HTTP endpoint: too many connections; closing new ones");
                last_refused = Some(tokio::time::Instant::now());
            }
            drop(stream);
            continue;
        };
        let relay = relay.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let svc = hyper::service::service_fn(move |req| {
                let relay = relay.clone();
                async move { Ok::<_, Infallible>(route(&relay, &req)) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .keep_alive(false)
                .serve_connection(TokioIo::new(stream), svc);
            // Ends with the answer, a closed or timed-out connection: nothing to report.
            let _ = tokio::time::timeout(CONNECTION_TIMEOUT, conn).await;
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
