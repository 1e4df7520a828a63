//! Validation of channel names and identities.
//!
//! A channel name is `org/namespace/service`; each part matches `[a-z0-9._-]{1,64}`. The first
//! part is the org: a token may only touch channels whose org equals its `org` claim.
//! An identity is 1..=256 bytes of printable ASCII without spaces.

use crate::ProtoError;

/// Maximum length of one channel name component.
pub const MAX_CHANNEL_PART: usize = 64;
/// Maximum length of an identity.
pub const MAX_IDENTITY_LEN: usize = 256;
/// Maximum length of a `client_msg_id`.
pub const MAX_CLIENT_MSG_ID_LEN: usize = 128;

fn valid_part(p: &str) -> bool {
    !p.is_empty()
        && p.len() <= MAX_CHANNEL_PART
        && p.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-'))
}

/// Checks a channel name and returns its org (first component).
pub fn channel_org(channel: &str) -> Result<&str, ProtoError> {
    let mut parts = channel.split('/');
    let (Some(org), Some(ns), Some(svc), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
        return Err(ProtoError::InvalidChannel("expected org/namespace/service".to_string()));
    };
    if ![org, ns, svc].iter().all(|p| valid_part(p)) {
        return Err(ProtoError::InvalidChannel("each part must match [a-z0-9._-]{1,64}".to_string()));
    }
    Ok(org)
}

/// Checks an identity string.
pub fn validate_identity(identity: &str) -> Result<(), ProtoError> {
    if identity.is_empty() || identity.len() > MAX_IDENTITY_LEN {
        return Err(ProtoError::InvalidIdentity(format!("length must be 1..={MAX_IDENTITY_LEN}")));
    }
    if !identity.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(ProtoError::InvalidIdentity("must be printable ASCII without spaces".to_string()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channels() {
        assert_eq!(channel_org("acme/ns/svc").ok(), Some("acme"));
        assert!(channel_org("acme/ns").is_err());
        assert!(channel_org("acme/ns/svc/x").is_err());
        assert!(channel_org("Acme/ns/svc").is_err());
        assert!(channel_org("acme//svc").is_err());
        assert!(channel_org(&format!("{}/a/b", "a".repeat(65))).is_err());
        assert!(channel_org("a-1.b_c/ns/svc").is_ok());
    }

    #[test]
    fn identities() {
        assert!(validate_identity("agent-1@acme").is_ok());
        assert!(validate_identity("").is_err());
        assert!(validate_identity("a b").is_err());
    }
}
