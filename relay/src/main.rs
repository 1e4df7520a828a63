//! `skytale-relay --config relay.toml`: starts the relay (see the `skytale_relay` crate docs).

use std::path::PathBuf;

fn usage() -> ! {
    eprintln!("usage: skytale-relay [--config relay.toml]\n(env overrides: SKYTALE_RELAY_*; see relay/README.md)");
    std::process::exit(2)
}

fn main() {
    let mut args = std::env::args().skip(1);
    let mut config_path: Option<PathBuf> = None;
    while let Some(a) = args.next() {
        match a.as_str() {
            "--config" | "-c" => match args.next() {
                Some(p) => config_path = Some(PathBuf::from(p)),
                None => usage(),
            },
            "--help" | "-h" => usage(),
            "--version" | "-V" => {
                println!("skytale-relay {}", env!("CARGO_PKG_VERSION"));
                return;
            }
            _ => usage(),
        }
    }
    if config_path.is_none() {
        config_path = std::env::var("SKYTALE_RELAY_CONFIG").ok().map(PathBuf::from);
    }
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,iroh=warn,noq=warn")),
        )
        .init();
    let config = match skytale_relay::config::Config::load(config_path.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("skytale-relay: {e}");
            std::process::exit(2);
        }
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    if let Err(e) = rt.block_on(skytale_relay::run(config)) {
        eprintln!("skytale-relay: {e}");
        std::process::exit(1);
    }
}
