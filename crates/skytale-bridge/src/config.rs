//! The bridge configuration (a JSON file): where SLIM apps connect, how the bridge reaches the
//! Skytale API server and relay, and which SLIM app is which Skytale identity.
//!
//! ```json
//! {
//!   "listen": "127.0.0.1:46357",
//!   "metrics_listen": "127.0.0.1:46358",
//!   "health_grpc_listen": "127.0.0.1:46359",
//!   "api_url": "http://127.0.0.1:8080",
//!   "api_key": "sk_live_…",
//!   "relay": "iroh://<endpoint-id>@127.0.0.1:4433",
//!   "apps": [
//!     { "name": "acme/agents/researcher", "secret": "≥ 32 bytes shared with the SLIM app",
//!       "identity": "researcher", "keystore_dir": "/var/lib/skytale/researcher",
//!       "keystore_key": "<64 hex chars>",
//!       "peers": [ { "name": "acme/agents/bob", "identity": "bob" } ] }
//!   ]
//! }
//! ```
//!
//! Every secret may instead be given by environment variable: `api_key_env`, `secret_env`,
//! `keystore_key_env` name the variable to read.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use zeroize::Zeroizing;

/// Default SLIM data-plane listen address (loopback only).
pub const DEFAULT_LISTEN: &str = "127.0.0.1:46357";

/// The whole bridge configuration.
#[derive(Deserialize)]
pub struct Config {
    /// SLIM data-plane listen address; loopback by default.
    #[serde(default = "default_listen")]
    pub listen: String,
    /// HTTP address for `/metrics` and `/health`; none = not served.
    #[serde(default)]
    pub metrics_listen: Option<String>,
    /// Address for a `grpc.health.v1` server; none = not served.
    #[serde(default)]
    pub health_grpc_listen: Option<String>,
    /// Skytale API server URL.
    pub api_url: String,
    /// API key (or `api_key_env`).
    #[serde(default)]
    api_key: Option<String>,
    #[serde(default)]
    api_key_env: Option<String>,
    /// Relay address; `None` = the one the API server hands out.
    #[serde(default)]
    pub relay: Option<String>,
    /// The SLIM apps allowed to use this bridge.
    pub apps: Vec<AppConfig>,
}

/// One SLIM app and the Skytale identity the bridge holds for it.
#[derive(Deserialize)]
pub struct AppConfig {
    /// The app's SLIM name, `org/namespace/app`.
    pub name: String,
    #[serde(default)]
    secret: Option<String>,
    #[serde(default)]
    secret_env: Option<String>,
    /// Skytale identity (1-64 of `A-Z a-z 0-9 - _ . @`).
    pub identity: String,
    /// Keystore directory of that identity.
    pub keystore_dir: PathBuf,
    #[serde(default)]
    keystore_key: Option<String>,
    #[serde(default)]
    keystore_key_env: Option<String>,
    /// Agents this app may open SLIM P2P sessions to: each session maps to a two-member channel
    /// `org/p2p/<hash of both identities>` that the bridge creates and adds the peer to.
    #[serde(default)]
    pub peers: Vec<PeerConfig>,
}

/// A P2P peer: its SLIM name (what the app opens the session to) and its Skytale identity.
#[derive(Deserialize, Clone)]
pub struct PeerConfig {
    /// SLIM name, `org/namespace/agent`.
    pub name: String,
    /// Skytale identity.
    pub identity: String,
}

fn default_listen() -> String {
    DEFAULT_LISTEN.to_string()
}

fn secret_value(
    inline: &Option<String>,
    env: &Option<String>,
    what: &str,
) -> anyhow::Result<Zeroizing<String>> {
    if let Some(v) = inline {
        return Ok(Zeroizing::new(v.clone()));
    }
    if let Some(var) = env {
        return std::env::var(var)
            .map(Zeroizing::new)
            .map_err(|_| anyhow::anyhow!("{what}: environment variable {var} is not set"));
    }
    anyhow::bail!("{what} is missing (give it inline or by *_env)")
}

