//! The openmls crypto provider: RustCrypto, with the decoded Ed25519 keys of the members whose
//! signatures an agent verifies kept for reuse.
//!
//! RustCrypto's `verify_signature` decodes the signer's public key (a point decompression: a
//! field exponentiation) for every signature; every received application message carries one.
//! [`Crypto`] keeps up to [`MAX_CACHED_KEYS`] decoded keys by their exact encoding and verifies
//! with `verify_strict`, exactly as RustCrypto does. A public key is public: the cache holds no
//! secret, and a key's decoding does not depend on anything but its bytes, so a cached key
//! verifies exactly what a freshly decoded one would. Every other call goes to RustCrypto.

use std::collections::HashMap;
use std::sync::Mutex;

use openmls::prelude::tls_codec::SecretVLBytes;
use openmls_rust_crypto::RustCrypto;
use openmls_traits::crypto::OpenMlsCrypto;
use openmls_traits::types::{
    AeadType, Ciphersuite, CryptoError, ExporterSecret, HashType, HpkeCiphertext, HpkeConfig, HpkeKeyPair, KemOutput,
    SignatureScheme,
};

/// Decoded verifying keys kept at most; the cache is emptied when it is full (a group's members
/// change rarely; an agent in very many big groups just decodes more often).
pub(crate) const MAX_CACHED_KEYS: usize = 1024;

/// RustCrypto plus a cache of decoded Ed25519 verifying keys.
#[derive(Default)]
pub struct Crypto {
    rust: RustCrypto,
    verifying_keys: Mutex<HashMap<[u8; 32], ed25519_dalek::VerifyingKey>>,
}

impl Crypto {
    /// RustCrypto, the source of randomness.
    pub(crate) fn rand(&self) -> &RustCrypto {
        &self.rust
    }

    /// The decoded key for `pk`, from the cache or decoded now (and kept). `None` if `pk` is not
    /// a valid Ed25519 public key.
    fn verifying_key(&self, pk: &[u8]) -> Option<ed25519_dalek::VerifyingKey> {
        let bytes: [u8; 32] = pk.try_into().ok()?;
        // A poisoned lock only means another thread panicked while holding a map of public
        // keys: decode without the cache.
        if let Ok(cache) = self.verifying_keys.lock() {
            if let Some(key) = cache.get(&bytes) {
                return Some(*key);
            }
        }
        let key = ed25519_dalek::VerifyingKey::from_bytes(&bytes).ok()?;
        if let Ok(mut cache) = self.verifying_keys.lock() {
            if cache.len() >= MAX_CACHED_KEYS {
                cache.clear();
            }
            cache.insert(bytes, key);
        }
        Some(key)
    }

    /// How many decoded keys are kept now.
    #[cfg(test)]
    pub(crate) fn cached_keys(&self) -> usize {
        self.verifying_keys.lock().map(|c| c.len()).unwrap_or(0)
    }
}

impl OpenMlsCrypto for Crypto {
    fn supports(&self, ciphersuite: Ciphersuite) -> Result<(), CryptoError> {
        self.rust.supports(ciphersuite)
    }

    fn supported_ciphersuites(&self) -> Vec<Ciphersuite> {
        self.rust.supported_ciphersuites()
    }

    fn hkdf_extract(&self, hash_type: HashType, salt: &[u8], ikm: &[u8]) -> Result<SecretVLBytes, CryptoError> {
        self.rust.hkdf_extract(hash_type, salt, ikm)
    }

    fn hmac(&self, hash_type: HashType, key: &[u8], message: &[u8]) -> Result<SecretVLBytes, CryptoError> {
        self.rust.hmac(hash_type, key, message)
    }

    fn hkdf_expand(
        &self,
        hash_type: HashType,
        prk: &[u8],
        info: &[u8],
        okm_len: usize,
    ) -> Result<SecretVLBytes, CryptoError> {
        self.rust.hkdf_expand(hash_type, prk, info, okm_len)
    }

    fn hash(&self, hash_type: HashType, data: &[u8]) -> Result<Vec<u8>, CryptoError> {
        self.rust.hash(hash_type, data)
    }

    fn aead_encrypt(
        &self,
        alg: AeadType,
        key: &[u8],
        data: &[u8],
        nonce: &[u8],
        aad: &[u8],
    ) -> Result<Vec<u8>, CryptoError> {
        self.rust.aead_encrypt(alg, key, data, nonce, aad)
    }

    fn aead_decrypt(
        &self,
        alg: AeadType,
        key: &[u8],
        ct_tag: &[u8],
        nonce: &[u8],
        aad: &[u8],
    ) -> Result<Vec<u8>, CryptoError> {
        self.rust.aead_decrypt(alg, key, ct_tag, nonce, aad)
    }

    fn signature_key_gen(&self, alg: SignatureScheme) -> Result<(Vec<u8>, Vec<u8>), CryptoError> {
        self.rust.signature_key_gen(alg)
    }

