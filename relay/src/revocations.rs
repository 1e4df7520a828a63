//! Revocations: the relay polls the API server's revocation feed (`GET /v1/revocations?since=`),
//! refuses tokens minted by a revoked API key (`akid`) or for a revoked agent (issued at or before
//! its revocation), and closes the live sessions they opened. Also refreshes the JWKS on a timer
//! so that a signing key dropped from it stops verifying.

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

async fn poll_once(relay: &Relay, http: &reqwest::Client, url: &str) -> Result<bool, String> {
    let mut changed = false;
    loop {
        let since = relay.revocations.cursor();
        let resp = http.get(format!("{url}?since={since}")).send().await.map_err(|e| e.to_string())?;
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
