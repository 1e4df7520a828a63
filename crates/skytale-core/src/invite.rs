//! Invite tokens and their cryptography.
//!
//! A token (`skt_inv_…`) carries an invite id, a 32-byte secret, the channel name and the relay
//! address. The relay only ever sees the id and `relay_auth`; everything else is derived from
//! the secret with HKDF-SHA256 (salt `skytale-invite-v1`):
//! - `enc` (ChaCha20-Poly1305): seals the joiner's KeyPackage (bound to the invite id, the
//!   channel and the joiner's identity, so the relay can neither read it nor replay it for
//!   another identity) and the channel's GroupInfo kept on the relay for offline joins;
//! - `relay_auth`: lets the relay refuse a wrong token at once (it proves nothing to members);
//! - `admit-key` (an Ed25519 key pair): its public key is registered in the channel's policy
//!   (group context, see [`crate::policy`]) by the commit that creates the invite; a joiner
//!   proves it holds the token by signing its identity with it — in its join request (for the
//!   member that admits it) or in its external commit's authenticated data. Members verify with
//!   the registered public key only: no member needs the token to judge a join, and a member
//!   that never saw the token still reaches the same verdict as every other member.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use ed25519_dalek::{Signature, Signer as _, SigningKey, Verifier as _, VerifyingKey};
use hkdf::Hkdf;
use rand::RngCore;
use sha2::Sha256;
use zeroize::Zeroizing;

use crate::error::{Error, Result};

/// Prefix of invite tokens.
pub const TOKEN_PREFIX: &str = "skt_inv_";
const VERSION: u8 = 1;
const SALT: &[u8] = b"skytale-invite-v1";
/// Domain of an external joiner's signature.
const XJOIN_DOMAIN: &[u8] = b"skytale-xjoin-v2";
/// Domain of a join request's admission signature.
const ADMIT_DOMAIN: &[u8] = b"skytale-admit-v1";
/// Length of an Ed25519 signature.
pub const SIGNATURE_LEN: usize = 64;

/// A parsed invite token.
#[derive(Clone)]
pub struct InviteToken {
    /// Invite id (16 random bytes).
    pub id: [u8; 16],
    /// The invite secret.
    pub secret: Zeroizing<[u8; 32]>,
    /// Channel the invite is for.
    pub channel: String,
    /// Relay address (`iroh://…`), may be empty.
    pub relay: String,
}

impl std::fmt::Debug for InviteToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InviteToken")
            .field("id", &self.id_hex())
            .field("channel", &self.channel)
            .finish_non_exhaustive()
    }
}

fn bad_token(why: &str) -> Error {
    Error::Invite { code: "SKYTALE_INVITE_INVALID", message: format!("malformed invite token: {why}") }
}

/// What an external joiner signs: domain, invite id, channel, joiner, the epoch it joins from.
fn xjoin_message(id: &[u8; 16], channel: &str, joiner: &str, from_epoch: u64) -> Vec<u8> {
    [XJOIN_DOMAIN, id, channel.as_bytes(), &[0], joiner.as_bytes(), &[0], &from_epoch.to_be_bytes()].concat()
}

/// What a joiner signs in its join request: domain, invite id, channel, joiner, and the
/// signature key of the leaf it asks to be added with (so the proof admits only that leaf).
fn admit_message(id: &[u8; 16], channel: &str, joiner: &str, leaf_signature_key: &[u8]) -> Vec<u8> {
    [ADMIT_DOMAIN, id, channel.as_bytes(), &[0], joiner.as_bytes(), &[0], leaf_signature_key].concat()
}

fn verify_with(public_key: &[u8], message: &[u8], signature: &[u8]) -> bool {
    let (Ok(pk), Ok(sig)) = (<[u8; 32]>::try_from(public_key), <[u8; SIGNATURE_LEN]>::try_from(signature)) else {
        return false;
    };
    match VerifyingKey::from_bytes(&pk) {
        Ok(vk) => vk.verify(message, &Signature::from_bytes(&sig)).is_ok(),
        Err(_) => false,
    }
}