    fn verify_signature(
        &self,
        alg: SignatureScheme,
        data: &[u8],
        pk: &[u8],
        signature: &[u8],
    ) -> Result<(), CryptoError> {
        if alg != SignatureScheme::ED25519 {
            return self.rust.verify_signature(alg, data, pk, signature);
        }
        // The same checks and errors as RustCrypto's Ed25519 branch.
        let key = self.verifying_key(pk).ok_or(CryptoError::CryptoLibraryError)?;
        let signature: [u8; ed25519_dalek::SIGNATURE_LENGTH] =
            signature.try_into().map_err(|_| CryptoError::CryptoLibraryError)?;
        key.verify_strict(data, &ed25519_dalek::Signature::from(signature)).map_err(|_| CryptoError::InvalidSignature)
    }

    fn sign(&self, alg: SignatureScheme, data: &[u8], key: &[u8]) -> Result<Vec<u8>, CryptoError> {
        self.rust.sign(alg, data, key)
    }

    fn hpke_seal(
        &self,
        config: HpkeConfig,
        pk_r: &[u8],
        info: &[u8],
        aad: &[u8],
        ptxt: &[u8],
    ) -> Result<HpkeCiphertext, CryptoError> {
        self.rust.hpke_seal(config, pk_r, info, aad, ptxt)
    }

    fn hpke_open(
        &self,
        config: HpkeConfig,
        input: &HpkeCiphertext,
        sk_r: &[u8],
        info: &[u8],
        aad: &[u8],
    ) -> Result<Vec<u8>, CryptoError> {
        self.rust.hpke_open(config, input, sk_r, info, aad)
    }

    fn hpke_setup_sender_and_export(
        &self,
        config: HpkeConfig,
        pk_r: &[u8],
        info: &[u8],
        exporter_context: &[u8],
        exporter_length: usize,
    ) -> Result<(KemOutput, ExporterSecret), CryptoError> {
        self.rust.hpke_setup_sender_and_export(config, pk_r, info, exporter_context, exporter_length)
    }

    fn hpke_setup_receiver_and_export(
        &self,
        config: HpkeConfig,
        enc: &[u8],
        sk_r: &[u8],
        info: &[u8],
        exporter_context: &[u8],
        exporter_length: usize,
    ) -> Result<ExporterSecret, CryptoError> {
        self.rust.hpke_setup_receiver_and_export(config, enc, sk_r, info, exporter_context, exporter_length)
    }

    fn derive_hpke_keypair(&self, config: HpkeConfig, ikm: &[u8]) -> Result<HpkeKeyPair, CryptoError> {
        self.rust.derive_hpke_keypair(config, ikm)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::Signer as _;

    #[test]
    fn verifies_like_rust_crypto_and_reuses_decoded_keys() {
        let crypto = Crypto::default();
        let key = ed25519_dalek::SigningKey::from_bytes(&[9u8; 32]);
        let pk = key.verifying_key().to_bytes();
        let sig = key.sign(b"payload").to_bytes();
        let ed = SignatureScheme::ED25519;
        for _ in 0..3 {
            assert!(crypto.verify_signature(ed, b"payload", &pk, &sig).is_ok());
            assert!(crypto.rust.verify_signature(ed, b"payload", &pk, &sig).is_ok());
        }
        assert_eq!(crypto.cached_keys(), 1);
        // Wrong data, a flipped signature bit, a short signature, a short or invalid key: the
        // same outcome as RustCrypto, and the cached key does not change it.
        let mut flipped = sig;
        flipped[5] ^= 1;
        let bad_point = [0xffu8; 32];
        let cases: [(&[u8], &[u8], &[u8]); 5] = [
            (b"other", &pk, &sig),
            (b"payload", &pk, &flipped),
            (b"payload", &pk, &sig[..63]),
            (b"payload", &pk[..31], &sig),
            (b"payload", &bad_point, &sig),
        ];
        for (data, pk, sig) in cases {
            let ours = crypto.verify_signature(ed, data, pk, sig);
            let theirs = crypto.rust.verify_signature(ed, data, pk, sig);
            assert!(ours.is_err());
            assert_eq!(format!("{ours:?}"), format!("{theirs:?}"));
        }
    }

    #[test]
    fn the_cache_is_bounded() {
        let crypto = Crypto::default();
        for i in 0..(MAX_CACHED_KEYS + 10) {
            let mut seed = [0u8; 32];
            seed[..8].copy_from_slice(&(i as u64).to_le_bytes());
            let key = ed25519_dalek::SigningKey::from_bytes(&seed);
            let sig = key.sign(b"m").to_bytes();
            assert!(crypto
                .verify_signature(SignatureScheme::ED25519, b"m", &key.verifying_key().to_bytes(), &sig)
                .is_ok());
        }
        assert!(crypto.cached_keys() <= MAX_CACHED_KEYS);
    }
}
