//! # skytale-bridge
//!
//! A local sidecar that lets non-JS agents on AGNTCY SLIM join Skytale channels, still end to
//! end. It embeds SLIM's own data plane (pinned `agntcy-slim-*` crates) on a loopback address,
//! so unmodified `slim-bindings` apps connect to it, and holds the Skytale identity of each
//! app allowed to use it. A SLIM GROUP session whose channel name is a Skytale channel
//! (`org/namespace/service`) *is* that channel: see [`bridge`] for the mapping and
//! [`control`] for channel control (create, invite, join, members, leave).
//!
//! Usage: `skytale-bridge --config bridge.json` (see [`config`]). `RUST_LOG` sets the log level.

mod auth;
mod bridge;
mod config;
mod control;
mod metrics;

use std::path::PathBuf;
use std::sync::Arc;

fn usage() -> ! {
    eprintln!("usage: skytale-bridge --config <bridge.json>");
    std::process::exit(2)
}

#[tokio::main]
async fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,slim=warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let mut args = std::env::args().skip(1);
    let mut path = None;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--config" | "-c" => path = args.next().map(PathBuf::from),
            "--help" | "-h" => usage(),
            _ => usage(),
        }
    }
    let Some(path) = path else { usage() };
    if let Err(e) = run(path).await {
        eprintln!("skytale-bridge: {e:#}");
        std::process::exit(1);
    }
}

async fn run(path: PathBuf) -> anyhow::Result<()> {
    let config = config::Config::load(&path)?;
    let metrics = Arc::new(metrics::Metrics::default());
    let bridge = bridge::Bridge::start(&config, metrics.clone()).await?;
    if let Some(addr) = config.metrics_listen.clone() {
        tokio::spawn(async move {
            if let Err(e) = metrics::serve(addr, metrics).await {
                tracing::error!(error = %e, "metrics endpoint failed");
            }
        });
    }
    if let Some(addr) = config.health_grpc_listen.clone() {
        tokio::spawn(async move {
            if let Err(e) = metrics::serve_grpc_health(addr).await {
                tracing::error!(error = %e, "grpc health endpoint failed");
            }
        });
    }
    // Machine-readable readiness line for supervisors and tests.
    println!(
        "{}",
        serde_json::json!({ "ready": true, "listen": config.listen, "apps": bridge.twins().iter().map(|t| t.app_name.clone()).collect::<Vec<_>>() })
    );
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = sigterm() => {}
    }
    tracing::info!("shutting down");
    bridge.stop().await;
    Ok(())
}

async fn sigterm() {
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(mut s) => {
            s.recv().await;
        }
        Err(_) => std::future::pending::<()>().await,
    }
}
