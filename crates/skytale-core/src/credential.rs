//! Agent credentials: the API server's signed statement binding `{org, identity, signature key}`,
//! and its verification as a pure function (no IO, time passed in).
//!
//! A credential is a compact JWS (three base64url parts) signed with Ed25519 by a key of the
//! issuer's JWKS:
//! - header `{"alg":"EdDSA","typ":"skytale-agent+jwt","kid":…}`
//! - claims `iss`, `aud = "skytale-agent-credential"`, `sub = identity`, `identity`, `org`,
//!   `sig_key` (base64url of the agent's 32-byte Ed25519 MLS signature public key), `iat`, `exp`, `jti`.
//!
//! The credential bytes travel inside the agent's MLS `BasicCredential`, so every member can
//! check, for every leaf it meets, that the issuer vouched for exactly this identity holding
//! exactly this signature key in exactly this org. The relay cannot mint credentials: it never
//! holds an issuer key. Relay tokens use another `typ` and `aud`, so neither can stand in for
//! the other.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use ed25519_dalek::{Signature, VerifyingKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::names::validate_identity;

/// `typ` header of an agent credential.
pub const CREDENTIAL_TYP: &str = "skytale-agent+jwt";
/// `aud` claim of an agent credential.
pub const CREDENTIAL_AUD: &str = "skytale-agent-credential";
/// Largest credential accepted (bytes); a real one is about 600.
pub const MAX_CREDENTIAL_LEN: usize = 4096;

/// One issuer public key (an Ed25519 JWK of the API server's JWKS).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IssuerKey {
    /// Key id (`kid`).
    pub kid: String,
    /// Raw 32-byte Ed25519 public key, base64url without padding (the JWK `x`).
    pub x: String,
}

/// The issuer keys an agent trusts for one org (pinned on first use).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrustAnchors {
    /// The org these keys vouch for.
    pub org: String,
    /// Issuer keys.
    pub keys: Vec<IssuerKey>,
}

/// One revoked agent: credentials for `(org, identity)` issued at or before `revoked_at` are void.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RevokedAgent {
    /// Org.
    pub org: String,
    /// Identity.
    pub identity: String,
    /// Unix seconds of the revocation.
    pub revoked_at: u64,
}

/// The claims of a credential that passed [`verify_credential`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedCredential {
    /// Org.
    pub org: String,
    /// Identity.
    pub identity: String,
    /// The agent's Ed25519 signature public key (32 bytes).
    pub signature_key: Vec<u8>,
    /// Issued at (unix seconds).
    pub issued_at: u64,
    /// Expires at (unix seconds).
    pub expires_at: u64,
    /// Key id of the issuer key that signed it.
    pub kid: String,
}

/// What a credential must say to be accepted.
#[derive(Debug, Clone, Copy)]
pub struct Expected<'a> {
    /// The org it must be issued for (the channel's org).
    pub org: &'a str,
    /// The identity it must name, when the caller asked for one.
    pub identity: Option<&'a str>,
    /// The signature key of the MLS leaf (or key package) carrying it.
    pub signature_key: &'a [u8],
    /// Current time (unix seconds) for the expiry check; `None` skips the expiry check (for
    /// members already admitted: a credential is checked for expiry when it enters a group).
    pub now: Option<u64>,
}

#[derive(Deserialize)]
struct Header {
    alg: String,
    #[serde(default)]
    typ: Option<String>,
    #[serde(default)]
    kid: Option<String>,
}

#[derive(Deserialize)]
struct Claims {
    aud: serde_json::Value,
    identity: String,
    #[serde(default)]
    sub: Option<String>,
    org: String,
    sig_key: String,
    iat: u64,
    exp: u64,
}

fn invalid(msg: impl Into<String>) -> Error {
    Error::CredentialInvalid(msg.into())
}

fn b64(part: &str, what: &str) -> Result<Vec<u8>> {
    URL_SAFE_NO_PAD.decode(part).map_err(|_| invalid(format!("{what} is not base64url")))
}

