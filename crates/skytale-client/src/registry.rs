//! The agent's standing with the API server: registration of its MLS signature key (which
//! returns its agent credential), the issuer keys (JWKS) it pins for its org, and the revocation
//! feed. Runs on every connect, so credentials are renewed, key rotations are followed (only
//! with overlap, see [`skytale_core::rotate_anchors`]) and revocations are current. The checks
//! themselves are pure functions of `skytale-core`.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use skytale_core::{Agent, IssuerKey, RevokedAgent, TrustAnchors};

use crate::error::Result;
use crate::tokens::TokenSource;

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct Registered {
    org: String,
    credential: String,
}

#[derive(serde::Deserialize)]
struct Jwk {
    kty: String,
    #[serde(default)]
    crv: Option<String>,
    #[serde(default)]
    x: Option<String>,
    #[serde(default)]
    kid: Option<String>,
}

#[derive(serde::Deserialize)]
struct Jwks {
    keys: Vec<Jwk>,
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct FeedAgent {
    org: String,
    identity: String,
    revoked_at: u64,
}

#[derive(serde::Deserialize)]
struct Feed {
    cursor: u64,
    #[serde(default)]
    agents: Vec<FeedAgent>,
    #[serde(default, rename = "apiKeys")]
    api_keys: Vec<serde_json::Value>,
}

impl TokenSource {
    /// Registers (or renews) the agent with the API server and installs its credential, after
    /// pinning the issuer keys of its org. Returns the org.
    pub async fn enroll(&self, agent: &Agent) -> Result<String> {
        let key = URL_SAFE_NO_PAD.encode(agent.signature_public_key()?);
        let reg: Registered = self
            .request_json(
                "/v1/agents",
                Some(serde_json::json!({ "identity": agent.identity(), "signatureKey": key })),
                true,
            )
            .await?;
        let jwks: Jwks = self.request_json("/.well-known/jwks.json", None, false).await?;
        let keys = jwks
            .keys
            .into_iter()
            .filter(|k| k.kty == "OKP" && k.crv.as_deref() == Some("Ed25519"))
            .filter_map(|k| Some(IssuerKey { kid: k.kid?, x: k.x? }))
            .collect();
        agent.update_trust_anchors(TrustAnchors { org: reg.org.clone(), keys })?;
        self.refresh_revocations(agent).await?;
        agent.set_credential(&reg.credential)?;
        Ok(reg.org)
    }

    /// Reads the whole revocation feed and stores the revoked agents in the keystore.
    pub async fn refresh_revocations(&self, agent: &Agent) -> Result<()> {
        let mut since = 0u64;
        let mut revoked: Vec<RevokedAgent> = Vec::new();
        loop {
            let feed: Feed = self.request_json(&format!("/v1/revocations?since={since}"), None, false).await?;
            let n = feed.agents.len() + feed.api_keys.len();
            revoked.extend(feed.agents.into_iter().map(|a| RevokedAgent {
                org: a.org,
                identity: a.identity,
                revoked_at: a.revoked_at,
            }));
            if feed.cursor <= since || n < 1000 {
                break;
            }
            since = feed.cursor;
        }
        agent.set_revocations(revoked)?;
        Ok(())
    }
}
