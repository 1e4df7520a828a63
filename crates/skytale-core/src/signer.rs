//! The agent's MLS signer: its stored Ed25519 key pair with the signing key expanded once.
//!
//! openmls_basic_credential's `SignatureKeyPair::sign` rebuilds an `ed25519_dalek::SigningKey`
//! from the stored seed for every signature, which hashes the seed and derives the public key
//! (a base-point multiplication, about as costly as the signature itself). Every application
//! message is signed, so [`AgentSigner`] keeps the expanded key (zeroized on drop by
//! ed25519-dalek) and signs with it. Ed25519 signatures are deterministic: the bytes are the
//! same as the key pair's own (tested below). The key pair stays the stored form and the source
//! of the public key; should its private part not parse as the Ed25519 key of that public key,
//! the signer falls back to the key pair's own `sign`.

use ed25519_dalek::Signer as _;
use openmls::prelude::tls_codec::{DeserializeBytes as _, SecretVLBytes, Serialize as _};
use openmls_basic_credential::SignatureKeyPair;
use openmls_traits::signatures::{Signer, SignerError};
use openmls_traits::types::SignatureScheme;
use zeroize::Zeroizing;

/// The agent's signature key pair plus, for Ed25519, its expanded signing key.
pub(crate) struct AgentSigner {
    pair: SignatureKeyPair,
    expanded: Option<ed25519_dalek::SigningKey>,
}

impl AgentSigner {
    /// Wraps `pair`, expanding its Ed25519 signing key once.
    pub(crate) fn new(pair: SignatureKeyPair) -> AgentSigner {
        let expanded = expand_ed25519(&pair);
        AgentSigner { pair, expanded }
    }

    /// The public signature key.
    pub(crate) fn public(&self) -> &[u8] {
        self.pair.public()
    }

    /// Whether signatures are made with the expanded key (false only if the pair did not parse).
    #[cfg(test)]
    pub(crate) fn is_expanded(&self) -> bool {
        self.expanded.is_some()
    }
}

/// The Ed25519 signing key of `pair`, if it is an Ed25519 pair whose private part is the key of
/// its public part. The private part is read from the pair's TLS encoding (its first field, a
/// variable-length byte string); every copy is zeroized.
fn expand_ed25519(pair: &SignatureKeyPair) -> Option<ed25519_dalek::SigningKey> {
    if pair.signature_scheme() != SignatureScheme::ED25519 {
        return None;
    }
    let encoded = Zeroizing::new(pair.tls_serialize_detached().ok()?);
    let (private, _) = SecretVLBytes::tls_deserialize_bytes(&encoded).ok()?;
    let key = ed25519_dalek::SigningKey::try_from(private.as_slice()).ok()?;
    (key.verifying_key().as_bytes().as_slice() == pair.public()).then_some(key)
}

impl Signer for AgentSigner {
    fn sign(&self, payload: &[u8]) -> Result<Vec<u8>, SignerError> {
        match &self.expanded {
            Some(key) => Ok(key.sign(payload).to_bytes().to_vec()),
            None => self.pair.sign(payload),
        }
    }

    fn signature_scheme(&self) -> SignatureScheme {
        self.pair.signature_scheme()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signs_exactly_like_the_key_pair() {
        let pair = SignatureKeyPair::new(SignatureScheme::ED25519).unwrap();
        let reference = SignatureKeyPair::from_raw(
            SignatureScheme::ED25519,
            {
                let encoded = pair.tls_serialize_detached().unwrap();
                SecretVLBytes::tls_deserialize_bytes(&encoded).unwrap().0.as_slice().to_vec()
            },
            pair.public().to_vec(),
        );
        let signer = AgentSigner::new(pair);
        assert!(signer.is_expanded());
        for payload in [&b""[..], b"hello", &[7u8; 4096][..]] {
            assert_eq!(signer.sign(payload).unwrap(), reference.sign(payload).unwrap());
        }
        assert_eq!(signer.signature_scheme(), SignatureScheme::ED25519);
    }

    #[test]
    fn a_pair_whose_private_part_does_not_match_its_public_part_falls_back() {
        let a = SignatureKeyPair::new(SignatureScheme::ED25519).unwrap();
        let b = SignatureKeyPair::new(SignatureScheme::ED25519).unwrap();
        let a_private = {
            let encoded = a.tls_serialize_detached().unwrap();
            SecretVLBytes::tls_deserialize_bytes(&encoded).unwrap().0.as_slice().to_vec()
        };
        let mixed = SignatureKeyPair::from_raw(SignatureScheme::ED25519, a_private, b.public().to_vec());
        let expected = mixed.sign(b"x").unwrap();
        let signer = AgentSigner::new(mixed);
        assert!(!signer.is_expanded());
        assert_eq!(signer.sign(b"x").unwrap(), expected);
    }
}
