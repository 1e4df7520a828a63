//! Revocations: the relay polls the API server's revocation feed (`GET /v1/revocations?since=`),
//! refuses tokens minted by a revoked API key (`akid`) or for a revoked agent (issued at or before
//! its revocation), and closes the live sessions they opened. Also refreshes the JWKS on a timer
//! so that a signing key dropped from it stops verifying.
//!
//! Each poll is signed with the relay's endpoint key ([`poll_headers`]): an API server that lists
//! this relay (`SKYTALE_RELAY_URL(S)`, whose `iroh://<endpoint-id>@…` is the Ed25519 public key)
//! counts it against the relay's own rate-limit bucket, not against its IP address, so agents
//! sharing that address cannot starve the poll and delay revocations.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Deserialize;

use crate::Relay;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct FeedKey {
    id: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct FeedAgent {
    org: String,
    identity: String,
    revoked_at: u64,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Feed {
    cursor: u64,
    #[serde(default)]
    api_keys: Vec<FeedKey>,
    #[serde(default)]
    agents: Vec<FeedAgent>,
}

#[derive(Default)]
struct Inner {
    cursor: u64,
    keys: HashSet<String>,
    agents: HashMap<(String, String), u64>,
}

/// What the relay knows to be revoked.
#[derive(Default)]
pub struct Revocations {
    inner: Mutex<Inner>,
}

impl Revocations {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether a token with these claims is revoked.
    pub fn is_revoked(&self, akid: Option<&str>, org: &str, identity: &str, iat: u64) -> bool {
        let inner = self.lock();
        if akid.is_some_and(|k| inner.keys.contains(k)) {
            return true;
        }
        inner.agents.get(&(org.to_string(), identity.to_string())).is_some_and(|at| iat <= *at)
    }

    /// Applies one page of the feed; returns whether anything new arrived.
    fn apply(&self, feed: Feed) -> bool {
        let mut inner = self.lock();
        let mut changed = false;
        if feed.cursor < inner.cursor {
            // The API server's feed restarted (new database): start over from scratch.
            *inner = Inner::default();
        }
        inner.cursor = feed.cursor;
        for k in feed.api_keys {
            changed |= inner.keys.insert(k.id);
        }
        for a in feed.agents {
            let e = inner.agents.entry((a.org, a.identity)).or_insert(0);
            if a.revoked_at > *e {
                *e = a.revoked_at;
                changed = true;
            }
        }
        changed
    }

    fn cursor(&self) -> u64 {
        self.lock().cursor
    }
}

/// The feed URL: configured, or derived from the JWKS URL (`…/.well-known/jwks.json` →
/// `…/v1/revocations`).
pub fn feed_url(relay: &Relay) -> Option<String> {
    if let Some(u) = &relay.config.auth.revocations_url {
        return Some(u.clone());
    }
    let jwks = relay.config.auth.jwks_url.as_deref()?;
    jwks.strip_suffix("/.well-known/jwks.json").map(|base| format!("{base}/v1/revocations"))
}

/// Domain separation of the poll signature.
pub const POLL_CONTEXT: &str = "skytale-revocations-poll/v1";

/// The bytes a relay signs for one poll: context, cursor and the relay's clock (unix ms).
pub fn poll_message(since: u64, time_ms: u64) -> String {
    format!("{POLL_CONTEXT}\n{since}\n{time_ms}")
}

/// The headers of one signed poll: `x-skytale-relay-id` (hex endpoint id),
/// `x-skytale-relay-time` (unix ms) and `x-skytale-relay-sig` (hex Ed25519 signature of
/// [`poll_message`]). They only choose the rate-limit bucket: the feed itself is public.
pub fn poll_headers(key: &iroh::SecretKey, since: u64, time_ms: u64) -> [(&'static str, String); 3] {
    let sig = key.sign(poll_message(since, time_ms).as_bytes()).to_bytes();
    let sig_hex: String = sig.iter().map(|b| format!("{b:02x}")).collect();
    [
        ("x-skytale-relay-id", key.public().to_string()),
        ("x-skytale-relay-time", time_ms.to_string()),
        ("x-skytale-relay-sig", sig_hex),
    ]
}

async fn poll_once(relay: &Relay, http: &reqwest::Client, url: &str) -> Result<bool, String> {
    let mut changed = false;
    loop {
        let since = relay.revocations.cursor();
        let mut req = http.get(format!("{url}?since={since}"));
        for (name, value) in poll_headers(&relay.identity_key, since, crate::now_ms()) {
            req = req.header(name, value);
        }
        let resp = req.send().await.map_err(|e| e.to_string())?;
        if !resp.status().is_success() {
            return Err(format!("status {}", resp.status()));
        }
        let body = resp.bytes().await.map_err(|e| e.to_string())?;
        let feed: Feed = serde_json::from_slice(&body).map_err(|e| e.to_string())?;
        let next = feed.cursor;
        let page_len = feed.api_keys.len() + feed.agents.len();
        changed |= relay.revocations.apply(feed);
        // Pages hold at most 1000 entries: keep reading while the cursor moves on a full page.
        if next <= since || page_len < 1000 {
            return Ok(changed);
        }
    }
}

/// Closes every live session whose token is now revoked.
pub fn close_revoked_sessions(relay: &Relay) -> usize {
    let mut n = 0;
    relay.online.for_each(|org, identity, sub| {
        if relay.revocations.is_revoked(sub.akid.as_deref(), org, identity, sub.iat) {
            sub.ctl.revoked.store(true, Ordering::SeqCst);
            sub.ctl.notify.notify_one();
            n += 1;
        }
    });
    n
}

/// Polls the revocation feed forever (every `revocation_poll_secs`).
pub async fn poll_task(relay: Arc<Relay>) {
    let Some(url) = feed_url(&relay) else {
        tracing::info!("no revocation feed configured");
        return;
    };
    let http = match reqwest::Client::builder().timeout(Duration::from_secs(5)).build() {
        Ok(h) => h,
        Err(e) => {
            tracing::error!(error = %e, "revocation poller: no http client");
            return;
        }
    };
    let every = Duration::from_secs(relay.config.auth.revocation_poll_secs.max(1));
    loop {
        match poll_once(&relay, &http, &url).await {
            Ok(true) => {
                let n = close_revoked_sessions(&relay);
                if n > 0 {
                    tracing::info!(sessions = n, "closing sessions of revoked keys or agents");
                }
            }
            Ok(false) => {}
            Err(e) => tracing::warn!(error = %e, "revocation feed poll failed"),
        }
        tokio::time::sleep(every).await;
    }
}

/// Refetches the JWKS forever (every `jwks_refresh_secs`).
pub async fn jwks_refresh_task(relay: Arc<Relay>) {
    if relay.config.auth.jwks_url.is_none() {
        return;
    }
    let every = Duration::from_secs(relay.config.auth.jwks_refresh_secs.max(1));
    loop {
        tokio::time::sleep(every).await;
        if let Err(e) = relay.verifier.refresh().await {
            tracing::warn!(error = %e, "JWKS refresh failed; keeping the previous keys");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The same vector is checked by the API server (`api-server/test/relayPoll.test.ts`): a
    /// change of the signed bytes on either side fails both.
    #[test]
    fn a_poll_is_signed_with_the_endpoint_key_over_context_cursor_and_time() {
        let key = iroh::SecretKey::from_bytes(&[7u8; 32]);
        let headers = poll_headers(&key, 42, 1_700_000_000_000);
        assert_eq!(
            headers[0],
            ("x-skytale-relay-id", "ea4a6c63e29c520abef5507b132ec5f9954776aebebe7b92421eea691446d22c".to_string())
        );
        assert_eq!(headers[1], ("x-skytale-relay-time", "1700000000000".to_string()));
        assert_eq!(
            headers[2].1,
            "43c45b66c5861969506ea1c68a7b8a1750df4033420e46ff6e1bb366b6ff18399dccdc3aa0a440013741dc01194082abeec66b63d2ae77e9ca263f2ff9f6900d"
        );
        // Another cursor or time is another signature (a poll cannot be re-dated).
        assert_ne!(poll_headers(&key, 43, 1_700_000_000_000)[2].1, headers[2].1);
        assert_ne!(poll_headers(&key, 42, 1_700_000_000_001)[2].1, headers[2].1);
    }
}