/// The identity a credential names, read WITHOUT verifying it (for display and routing only;
/// trust decisions go through [`verify_credential`]). `None` if the bytes are not a credential.
pub fn credential_identity_unverified(bytes: &[u8]) -> Option<String> {
    if bytes.len() > MAX_CREDENTIAL_LEN {
        return None;
    }
    let text = std::str::from_utf8(bytes).ok()?;
    let mut parts = text.split('.');
    let (_, payload, _) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    let claims: Claims = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).ok()?).ok()?;
    Some(claims.identity)
}

/// Verifies an agent credential: structure, `alg`/`typ`/`aud`, an Ed25519 signature by one of
/// the trusted issuer keys, org, identity, signature-key binding, expiry and revocation.
/// Every failure is `SKYTALE_CREDENTIAL_INVALID` with the reason.
pub fn verify_credential(
    bytes: &[u8],
    anchors: &TrustAnchors,
    expected: Expected<'_>,
    revoked: &[RevokedAgent],
) -> Result<VerifiedCredential> {
    if bytes.len() > MAX_CREDENTIAL_LEN {
        return Err(invalid("credential too large"));
    }
    let text = std::str::from_utf8(bytes)
        .map_err(|_| invalid("not an agent credential (no certificate from the API server)"))?;
    let parts: Vec<&str> = text.split('.').collect();
    if parts.len() != 3 {
        return Err(invalid("not an agent credential (no certificate from the API server)"));
    }
    let header: Header =
        serde_json::from_slice(&b64(parts[0], "header")?).map_err(|_| invalid("credential header is not JSON"))?;
    if header.alg != "EdDSA" {
        return Err(invalid("credential alg must be EdDSA"));
    }
    if header.typ.as_deref() != Some(CREDENTIAL_TYP) {
        return Err(invalid("not an agent credential (wrong typ)"));
    }
    let sig_bytes = b64(parts[2], "signature")?;
    let signature = Signature::from_slice(&sig_bytes).map_err(|_| invalid("malformed credential signature"))?;
    let signed = &text.as_bytes()[..parts[0].len() + 1 + parts[1].len()];
    if anchors.org != expected.org {
        return Err(invalid(format!(
            "credential for org '{}' cannot be checked: trusted issuer keys are for org '{}'",
            expected.org, anchors.org
        )));
    }
    // Try the named key first, then any other trusted key (a kid is only a hint).
    let mut candidates: Vec<&IssuerKey> =
        anchors.keys.iter().filter(|k| Some(k.kid.as_str()) == header.kid.as_deref()).collect();
    candidates.extend(anchors.keys.iter().filter(|k| Some(k.kid.as_str()) != header.kid.as_deref()));
    let mut signer_kid = None;
    for k in candidates {
        let Ok(raw) = URL_SAFE_NO_PAD.decode(&k.x) else { continue };
        let Ok(arr) = <[u8; 32]>::try_from(raw.as_slice()) else { continue };
        let Ok(vk) = VerifyingKey::from_bytes(&arr) else { continue };
        if vk.verify_strict(signed, &signature).is_ok() {
            signer_kid = Some(k.kid.clone());
            break;
        }
    }
    let kid = signer_kid.ok_or_else(|| invalid("credential is not signed by this org's issuer"))?;
    let claims: Claims =
        serde_json::from_slice(&b64(parts[1], "claims")?).map_err(|_| invalid("credential claims are malformed"))?;
    let aud_ok = match &claims.aud {
        serde_json::Value::String(s) => s == CREDENTIAL_AUD,
        serde_json::Value::Array(a) => a.iter().any(|v| v.as_str() == Some(CREDENTIAL_AUD)),
        _ => false,
    };
    if !aud_ok {
        return Err(invalid("not an agent credential (wrong aud)"));
    }
    validate_identity(&claims.identity).map_err(|_| invalid("credential names an invalid identity"))?;
    if claims.sub.as_deref().is_some_and(|s| s != claims.identity) {
        return Err(invalid("credential sub and identity differ"));
    }
    if claims.org != expected.org {
        return Err(invalid(format!("credential is for org '{}', not '{}'", claims.org, expected.org)));
    }
    if let Some(want) = expected.identity {
        if claims.identity != want {
            return Err(invalid(format!("credential is for '{}', not '{}'", claims.identity, want)));
        }
    }
    let key = b64(&claims.sig_key, "sig_key")?;
    if key.as_slice() != expected.signature_key {
        return Err(invalid(format!("credential of '{}' certifies another signature key", claims.identity)));
    }
    if let Some(now) = expected.now {
        if claims.exp <= now {
            return Err(invalid(format!("credential of '{}' has expired", claims.identity)));
        }
    }
    if revoked.iter().any(|r| r.org == claims.org && r.identity == claims.identity && claims.iat <= r.revoked_at) {
        return Err(invalid(format!("credential of '{}' has been revoked", claims.identity)));
    }
    Ok(VerifiedCredential {
        org: claims.org,
        identity: claims.identity,
        signature_key: key,
        issued_at: claims.iat,
        expires_at: claims.exp,
        kid,
    })
}

