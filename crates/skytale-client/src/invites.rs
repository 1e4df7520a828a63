//! Invite tokens and their cryptography.
//!
//! A token (`skt_inv_…`) carries an invite id, a 32-byte secret, the channel name and the relay
//! address. The relay only ever sees the id and `relay_auth`; everything else is derived from
//! the secret with HKDF-SHA256 (salt `skytale-invite-v1`):
//! - `enc` (ChaCha20-Poly1305): seals the joiner's KeyPackage (bound to the invite id, the
//!   channel and the joiner's identity, so the relay can neither read it nor replay it for
//!   another identity) and the channel's GroupInfo kept on the relay for offline joins;
//! - `relay_auth`: lets the relay refuse a wrong token at once (it proves nothing to members);
//! - `proof` (HMAC-SHA256): the proof an external joiner puts in its commit's authenticated
//!   data; every member checks it and removes a joiner without a valid one.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use hkdf::Hkdf;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;
use zeroize::Zeroizing;

use crate::error::{ClientError, Result};

/// Prefix of invite tokens.
pub const TOKEN_PREFIX: &str = "skt_inv_";
const VERSION: u8 = 1;
const SALT: &[u8] = b"skytale-invite-v1";
/// Prefix of an external joiner's authenticated data.
pub const XJOIN_PREFIX: &[u8; 16] = b"skytale-xjoin-v1";

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

fn bad_token(why: &str) -> ClientError {
    ClientError::Invite { code: "SKYTALE_INVITE_INVALID", message: format!("malformed invite token: {why}") }
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
            .map_err(|_| ClientError::InvalidArgument("seal failed".into()))?;
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

    /// Seals a joiner's KeyPackage: `id ‖ nonce ‖ ciphertext`, bound to the joiner's identity.
    pub fn seal_join_request(&self, joiner: &str, key_package: &[u8]) -> Result<Vec<u8>> {
        Ok([self.id.as_slice(), &self.seal(&self.join_aad(joiner), key_package)?].concat())
    }

    /// The invite id a sealed join request names (first 16 bytes).
    pub fn join_request_id(payload: &[u8]) -> Option<[u8; 16]> {
        payload.get(..16).and_then(|s| s.try_into().ok())
    }

    /// Opens a join request sent by `joiner`; `None` if it was not sealed for this invite and
    /// this identity.
    pub fn open_join_request(&self, joiner: &str, payload: &[u8]) -> Option<Vec<u8>> {
        if payload.get(..16)? != self.id {
            return None;
        }
        self.open(&self.join_aad(joiner), &payload[16..])
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

    fn proof_mac(&self, joiner: &str, from_epoch: u64) -> Option<Hmac<Sha256>> {
        let key = self.derive(&[b"proof", &self.id, self.channel.as_bytes()]);
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key.as_ref()).ok()?;
        mac.update(joiner.as_bytes());
        mac.update(&[0]);
        mac.update(self.channel.as_bytes());
        mac.update(&from_epoch.to_be_bytes());
        Some(mac)
    }

    /// The authenticated data of an external join: `prefix ‖ id ‖ HMAC(proof, joiner ‖ channel ‖ epoch)`.
    pub fn external_join_aad(&self, joiner: &str, from_epoch: u64) -> Result<Vec<u8>> {
        let mac = self.proof_mac(joiner, from_epoch).ok_or_else(|| ClientError::InvalidArgument("proof key".into()))?;
        let tag = mac.finalize().into_bytes();
        Ok([XJOIN_PREFIX.as_slice(), &self.id, &tag].concat())
    }

    /// The invite id named in an external join's authenticated data.
    pub fn external_join_id(aad: &[u8]) -> Option<[u8; 16]> {
        if aad.len() != 16 + 16 + 32 || &aad[..16] != XJOIN_PREFIX {
            return None;
        }
        aad[16..32].try_into().ok()
    }

    /// Checks an external joiner's proof (constant time).
    pub fn verify_external_join(&self, joiner: &str, from_epoch: u64, aad: &[u8]) -> bool {
        match Self::external_join_id(aad) {
            Some(id) if id == self.id => {
                self.proof_mac(joiner, from_epoch).map(|m| m.verify_slice(&aad[32..]).is_ok()).unwrap_or(false)
            }
            _ => false,
        }
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
        let sealed = t.seal_join_request("bob", b"kp").unwrap();
        assert_eq!(p.open_join_request("bob", &sealed).unwrap(), b"kp");
        assert!(p.open_join_request("mallory", &sealed).is_none(), "bound to the joiner identity");
        let other = InviteToken::generate("acme/support/routing", "");
        assert!(other.open_join_request("bob", &sealed).is_none(), "wrong secret");
        let aad = t.external_join_aad("bob", 4).unwrap();
        assert!(p.verify_external_join("bob", 4, &aad));
        assert!(!p.verify_external_join("bob", 5, &aad));
        assert!(!p.verify_external_join("eve", 4, &aad));
        assert!(!other.verify_external_join("bob", 4, &aad));
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
        let sealed = t.seal_join_request("bob", b"key package bytes").unwrap_or_default();
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
            let _ = InviteToken::external_join_id(&p);
            assert!(t.open_join_request("bob", &p).is_none() || p == sealed);
            let _ = t.open_group_info(&p);
        }
    }
}
