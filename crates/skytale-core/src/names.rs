//! Validation of channel names (`org/namespace/service`) and identities.

use crate::error::{Error, Result};

/// Maximum length of one channel-name component and of an identity.
pub const MAX_COMPONENT_LEN: usize = 64;

fn valid_component(part: &str) -> bool {
    !part.is_empty()
        && part.len() <= MAX_COMPONENT_LEN
        && part.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'_' | b'.'))
}

/// Checks that `name` is `org/namespace/service`: three parts of 1–64 characters from
/// `a-z 0-9 - _ .`.
pub fn validate_channel_name(name: &str) -> Result<()> {
    let parts: Vec<&str> = name.split('/').collect();
    if parts.len() != 3 || !parts.iter().all(|p| valid_component(p)) {
        return Err(Error::InvalidChannelName(format!(
            "'{}' is not org/namespace/service (each 1-64 of a-z 0-9 - _ .)",
            name.chars().take(200).collect::<String>()
        )));
    }
    Ok(())
}

/// The org (first component) of a valid channel name.
pub fn channel_org(name: &str) -> Result<&str> {
    validate_channel_name(name)?;
    Ok(name.split('/').next().unwrap_or_default())
}

/// Checks an identity: 1–64 characters from `A-Z a-z 0-9 - _ . @`.
pub fn validate_identity(identity: &str) -> Result<()> {
    let ok = !identity.is_empty()
        && identity.len() <= MAX_COMPONENT_LEN
        && identity.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'@'));
    if !ok {
        return Err(Error::InvalidIdentity("an identity is 1-64 characters of A-Z a-z 0-9 - _ . @".into()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_names() {
        for ok in ["acme/research/summarizer", "a/b/c", "demo/team/general", "x-1/y_2/z.3"] {
            validate_channel_name(ok).unwrap();
        }
        let long = "a".repeat(65);
        for bad in [
            "",
            "acme",
            "acme/research",
            "acme/research/x/y",
            "Acme/r/s",
            "acme//s",
            "acme/r/s ",
            "acme/r/é",
            &format!("{long}/b/c"),
        ] {
            assert_eq!(validate_channel_name(bad).unwrap_err().code(), "SKYTALE_INVALID_CHANNEL_NAME", "{bad}");
        }
        assert_eq!(channel_org("acme/r/s").unwrap(), "acme");
    }

    #[test]
    fn identities() {
        validate_identity("alice-agent").unwrap();
        validate_identity("bob@acme").unwrap();
        assert!(validate_identity("").is_err());
        assert!(validate_identity("has space").is_err());
        assert!(validate_identity(&"a".repeat(65)).is_err());
    }
}