/// Merges a freshly fetched issuer key set into the pinned one (trust on first use, rotation by
/// overlap): with nothing pinned the new set is pinned; otherwise the new set is accepted only
/// if it is for the same org and shares at least one key with the pinned set (a JWKS that lists
/// both the old and the new key during a rotation). Returns the anchors to store.
pub fn rotate_anchors(pinned: Option<&TrustAnchors>, fetched: TrustAnchors) -> Result<TrustAnchors> {
    if fetched.keys.is_empty() {
        return Err(invalid("the issuer's key set is empty"));
    }
    for k in &fetched.keys {
        let raw = URL_SAFE_NO_PAD.decode(&k.x).map_err(|_| invalid("issuer key is not base64url"))?;
        if raw.len() != 32 {
            return Err(invalid("issuer key is not a 32-byte Ed25519 key"));
        }
    }
    match pinned {
        None => Ok(fetched),
        Some(p) if p.org != fetched.org => {
            Err(invalid(format!("this agent trusts the issuer of org '{}', not '{}'", p.org, fetched.org)))
        }
        Some(p) if p.keys.iter().any(|k| fetched.keys.iter().any(|f| f.x == k.x)) => Ok(fetched),
        Some(_) => Err(invalid(
            "the issuer's keys changed with no overlap with the pinned ones (possible impersonation); refusing",
        )),
    }
}

