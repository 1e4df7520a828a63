//! Token verification: EdDSA (Ed25519) JWTs from the API server, checked against its JWKS
//! (fetched at start, refetched on an unknown `kid`, rate-limited) and/or a configured key.
//! Tokens are never logged; errors carry only the failure kind.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{decode, decode_header, Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use skytale_proto::ErrorCode;

use crate::config::AuthConfig;
use crate::error::{RelayError, Result};

/// Claims the relay reads from a token.
#[derive(Clone, Debug, Deserialize)]
pub struct Claims {
    /// Subject (the agent / API key owner).
    pub sub: String,
    /// Organisation; the first component of every channel this token may touch.
    pub org: String,
    /// Expiry (unix seconds).
    pub exp: u64,
    /// Issuer.
    pub iss: String,
    /// Scope: `channels:rw` (read and write) or `channels:r` (read only).
    #[serde(default)]
    pub scope: Option<serde_json::Value>,
    /// Issued at (unix seconds).
    #[serde(default)]
    pub iat: Option<u64>,
    /// Id of the API key that minted the token (for revocation).
    #[serde(default)]
    pub akid: Option<String>,
    /// Token id.
    #[serde(default)]
    pub jti: Option<String>,
    /// The agent identity the token is for (required by the relay).
    #[serde(default)]
    pub identity: Option<String>,
}

/// One JWK of the API server's JWKS.
#[derive(Deserialize)]
struct Jwk {
    kty: String,
    #[serde(default)]
    crv: Option<String>,
    #[serde(default)]
    x: Option<String>,
    #[serde(default)]
    kid: Option<String>,
}

#[derive(Deserialize)]
struct Jwks {
    keys: Vec<Jwk>,
}

/// Verifies relay tokens.
pub struct Verifier {
    cfg: AuthConfig,
    static_key: Option<DecodingKey>,
    jwks: Mutex<HashMap<String, DecodingKey>>,
    last_fetch: tokio::sync::Mutex<Option<Instant>>,
    http: Option<reqwest::Client>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn invalid(msg: &str) -> RelayError {
    RelayError::wire(ErrorCode::AuthInvalid, msg)
}

/// Parses a configured public key: PEM (SPKI) or base64url raw 32-byte `x`.
pub fn parse_public_key(s: &str) -> Result<DecodingKey> {
    let s = s.trim();
    if s.starts_with("-----BEGIN") {
        let k =
            DecodingKey::from_ed_pem(s.as_bytes()).map_err(|e| RelayError::Config(format!("auth.public_key: {e}")))?;
        match k.try_get_as_bytes() {
            Ok(b) if b.len() == 32 => Ok(k),
            _ => Err(RelayError::Config("auth.public_key: PEM is not an Ed25519 public key".to_string())),
        }
    } else {
        ed_key_from_x(s)
            .ok_or_else(|| RelayError::Config("auth.public_key: not a base64url 32-byte Ed25519 key".to_string()))
    }
}

/// Builds a key from a JWK `x` (base64url), checking it is exactly 32 bytes.
fn ed_key_from_x(x: &str) -> Option<DecodingKey> {
    let k = DecodingKey::from_ed_components(x).ok()?;
    if k.try_get_as_bytes().ok()?.len() != 32 {
        return None;
    }
    Some(k)
}

impl Verifier {
    /// Builds a verifier; fetches the JWKS once if a URL is configured (a failure is logged,
    /// not fatal: the API server may start after the relay).
    pub async fn new(cfg: AuthConfig) -> Result<Verifier> {
        let static_key = match &cfg.public_key {
            Some(k) => Some(parse_public_key(k)?),
            None => None,
        };
        let http = match &cfg.jwks_url {
            Some(_) => Some(
                reqwest::Client::builder()
                    .timeout(Duration::from_secs(5))
                    .build()
                    .map_err(|e| RelayError::Jwks(format!("http client: {e}")))?,
            ),
            None => None,
        };
        let v = Verifier {
            cfg,
            static_key,
            jwks: Mutex::new(HashMap::new()),
            last_fetch: tokio::sync::Mutex::new(None),
            http,
        };
        if v.cfg.jwks_url.is_some() {
            if let Err(e) = v.refetch(true).await {
                tracing::warn!(error = %e, "initial JWKS fetch failed; will retry on demand");
            }
        }
        Ok(v)
    }