/// Checks an external joiner's signature against an invite's registered public key.
pub fn verify_external_join(
    public_key: &[u8],
    id: &[u8; 16],
    channel: &str,
    joiner: &str,
    from_epoch: u64,
    signature: &[u8],
) -> bool {
    verify_with(public_key, &xjoin_message(id, channel, joiner, from_epoch), signature)
}

/// Checks a join request's admission signature against an invite's registered public key.
pub fn verify_admission(
    public_key: &[u8],
    id: &[u8; 16],
    channel: &str,
    joiner: &str,
    leaf_signature_key: &[u8],
    signature: &[u8],
) -> bool {
    verify_with(public_key, &admit_message(id, channel, joiner, leaf_signature_key), signature)
}

impl InviteToken {
    /// A new invite for `channel` with a random id and secret.
    pub fn generate(channel: &str, relay: &str) -> InviteToken {
        let mut id = [0u8; 16];
        let mut secret = Zeroizing::new([0u8; 32]);
        rand::rngs::OsRng.fill_bytes(&mut id);
        rand::rngs::OsRng.fill_bytes(secret.as_mut());
        InviteToken { id, secret, channel: channel.to_string(), relay: relay.to_string() }
    }

    /// The invite id as the relay knows it (32 hex characters).
    pub fn id_hex(&self) -> String {
        hex::encode(self.id)
    }

    /// Encodes the token (`skt_inv_` + base64url).
    pub fn encode(&self) -> Zeroizing<String> {
        let mut b = Zeroizing::new(Vec::with_capacity(64 + self.channel.len() + self.relay.len()));
        b.push(VERSION);
        b.extend_from_slice(&self.id);
        b.extend_from_slice(self.secret.as_ref());
        for part in [&self.channel, &self.relay] {
            b.extend_from_slice(&(part.len() as u16).to_be_bytes());
            b.extend_from_slice(part.as_bytes());
        }
        Zeroizing::new(format!("{TOKEN_PREFIX}{}", URL_SAFE_NO_PAD.encode(b.as_slice())))
    }

    /// Parses a token; `SKYTALE_INVITE_INVALID` when it is not one.
    pub fn parse(token: &str) -> Result<InviteToken> {
        let body = token.trim().strip_prefix(TOKEN_PREFIX).ok_or_else(|| bad_token("missing skt_inv_ prefix"))?;
        let raw = Zeroizing::new(URL_SAFE_NO_PAD.decode(body).map_err(|_| bad_token("not base64url"))?);
        if raw.len() < 1 + 16 + 32 + 4 || raw[0] != VERSION {
            return Err(bad_token("unknown version or too short"));
        }
        let mut id = [0u8; 16];
        id.copy_from_slice(&raw[1..17]);
        let mut secret = Zeroizing::new([0u8; 32]);
        secret.copy_from_slice(&raw[17..49]);
        let mut rest = &raw[49..];
        let mut parts = Vec::new();
        for _ in 0..2 {
            if rest.len() < 2 {
                return Err(bad_token("truncated"));
            }
            let len = u16::from_be_bytes([rest[0], rest[1]]) as usize;
            if rest.len() < 2 + len {
                return Err(bad_token("truncated"));
            }
            parts.push(String::from_utf8(rest[2..2 + len].to_vec()).map_err(|_| bad_token("not UTF-8"))?);
            rest = &rest[2 + len..];
        }
        let relay = parts.pop().unwrap_or_default();
        let channel = parts.pop().unwrap_or_default();
        Ok(InviteToken { id, secret, channel, relay })
    }

    fn derive(&self, info: &[&[u8]]) -> Zeroizing<[u8; 32]> {
        let hk = Hkdf::<Sha256>::new(Some(SALT), self.secret.as_ref());
        let info: Vec<u8> = info.concat();
        let mut out = Zeroizing::new([0u8; 32]);
        // 32 bytes is always a valid HKDF-SHA256 output length.
        let _ = hk.expand(&info, out.as_mut());
        out
    }

