//! Zeroizing containers for secrets: the keystore key and passphrases.
//!
//! Their `Debug` prints `[redacted]`, they are wiped from memory when dropped, and they have
//! no `Display`, so they cannot end up in a log line or an error message by accident.

use std::fmt;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::error::{Error, Result};

/// A 256-bit symmetric key (the keystore's database key). Wiped on drop.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct SecretKey32([u8; 32]);

impl SecretKey32 {
    /// Wraps 32 raw key bytes. The caller should wipe its own copy.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        SecretKey32(bytes)
    }

    /// Copies a key from a slice that must be exactly 32 bytes long.
    pub fn from_slice(bytes: &[u8]) -> Result<Self> {
        let arr: [u8; 32] = bytes
            .try_into()
            .map_err(|_| Error::InvalidArgument(format!("a keystore key is 32 bytes, got {}", bytes.len())))?;
        Ok(SecretKey32(arr))
    }

    /// Borrows the key bytes.
    pub fn expose(&self) -> &[u8; 32] {
        &self.0
    }

    /// The key as lowercase hex, in a zeroizing string (for `PRAGMA key`).
    pub(crate) fn to_hex(&self) -> Zeroizing<String> {
        Zeroizing::new(hex::encode(self.0))
    }
}

impl fmt::Debug for SecretKey32 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretKey32([redacted])")
    }
}

/// A user passphrase. Wiped on drop.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct Passphrase(String);

impl Passphrase {
    /// Wraps a passphrase; it must not be empty.
    pub fn new(value: String) -> Result<Self> {
        if value.is_empty() {
            return Err(Error::InvalidArgument("the passphrase is empty".into()));
        }
        Ok(Passphrase(value))
    }

    /// Borrows the passphrase bytes.
    pub fn expose(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

impl fmt::Debug for Passphrase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Passphrase([redacted])")
    }
}

/// How the keystore key is obtained.
#[derive(Clone)]
pub enum KeystoreSecret {
    /// A raw 32-byte key, used as is.
    Key(SecretKey32),
    /// A passphrase, stretched with Argon2id and the salt stored in the data directory.
    Passphrase(Passphrase),
}

impl fmt::Debug for KeystoreSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeystoreSecret::Key(_) => f.write_str("KeystoreSecret::Key([redacted])"),
            KeystoreSecret::Passphrase(_) => f.write_str("KeystoreSecret::Passphrase([redacted])"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_is_redacted() {
        let k = SecretKey32::from_bytes([7u8; 32]);
        let p = Passphrase::new("hunter2".into()).unwrap();
        assert_eq!(format!("{k:?}"), "SecretKey32([redacted])");
        assert!(!format!("{p:?}").contains("hunter2"));
        assert!(!format!("{:?}", KeystoreSecret::Key(k)).contains("07"));
    }

    #[test]
    fn wrong_length_key_is_rejected() {
        assert_eq!(SecretKey32::from_slice(&[1u8; 31]).unwrap_err().code(), "SKYTALE_INVALID_ARGUMENT");
    }
}