    /// Refetches the JWKS unless it was fetched less than the minimum interval ago.
    async fn refetch(&self, force: bool) -> Result<bool> {
        let (Some(url), Some(http)) = (&self.cfg.jwks_url, &self.http) else {
            return Ok(false);
        };
        let mut last = self.last_fetch.lock().await;
        if !force {
            // Without any key yet (the API server was not up when the relay started, as in a
            // cluster started relays-first), nothing verifies: retry after a second.
            let min = if lock(&self.jwks).is_empty() { 1 } else { self.cfg.jwks_min_refetch_secs };
            if let Some(t) = *last {
                if t.elapsed() < Duration::from_secs(min) {
                    return Ok(false);
                }
            }
        }
        *last = Some(Instant::now());
        let resp = http.get(url).send().await.map_err(|e| RelayError::Jwks(e.to_string()))?;
        if !resp.status().is_success() {
            return Err(RelayError::Jwks(format!("status {}", resp.status())));
        }
        let body = resp.bytes().await.map_err(|e| RelayError::Jwks(e.to_string()))?;
        let jwks: Jwks = serde_json::from_slice(&body).map_err(|e| RelayError::Jwks(e.to_string()))?;
        let mut map = HashMap::new();
        for k in jwks.keys {
            if k.kty != "OKP" || k.crv.as_deref() != Some("Ed25519") {
                continue;
            }
            let (Some(kid), Some(x)) = (k.kid, k.x) else {
                continue;
            };
            match ed_key_from_x(&x) {
                Some(dk) => {
                    map.insert(kid, dk);
                }
                None => tracing::warn!(%kid, "skipping invalid JWK"),
            }
        }
        tracing::info!(keys = map.len(), "JWKS loaded");
        *lock(&self.jwks) = map;
        Ok(true)
    }

    /// Refetches the JWKS now (the periodic refresh): keys no longer listed stop verifying.
    pub async fn refresh(&self) -> Result<bool> {
        self.refetch(true).await
    }

    fn lookup(&self, kid: Option<&str>) -> Option<DecodingKey> {
        if let Some(kid) = kid {
            if let Some(k) = lock(&self.jwks).get(kid) {
                return Some(k.clone());
            }
        }
        self.static_key.clone()
    }

    /// Verifies a token: `alg` must be EdDSA, signature by a known key, `aud`, `iss`, `exp`
    /// checked, `sub` and `org` present and well-formed.
    pub async fn verify(&self, jwt: &str) -> Result<Claims> {
        let header = decode_header(jwt).map_err(|_| invalid("malformed token or unsupported alg"))?;
        if header.alg != Algorithm::EdDSA {
            return Err(invalid("token alg must be EdDSA"));
        }
        let kid = header.kid.as_deref();
        let key = match self.lookup(kid) {
            Some(k) => k,
            None => {
                if kid.is_some() && self.cfg.jwks_url.is_some() {
                    if let Err(e) = self.refetch(false).await {
                        tracing::warn!(error = %e, "JWKS refetch failed");
                    }
                }
                self.lookup(kid).ok_or_else(|| invalid("unknown signing key"))?
            }
        };
        let mut v = Validation::new(Algorithm::EdDSA);
        v.leeway = self.cfg.leeway_secs;
        v.set_audience(&[self.cfg.audience.as_str()]);
        if let Some(iss) = self.cfg.issuer.as_deref().filter(|i| !i.is_empty()) {
            v.set_issuer(&[iss]);
        }
        v.set_required_spec_claims(&["exp", "aud", "iss", "sub"]);
        let data = decode::<Claims>(jwt, &key, &v).map_err(|e| match e.kind() {
            ErrorKind::ExpiredSignature => RelayError::wire(ErrorCode::AuthExpired, "token expired"),
            ErrorKind::InvalidSignature => invalid("bad token signature"),
            ErrorKind::InvalidAudience => invalid("wrong token audience"),
            ErrorKind::InvalidIssuer => invalid("wrong token issuer"),
            ErrorKind::MissingRequiredClaim(c) => invalid(&format!("token lacks claim {c}")),
            ErrorKind::InvalidAlgorithm => invalid("token alg must be EdDSA"),
            _ => invalid("invalid token"),
        })?;
        let claims = data.claims;
        if claims.sub.is_empty() {
            return Err(invalid("token sub is empty"));
        }
        if skytale_proto::names::channel_org(&format!("{}/x/x", claims.org)).is_err() {
            return Err(invalid("token org is not a valid channel component"));
        }
        Ok(claims)
    }
}