impl Config {
    /// Reads and checks a config file.
    pub fn load(path: &Path) -> anyhow::Result<Config> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("read {}: {e}", path.display()))?;
        let config: Config = serde_json::from_str(&text)
            .map_err(|e| anyhow::anyhow!("parse {}: {e}", path.display()))?;
        for app in &config.apps {
            if app.name.split('/').count() != 3 || app.name.split('/').any(str::is_empty) {
                anyhow::bail!("app name {:?} is not org/namespace/app", app.name);
            }
            if app.secret()?.len() < 32 {
                anyhow::bail!(
                    "the shared secret of {} must be at least 32 bytes (SLIM requires it)",
                    app.name
                );
            }
        }
        Ok(config)
    }

    /// The API key.
    pub fn api_key(&self) -> anyhow::Result<Zeroizing<String>> {
        secret_value(&self.api_key, &self.api_key_env, "api_key")
    }
}

impl AppConfig {
    /// The SLIM shared secret of the app.
    pub fn secret(&self) -> anyhow::Result<Zeroizing<String>> {
        secret_value(&self.secret, &self.secret_env, "secret")
    }

    /// The keystore key (64 hex chars = 32 bytes).
    pub fn keystore_key(&self) -> anyhow::Result<Zeroizing<Vec<u8>>> {
        let hex_key = secret_value(&self.keystore_key, &self.keystore_key_env, "keystore_key")?;
        let bytes = Zeroizing::new(
            hex::decode(hex_key.trim()).map_err(|_| anyhow::anyhow!("keystore_key is not hex"))?,
        );
        if bytes.len() != 32 {
            anyhow::bail!("keystore_key must be 32 bytes (64 hex chars)");
        }
        Ok(bytes)
    }

    /// The name of the bridge's participant for this app: `org/namespace/app-skytale`. The app
    /// invites it into its sessions.
    pub fn twin_name(&self) -> String {
        format!("{}-skytale", self.name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(json: &str) -> (tempdir::Dir, PathBuf) {
        let dir = tempdir::Dir::new();
        let path = dir.0.join("bridge.json");
        std::fs::write(&path, json).unwrap();
        (dir, path)
    }

    mod tempdir {
        pub struct Dir(pub std::path::PathBuf);
        impl Dir {
            pub fn new() -> Dir {
                let p = std::env::temp_dir().join(format!(
                    "skytale-bridge-cfg-{}-{}",
                    std::process::id(),
                    rand_suffix()
                ));
                std::fs::create_dir_all(&p).unwrap();
                Dir(p)
            }
        }
        impl Drop for Dir {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir_all(&self.0);
            }
        }
        fn rand_suffix() -> u128 {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        }
    }

    const KEY: &str = "0000000000000000000000000000000000000000000000000000000000000001";

    fn config_json(name: &str, secret: &str) -> String {
        format!(
            r#"{{"api_url":"http://127.0.0.1:1","api_key":"sk_live_x","apps":[{{"name":"{name}","secret":"{secret}","identity":"py","keystore_dir":"/tmp/x","keystore_key":"{KEY}"}}]}}"#
        )
    }

    #[test]
    fn parses_a_config_with_defaults_and_twin_names() {
        let (_d, path) = write(&config_json("acme/agents/py", &"s".repeat(32)));
        let config = Config::load(&path).unwrap();
        assert_eq!(config.listen, DEFAULT_LISTEN);
        assert_eq!(config.apps[0].twin_name(), "acme/agents/py-skytale");
        assert_eq!(config.apps[0].keystore_key().unwrap().len(), 32);
        assert_eq!(config.api_key().unwrap().as_str(), "sk_live_x");
    }

    #[test]
    fn refuses_short_secrets_and_bad_names() {
        let (_d, path) = write(&config_json("acme/agents/py", "short"));
        assert!(
            Config::load(&path)
                .err()
                .unwrap()
                .to_string()
                .contains("at least 32 bytes")
        );
        let (_d, path) = write(&config_json("acme/py", &"s".repeat(32)));
        assert!(
            Config::load(&path)
                .err()
                .unwrap()
                .to_string()
                .contains("org/namespace/app")
        );
    }
}
