//! Relay tokens: fetched from the API server with the API key (`POST /v1/tokens {identity}`),
//! cached, and refreshed before they expire; and the HTTP plumbing shared with the agent
//! registry ([`crate::registry`]). The API key and tokens live in zeroizing strings and are
//! never logged.

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
    /// Every relay address the API server published (a relay cluster: `relays`, and `relay`
    /// for servers that publish one), deduplicated, in the server's order.
    pub relays: Vec<String>,
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

/// Talks to the API server for one agent identity: tokens (fetched and cached), and through
/// [`crate::registry`] registration, issuer keys and revocations.
pub struct TokenSource {
    pub(crate) api_url: String,
    api_key: Zeroizing<String>,
    pub(crate) identity: String,
    pub(crate) http: reqwest::Client,
    cached: Mutex<Option<Token>>,
}

#[derive(serde::Deserialize)]
struct TokenReply {
    token: String,
    #[serde(rename = "expiresAt")]
    expires_at: String,
    relay: Option<String>,
    #[serde(default)]
    relays: Vec<String>,
}

/// Splits comma-separated relay addresses and appends the new ones to `out`.
pub(crate) fn push_relays<'a>(out: &mut Vec<String>, addrs: impl IntoIterator<Item = &'a str>) {
    for a in addrs.into_iter().flat_map(|a| a.split(',')).map(str::trim).filter(|a| !a.is_empty()) {
        if !out.iter().any(|x| x == a) {
            out.push(a.to_string());
        }
    }
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

/// Maps an API server error code to the client's static code (unknown ones stay generic).
fn api_code(code: &str, status: u16) -> &'static str {
    const KNOWN: &[&str] = &[
        "SKYTALE_AUTH_KEY_INVALID",
        "SKYTALE_AUTH_KEY_REVOKED",
        "SKYTALE_RATE_LIMITED",
        "SKYTALE_AUTH_IDENTITY_FORBIDDEN",
        "SKYTALE_FORBIDDEN",
        "SKYTALE_AGENT_KEY_MISMATCH",
        "SKYTALE_AGENT_REVOKED",
        "SKYTALE_AGENT_NOT_REGISTERED",
        "SKYTALE_INVALID_REQUEST",
        "SKYTALE_NOT_FOUND",
        "SKYTALE_CONFLICT",
    ];
    if let Some(k) = KNOWN.iter().find(|k| **k == code) {
        return k;
    }
    match (code, status) {
        ("auth_key_invalid", _) | (_, 401) => "SKYTALE_AUTH_KEY_INVALID",
        ("auth_key_revoked", _) => "SKYTALE_AUTH_KEY_REVOKED",
        ("rate_limited", _) | (_, 429) => "SKYTALE_RATE_LIMITED",
        _ => "SKYTALE_API_ERROR",
    }
}

/// Longest wait taken from a `Retry-After` (the API server's windows are one minute).
const MAX_RETRY_AFTER: Duration = Duration::from_secs(120);

/// The wait a 429's `Retry-After` asks for: whole seconds (the API server's form), at least 1 s
/// and at most [`MAX_RETRY_AFTER`]; 1 s when it is missing or not a number of seconds.
fn retry_after_of(header: Option<&str>) -> Duration {
    let secs = header.and_then(|h| h.trim().parse::<u64>().ok()).unwrap_or(1);
    Duration::from_secs(secs.max(1)).min(MAX_RETRY_AFTER)
}

fn unreachable(what: &str, e: reqwest::Error) -> ClientError {
    ClientError::Api { code: "SKYTALE_API_UNREACHABLE", message: format!("{what}: {}", e.without_url()) }
}

