//! Relay tokens: fetched from the API server with the API key (`POST /v1/tokens`), cached, and
//! refreshed before they expire. The API key and tokens live in zeroizing strings and are never
//! logged.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::Mutex;
use zeroize::Zeroizing;

use crate::error::{ClientError, Result};

/// Refresh a token when less than this is left of its life.
pub const REFRESH_MARGIN: Duration = Duration::from_secs(300);

/// A relay token and what came with it.
#[derive(Clone)]
pub struct Token {
    /// The JWT.
    pub jwt: Zeroizing<String>,
    /// Expiry, unix seconds.
    pub expires_at: u64,
    /// Relay address published by the API server, if any.
    pub relay: Option<String>,
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Token").field("jwt", &"[redacted]").field("expires_at", &self.expires_at).finish()
    }
}

fn now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

impl Token {
    /// Seconds of validity left.
    pub fn remaining(&self) -> Duration {
        Duration::from_secs(self.expires_at.saturating_sub(now_secs()))
    }
}

/// Fetches and caches tokens.
pub struct TokenSource {
    api_url: String,
    api_key: Zeroizing<String>,
    http: reqwest::Client,
    cached: Mutex<Option<Token>>,
}

#[derive(serde::Deserialize)]
struct TokenReply {
    token: String,
    #[serde(rename = "expiresAt")]
    expires_at: String,
    relay: Option<String>,
}

#[derive(serde::Deserialize)]
struct ApiErrorBody {
    error: ApiError,
}

#[derive(serde::Deserialize)]
struct ApiError {
    code: String,
    message: String,
}

fn parse_iso8601(s: &str) -> Option<u64> {
    // "2026-11-23T18:00:00.000Z"
    let (date, time) = s.split_once('T')?;
    let mut d = date.split('-').map(|x| x.parse::<i64>());
    let (y, m, day) = (d.next()?.ok()?, d.next()?.ok()?, d.next()?.ok()?);
    let time = time.trim_end_matches('Z');
    let mut t = time.split(':');
    let (hh, mm) = (t.next()?.parse::<i64>().ok()?, t.next()?.parse::<i64>().ok()?);
    let ss = t.next()?.split('.').next()?.parse::<i64>().ok()?;
    // Days from civil (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    u64::try_from(days * 86_400 + hh * 3600 + mm * 60 + ss).ok()
}

impl TokenSource {
    /// A token source for the API server at `api_url` (e.g. `http://127.0.0.1:8080`).
    pub fn new(api_url: &str, api_key: Zeroizing<String>) -> Result<TokenSource> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(15))
            .build()
            .map_err(|e| ClientError::Api { code: "SKYTALE_API_UNREACHABLE", message: e.to_string() })?;
        Ok(TokenSource { api_url: api_url.trim_end_matches('/').to_string(), api_key, http, cached: Mutex::new(None) })
    }

    /// A valid token: the cached one if it has more than [`REFRESH_MARGIN`] left, else a new one.
    pub async fn get(&self) -> Result<Token> {
        let mut cached = self.cached.lock().await;
        if let Some(t) = cached.as_ref() {
            if t.remaining() > REFRESH_MARGIN {
                return Ok(t.clone());
            }
        }
        let fresh = self.fetch().await?;
        *cached = Some(fresh.clone());
        Ok(fresh)
    }

    async fn fetch(&self) -> Result<Token> {
        let bearer = Zeroizing::new(format!("Bearer {}", self.api_key.as_str()));
        let resp = self
            .http
            .post(format!("{}/v1/tokens", self.api_url))
            .header("authorization", bearer.as_str())
            .header("content-type", "application/json")
            .body("{}")
            .send()
            .await
            .map_err(|e| ClientError::Api { code: "SKYTALE_API_UNREACHABLE", message: format!("POST /v1/tokens: {}", e.without_url()) })?;
        let status = resp.status();
        let body = resp
            .bytes()
            .await
            .map_err(|e| ClientError::Api { code: "SKYTALE_API_UNREACHABLE", message: e.without_url().to_string() })?;
        if !status.is_success() {
            let (code, message) = match serde_json::from_slice::<ApiErrorBody>(&body) {
                Ok(b) => (b.error.code, b.error.message),
                Err(_) => (String::new(), format!("HTTP {status}")),
            };
            let code = match code.as_str() {
                "auth_key_invalid" => "SKYTALE_AUTH_KEY_INVALID",
                "auth_key_revoked" => "SKYTALE_AUTH_KEY_REVOKED",
                "rate_limited" => "SKYTALE_AUTH_RATE_LIMITED",
                _ if status.as_u16() == 401 => "SKYTALE_AUTH_KEY_INVALID",
                _ => "SKYTALE_API_ERROR",
            };
            return Err(ClientError::Api { code, message });
        }
        let reply: TokenReply = serde_json::from_slice(&body)
            .map_err(|_| ClientError::Api { code: "SKYTALE_API_ERROR", message: "malformed token reply".into() })?;
        let expires_at = parse_iso8601(&reply.expires_at).unwrap_or_else(|| now_secs() + 600);
        Ok(Token { jwt: Zeroizing::new(reply.token), expires_at, relay: reply.relay.filter(|r| !r.is_empty()) })
    }
}

#[cfg(test)]
mod tests {
    use super::parse_iso8601;

    #[test]
    fn iso_dates() {
        assert_eq!(parse_iso8601("1970-01-01T00:00:00.000Z"), Some(0));
        assert_eq!(parse_iso8601("2026-11-23T18:00:00.000Z"), Some(1_795_456_800));
        assert_eq!(parse_iso8601("2000-03-01T00:00:01Z"), Some(951_868_801));
        assert_eq!(parse_iso8601("garbage"), None);
    }
}