    /// What the relay compares to refuse a wrong token at once.
    pub fn relay_auth(&self) -> Vec<u8> {
        self.derive(&[b"relay-auth", &self.id]).to_vec()
    }

    fn cipher(&self) -> ChaCha20Poly1305 {
        let key = self.derive(&[b"enc", &self.id, self.channel.as_bytes()]);
        ChaCha20Poly1305::new(Key::from_slice(key.as_ref()))
    }

    fn seal(&self, aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>> {
        let mut nonce = [0u8; 12];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        let ct = self
            .cipher()
            .encrypt(Nonce::from_slice(&nonce), Payload { msg: plaintext, aad })
            .map_err(|_| Error::Internal("seal failed".into()))?;
        Ok([nonce.as_slice(), &ct].concat())
    }

    fn open(&self, aad: &[u8], sealed: &[u8]) -> Option<Vec<u8>> {
        if sealed.len() < 12 + 16 {
            return None;
        }
        self.cipher().decrypt(Nonce::from_slice(&sealed[..12]), Payload { msg: &sealed[12..], aad }).ok()
    }

    fn join_aad(&self, joiner: &str) -> Vec<u8> {
        [b"skytale-join-v1".as_slice(), &self.id, self.channel.as_bytes(), &[0], joiner.as_bytes()].concat()
    }

    /// Seals a joiner's KeyPackage with its admission signature: `id ‖ nonce ‖ ciphertext` of
    /// `signature ‖ key package`, bound to the joiner's identity. `leaf_signature_key` is the
    /// signature key of the key package's leaf.
    pub fn seal_join_request(&self, joiner: &str, key_package: &[u8], leaf_signature_key: &[u8]) -> Result<Vec<u8>> {
        let sig = self.sign_admission(joiner, leaf_signature_key);
        let plain = Zeroizing::new([sig.as_slice(), key_package].concat());
        Ok([self.id.as_slice(), &self.seal(&self.join_aad(joiner), &plain)?].concat())
    }

    /// The invite id a sealed join request names (first 16 bytes).
    pub fn join_request_id(payload: &[u8]) -> Option<[u8; 16]> {
        payload.get(..16).and_then(|s| s.try_into().ok())
    }

    /// Opens a join request sent by `joiner`: `(key package, admission signature)`; `None` if it
    /// was not sealed for this invite and this identity.
    pub fn open_join_request(&self, joiner: &str, payload: &[u8]) -> Option<(Vec<u8>, Vec<u8>)> {
        if payload.get(..16)? != self.id {
            return None;
        }
        let plain = self.open(&self.join_aad(joiner), &payload[16..])?;
        if plain.len() <= SIGNATURE_LEN {
            return None;
        }
        Some((plain[SIGNATURE_LEN..].to_vec(), plain[..SIGNATURE_LEN].to_vec()))
    }

    fn gi_aad(&self) -> Vec<u8> {
        [b"skytale-gi-v1".as_slice(), &self.id, self.channel.as_bytes()].concat()
    }

    /// Seals a GroupInfo for the relay.
    pub fn seal_group_info(&self, group_info: &[u8]) -> Result<Vec<u8>> {
        self.seal(&self.gi_aad(), group_info)
    }

    /// Opens a GroupInfo fetched from the relay.
    pub fn open_group_info(&self, sealed: &[u8]) -> Option<Vec<u8>> {
        self.open(&self.gi_aad(), sealed)
    }

    fn signing_key(&self) -> SigningKey {
        let seed = self.derive(&[b"admit-key", &self.id, self.channel.as_bytes()]);
        SigningKey::from_bytes(&seed)
    }

    /// The invite's public key, registered in the channel policy when the invite is created.
    pub fn public_key(&self) -> [u8; 32] {
        self.signing_key().verifying_key().to_bytes()
    }

    /// The joiner's proof for an external commit from epoch `from_epoch`.
    pub fn sign_external_join(&self, joiner: &str, from_epoch: u64) -> Vec<u8> {
        self.signing_key().sign(&xjoin_message(&self.id, &self.channel, joiner, from_epoch)).to_bytes().to_vec()
    }

    /// The joiner's admission proof for the leaf with `leaf_signature_key`.
    pub fn sign_admission(&self, joiner: &str, leaf_signature_key: &[u8]) -> Vec<u8> {
        self.signing_key().sign(&admit_message(&self.id, &self.channel, joiner, leaf_signature_key)).to_bytes().to_vec()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_round_trip_and_binding() {
        let t = InviteToken::generate("acme/support/routing", "iroh://abc@127.0.0.1:1");
        let enc = t.encode();
        assert!(enc.starts_with(TOKEN_PREFIX));
        let p = InviteToken::parse(&enc).unwrap();
        assert_eq!(
            (p.id, *p.secret, p.channel.as_str(), p.relay.as_str()),
            (t.id, *t.secret, "acme/support/routing", "iroh://abc@127.0.0.1:1")
        );
        assert_eq!(p.relay_auth(), t.relay_auth());
        let sealed = t.seal_join_request("bob", b"kp", &[7; 32]).unwrap();
        let (kp, sig) = p.open_join_request("bob", &sealed).unwrap();
        assert_eq!(kp, b"kp");
        let pk = t.public_key();
        assert!(verify_admission(&pk, &t.id, &t.channel, "bob", &[7; 32], &sig));
        assert!(!verify_admission(&pk, &t.id, &t.channel, "bob", &[8; 32], &sig), "bound to the leaf");
        assert!(!verify_admission(&pk, &t.id, &t.channel, "eve", &[7; 32], &sig), "bound to the joiner");
        assert!(p.open_join_request("mallory", &sealed).is_none(), "bound to the joiner identity");
        let other = InviteToken::generate("acme/support/routing", "");
        assert!(other.open_join_request("bob", &sealed).is_none(), "wrong secret");
        let sig = t.sign_external_join("bob", 4);
        assert!(verify_external_join(&pk, &t.id, &t.channel, "bob", 4, &sig));
        assert!(!verify_external_join(&pk, &t.id, &t.channel, "bob", 5, &sig));
        assert!(!verify_external_join(&pk, &t.id, &t.channel, "eve", 4, &sig));
        assert!(!verify_external_join(&other.public_key(), &t.id, &t.channel, "bob", 4, &sig));
        let gi = t.seal_group_info(b"group-info").unwrap();
        assert_eq!(p.open_group_info(&gi).unwrap(), b"group-info");
        assert!(InviteToken::parse("skt_inv_!!!").is_err());
        assert!(InviteToken::parse("nope").is_err());
    }
}

#[cfg(test)]
mod fuzz {
    //! Mutation fuzzing of invite parsing and opening (seeded; `FUZZ_ITERS` for a long run).
    use super::InviteToken;
    use rand::{Rng, SeedableRng};

    #[test]
    fn invite_parsing_and_opening_never_panic() {
        let iters: u64 = std::env::var("FUZZ_ITERS").ok().and_then(|v| v.parse().ok()).unwrap_or(20_000);
        let mut rng = rand::rngs::StdRng::seed_from_u64(0x1d);
        let t = InviteToken::generate("acme/support/routing", "iroh://abc@127.0.0.1:1");
        let token = t.encode().to_string();
        let sealed = t.seal_join_request("bob", b"key package bytes", &[1; 32]).unwrap_or_default();
        for _ in 0..iters {
            let mut s: Vec<u8> = token.clone().into_bytes();
            let mut p = sealed.clone();
            for v in [&mut s, &mut p] {
                if !v.is_empty() {
                    let at = rng.gen_range(0..v.len());
                    match rng.gen_range(0..3) {
                        0 => v[at] = rng.gen(),
                        1 => v.truncate(at),
                        _ => v.insert(at, rng.gen()),
                    }
                }
            }
            if let Ok(text) = String::from_utf8(s) {
                if let Err(e) = InviteToken::parse(&text) {
                    assert!(e.code().starts_with("SKYTALE_"));
                }
            }
            let _ = InviteToken::join_request_id(&p);
            assert!(t.open_join_request("bob", &p).is_none() || p == sealed);
            let _ = t.open_group_info(&p);
        }
    }
}
