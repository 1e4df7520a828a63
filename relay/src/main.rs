//! `skytale-relay --config relay.toml`: starts the relay (see the `skytale_relay` crate docs).

use std::path::PathBuf;

use clap::Parser;

/// Skytale relay: blind MLS delivery service over iroh QUIC.
///
/// Settings come from the TOML file and SKYTALE_RELAY_* environment variables (which win);
/// see relay/README.md.
#[derive(Parser)]
#[command(name = "skytale-relay", version, about)]
struct Cli {
    /// Path of relay.toml (default: $SKYTALE_RELAY_CONFIG, else built-in defaults + env).
    #[arg(short, long, value_name = "FILE", env = "SKYTALE_RELAY_CONFIG")]
    config: Option<PathBuf>,
    /// Store backend: `sqlite` (embedded, one node) or `nats` (a relay cluster on NATS
    /// JetStream). Overrides the file and $SKYTALE_RELAY_STORE.
    #[arg(long, value_name = "sqlite|nats")]
    store: Option<String>,
    /// NATS servers for `--store nats`, comma-separated (`nats://10.0.0.1:4222,nats://10.0.0.2:4222`).
    /// Overrides the file and $SKYTALE_RELAY_NATS_URL.
    #[arg(long, value_name = "URLS")]
    nats_url: Option<String>,
}

fn main() {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,iroh=warn,noq=warn")),
        )
        .init();
    let loaded = skytale_relay::config::Config::load(cli.config.as_deref()).and_then(|mut c| {
        if let Some(kind) = &cli.store {
            c.store.kind = kind.parse()?;
        }
        if let Some(url) = cli.nats_url {
            c.store.nats_url = url;
        }
        Ok(c)
    });
    let config = match loaded {
        Ok(c) => c,
        Err(e) => {
            eprintln!("skytale-relay: {e}");
            std::process::exit(2);
        }
    };
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("skytale-relay: tokio runtime: {e}");
            std::process::exit(1);
        }
    };
    if let Err(e) = rt.block_on(skytale_relay::run(config)) {
        eprintln!("skytale-relay: {e}");
        std::process::exit(1);
    }
}