/// Fingerprint of a signature public key for out-of-band checks: SHA-256, the first 20 bytes in
/// lowercase hex, in ten groups of four (`"a1b2 c3d4 …"`).
pub fn fingerprint(signature_key: &[u8]) -> String {
    let digest = Sha256::digest(signature_key);
    let hex = hex::encode(&digest[..20]);
    hex.as_bytes().chunks(4).map(|c| String::from_utf8_lossy(c).into_owned()).collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::{Signer, SigningKey};

    fn issuer() -> (SigningKey, TrustAnchors) {
        let sk = SigningKey::from_bytes(&[9u8; 32]);
        let x = URL_SAFE_NO_PAD.encode(sk.verifying_key().as_bytes());
        (sk, TrustAnchors { org: "acme".into(), keys: vec![IssuerKey { kid: "k1".into(), x }] })
    }

    fn make(sk: &SigningKey, header: serde_json::Value, claims: serde_json::Value) -> String {
        let h = URL_SAFE_NO_PAD.encode(header.to_string());
        let c = URL_SAFE_NO_PAD.encode(claims.to_string());
        let sig = sk.sign(format!("{h}.{c}").as_bytes());
        format!("{h}.{c}.{}", URL_SAFE_NO_PAD.encode(sig.to_bytes()))
    }

    fn good_claims(key: &[u8]) -> serde_json::Value {
        serde_json::json!({"iss":"skytale-api","aud":CREDENTIAL_AUD,"sub":"bob","identity":"bob","org":"acme",
            "sig_key":URL_SAFE_NO_PAD.encode(key),"iat":100,"exp":1000,"jti":"j"})
    }

    fn hdr() -> serde_json::Value {
        serde_json::json!({"alg":"EdDSA","typ":CREDENTIAL_TYP,"kid":"k1"})
    }

    #[test]
    fn accepts_a_good_credential_and_refuses_every_mutation() {
        let (sk, anchors) = issuer();
        let leaf = [7u8; 32];
        let exp = |now| Expected { org: "acme", identity: Some("bob"), signature_key: &leaf, now };
        let cred = make(&sk, hdr(), good_claims(&leaf));
        let v = verify_credential(cred.as_bytes(), &anchors, exp(Some(500)), &[]).unwrap();
        assert_eq!(v.identity, "bob");
        assert_eq!(credential_identity_unverified(cred.as_bytes()).as_deref(), Some("bob"));
        // expired, wrong identity, wrong org, wrong key, revoked
        assert_eq!(
            verify_credential(cred.as_bytes(), &anchors, exp(Some(1000)), &[]).unwrap_err().code(),
            "SKYTALE_CREDENTIAL_INVALID"
        );
        let e = Expected { identity: Some("carol"), ..exp(Some(500)) };
        assert!(verify_credential(cred.as_bytes(), &anchors, e, &[]).is_err());
        let other = [8u8; 32];
        let e = Expected { signature_key: &other, ..exp(Some(500)) };
        assert!(verify_credential(cred.as_bytes(), &anchors, e, &[]).is_err());
        let e = Expected { org: "evil", ..exp(Some(500)) };
        assert!(verify_credential(cred.as_bytes(), &anchors, e, &[]).is_err());
        let rev = [RevokedAgent { org: "acme".into(), identity: "bob".into(), revoked_at: 100 }];
        assert!(verify_credential(cred.as_bytes(), &anchors, exp(Some(500)), &rev).is_err());
        let rev_before = [RevokedAgent { org: "acme".into(), identity: "bob".into(), revoked_at: 99 }];
        assert!(verify_credential(cred.as_bytes(), &anchors, exp(Some(500)), &rev_before).is_ok());
        // self-signed (another issuer key)
        let forger = SigningKey::from_bytes(&[3u8; 32]);
        let forged = make(&forger, hdr(), good_claims(&leaf));
        assert!(verify_credential(forged.as_bytes(), &anchors, exp(Some(500)), &[]).is_err());
        // a relay token (other typ / aud) is not a credential
        let tok = make(&sk, serde_json::json!({"alg":"EdDSA","typ":"JWT","kid":"k1"}), good_claims(&leaf));
        assert!(verify_credential(tok.as_bytes(), &anchors, exp(Some(500)), &[]).is_err());
        let mut c = good_claims(&leaf);
        c["aud"] = serde_json::json!("skytale-relay");
        let tok = make(&sk, hdr(), c);
        assert!(verify_credential(tok.as_bytes(), &anchors, exp(Some(500)), &[]).is_err());
        // tampered payload
        let mut parts: Vec<String> = cred.split('.').map(str::to_string).collect();
        let mut c = good_claims(&leaf);
        c["identity"] = serde_json::json!("mallory");
        parts[1] = URL_SAFE_NO_PAD.encode(c.to_string());
        assert!(verify_credential(parts.join(".").as_bytes(), &anchors, exp(Some(500)), &[]).is_err());
        // garbage never panics
        for g in [&b""[..], b"a.b.c", b"....", &[0xff; 10], b"e30.e30.AAAA"] {
            assert!(verify_credential(g, &anchors, exp(Some(500)), &[]).is_err());
        }
    }

    #[test]
    fn anchors_pin_on_first_use_and_rotate_only_with_overlap() {
        let (_, a) = issuer();
        assert_eq!(rotate_anchors(None, a.clone()).unwrap(), a);
        let new_key = IssuerKey { kid: "k2".into(), x: URL_SAFE_NO_PAD.encode([5u8; 32]) };
        let both = TrustAnchors { org: "acme".into(), keys: vec![new_key.clone(), a.keys[0].clone()] };
        assert_eq!(rotate_anchors(Some(&a), both.clone()).unwrap(), both);
        let only_new = TrustAnchors { org: "acme".into(), keys: vec![new_key] };
        assert!(rotate_anchors(Some(&both), only_new.clone()).is_ok());
        assert!(rotate_anchors(Some(&a), only_new).is_err());
        let other_org = TrustAnchors { org: "evil".into(), keys: a.keys.clone() };
        assert!(rotate_anchors(Some(&a), other_org).is_err());
    }

    #[test]
    fn fingerprint_shape() {
        let f = fingerprint(&[1u8; 32]);
        assert_eq!(f.len(), 49);
        assert_eq!(f.split(' ').count(), 10);
    }
}