pub(crate) fn parse_iso8601(s: &str) -> Option<u64> {
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
        Ok(TokenSource {
            api_url: api_url.trim_end_matches('/').to_string(),
            api_key,
            identity: String::new(),
            http,
            cached: Mutex::new(None),
        })
    }

    /// The same, for tokens bound to `identity`.
    pub fn for_identity(api_url: &str, api_key: Zeroizing<String>, identity: &str) -> Result<TokenSource> {
        let mut t = TokenSource::new(api_url, api_key)?;
        t.identity = identity.to_string();
        Ok(t)
    }

    /// Sends a request to the API server (`body` = JSON, `None` = GET) with the API key when
    /// `authed`, and returns the JSON reply; API errors keep their `SKYTALE_*` code.
    pub(crate) async fn request_json<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        body: Option<serde_json::Value>,
        authed: bool,
    ) -> Result<T> {
        let url = format!("{}{path}", self.api_url);
        let mut req = match &body {
            Some(b) => self.http.post(&url).header("content-type", "application/json").body(b.to_string()),
            None => self.http.get(&url),
        };
        if authed {
            let bearer = Zeroizing::new(format!("Bearer {}", self.api_key.as_str()));
            req = req.header("authorization", bearer.as_str());
        }
        let what = format!("{} {path}", if body.is_some() { "POST" } else { "GET" });
        let resp = req.send().await.map_err(|e| unreachable(&what, e))?;
        let status = resp.status();
        let retry_after =
            resp.headers().get(reqwest::header::RETRY_AFTER).and_then(|v| v.to_str().ok()).map(str::to_owned);
        let bytes = resp.bytes().await.map_err(|e| unreachable(&what, e))?;
        if !status.is_success() {
            let (code, message) = match serde_json::from_slice::<ApiErrorBody>(&bytes) {
                Ok(b) => (b.error.code, b.error.message),
                Err(_) => (String::new(), format!("HTTP {status}")),
            };
            if status.as_u16() == 429 {
                return Err(ClientError::ApiRateLimited {
                    message: format!("{what}: {message}"),
                    retry_after: retry_after_of(retry_after.as_deref()),
                });
            }
            return Err(ClientError::Api {
                code: api_code(&code, status.as_u16()),
                message: format!("{what}: {message}"),
            });
        }
        serde_json::from_slice(&bytes)
            .map_err(|_| ClientError::Api { code: "SKYTALE_API_ERROR", message: format!("{what}: malformed reply") })
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
        let body = if self.identity.is_empty() {
            serde_json::json!({})
        } else {
            serde_json::json!({ "identity": self.identity })
        };
        let reply: TokenReply = self.request_json("/v1/tokens", Some(body), true).await?;
        let expires_at = parse_iso8601(&reply.expires_at).unwrap_or_else(|| now_secs() + 600);
        let mut relays = Vec::new();
        push_relays(&mut relays, reply.relays.iter().map(String::as_str).chain(reply.relay.as_deref()));
        Ok(Token { jwt: Zeroizing::new(reply.token), expires_at, relay: reply.relay.filter(|r| !r.is_empty()), relays })
    }

    /// Drops the cached token (e.g. after the relay refused it).
    pub async fn invalidate(&self) {
        *self.cached.lock().await = None;
    }
}

#[cfg(test)]
mod tests {
    use super::{parse_iso8601, push_relays, retry_after_of, TokenReply, MAX_RETRY_AFTER};
    use std::time::Duration;

    #[test]
    fn retry_after_is_read_in_seconds_and_bounded() {
        assert_eq!(retry_after_of(Some("17")), Duration::from_secs(17));
        assert_eq!(retry_after_of(Some(" 0 ")), Duration::from_secs(1));
        assert_eq!(retry_after_of(None), Duration::from_secs(1));
        assert_eq!(retry_after_of(Some("Wed, 21 Oct 2026 07:28:00 GMT")), Duration::from_secs(1));
        assert_eq!(retry_after_of(Some("999999999999")), MAX_RETRY_AFTER);
    }

    #[test]
    fn relay_lists() {
        let r: TokenReply =
            serde_json::from_str(r#"{"token":"t","expiresAt":"x","relay":"a","relays":["a","b, c",""]}"#).unwrap();
        let mut out = Vec::new();
        push_relays(&mut out, r.relays.iter().map(String::as_str).chain(r.relay.as_deref()));
        assert_eq!(out, vec!["a", "b", "c"]);
        let r: TokenReply = serde_json::from_str(r#"{"token":"t","expiresAt":"x","relay":"a"}"#).unwrap();
        assert!(r.relays.is_empty());
    }

    #[test]
    fn iso_dates() {
        assert_eq!(parse_iso8601("1970-01-01T00:00:00.000Z"), Some(0));
        assert_eq!(parse_iso8601("2026-11-23T18:00:00.000Z"), Some(1_795_456_800));
        assert_eq!(parse_iso8601("2000-03-01T00:00:01Z"), Some(951_868_801));
        assert_eq!(parse_iso8601("garbage"), None);
    }
}
