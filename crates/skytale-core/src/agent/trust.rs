//! The agent's trust state and the checks every member runs on every leaf it meets: its own
//! credential, the issuer keys pinned for its org, the revocation list, and [`LeafVerifier`]
//! (Welcome, Add, external commit, update path, claimed key package).

use openmls::prelude::*;
use rusqlite::{params, OptionalExtension};

use super::{credential_identity, now, parse_message, record_position, Agent, Delivery, Inner};
use crate::credential::{fingerprint, rotate_anchors, verify_credential, Expected, RevokedAgent, TrustAnchors};
use crate::error::{Error, Result};
use crate::keystore::Keystore;
use crate::names::channel_org;

/// Keystore key of this agent's own credential.
pub(super) const CREDENTIAL_KEY: &str = "identity/credential";
/// Keystore key of the pinned issuer keys.
pub(super) const ANCHORS_KEY: &str = "trust/anchors";
/// Keystore key of the revocation list.
pub(super) const REVOKED_KEY: &str = "trust/revoked";

/// Reads a JSON value stored under `key`.
pub(super) fn load_json<T: serde::de::DeserializeOwned>(store: &Keystore, key: &str) -> Result<Option<T>> {
    match store.kv_get(key)? {
        Some(bytes) => {
            serde_json::from_slice(&bytes).map(Some).map_err(|e| Error::KeystoreCorrupt(format!("{key}: {e}")))
        }
        None => Ok(None),
    }
}

fn basic_bytes(cred: &Credential) -> Result<Vec<u8>> {
    BasicCredential::try_from(cred.clone())
        .map(|b| b.identity().to_vec())
        .map_err(|_| Error::CredentialInvalid("not a basic credential".into()))
}

/// Checks leaves of one channel against the agent's trust state. With no pinned issuer keys
/// (an offline agent that never met an API server) every check passes: such an agent vouches
/// for nobody and nobody's credential is checked; a connected client always pins first.
pub(crate) struct LeafVerifier<'a> {
    anchors: Option<&'a TrustAnchors>,
    revoked: &'a [RevokedAgent],
    org: &'a str,
}

impl<'a> LeafVerifier<'a> {
    /// A verifier for a channel of `org`.
    pub(crate) fn new(anchors: Option<&'a TrustAnchors>, revoked: &'a [RevokedAgent], org: &'a str) -> Self {
        LeafVerifier { anchors, revoked, org }
    }

    /// Verifies one leaf (credential + signature key); `identity`, when given, must be the one
    /// certified; `now`, when given, is the expiry reference. Returns the certified identity.
    pub(crate) fn check(
        &self,
        cred: &Credential,
        signature_key: &[u8],
        identity: Option<&str>,
        now: Option<u64>,
    ) -> Result<String> {
        let Some(anchors) = self.anchors else {
            return Ok(credential_identity(cred));
        };
        let bytes = basic_bytes(cred)?;
        let expected = Expected { org: self.org, identity, signature_key, now };
        verify_credential(&bytes, anchors, expected, self.revoked).map(|v| v.identity)
    }

    /// Verifies every leaf a commit brings in or changes: added key packages and an external
    /// joiner (expiry at the relay's timestamp `at`), the committer's new leaf and updated
    /// leaves (same identity as before). Runs before the commit is merged; an error leaves the
    /// channel unchanged.
    pub(crate) fn check_commit(
        &self,
        group: &MlsGroup,
        staged: &StagedCommit,
        sender: &str,
        external: bool,
        at: u64,
    ) -> Result<()> {
        for p in staged.add_proposals() {
            let leaf = p.add_proposal().key_package().leaf_node();
            self.check(leaf.credential(), leaf.signature_key().as_slice(), None, Some(at))?;
        }
        if let Some(leaf) = staged.update_path_leaf_node() {
            let (identity, now) = if external { (None, Some(at)) } else { (Some(sender), None) };
            self.check(leaf.credential(), leaf.signature_key().as_slice(), identity, now)?;
        } else if external {
            return Err(Error::CredentialInvalid("external commit without a new leaf".into()));
        }
        for u in staged.update_proposals() {
            let leaf = u.update_proposal().leaf_node();
            let before = match u.sender() {
                Sender::Member(idx) => group.member(*idx).map(credential_identity),
                _ => None,
            };
            let before = before.ok_or_else(|| Error::CredentialInvalid("update from a non-member".into()))?;
            self.check(leaf.credential(), leaf.signature_key().as_slice(), Some(&before), None)?;
        }
        Ok(())
    }
}

impl Inner {
    /// The verifier for channel `name` (whose org it derives from the name).
    pub(super) fn verifier<'a>(&'a self, name: &'a str) -> Result<LeafVerifier<'a>> {
        Ok(LeafVerifier::new(self.anchors.as_ref(), &self.revoked, channel_org(name)?))
    }
}

impl Agent {
    /// This agent's credential from the API server (compact JWS), if it has one.
    pub fn credential(&self) -> Result<Option<String>> {
        let inner = self.lock()?;
        Ok(inner.store.kv_get(CREDENTIAL_KEY)?.map(|b| String::from_utf8_lossy(&b).into_owned()))
    }

    /// The agent's Ed25519 MLS signature public key (32 bytes): what it registers with the API server.
    pub fn signature_public_key(&self) -> Result<Vec<u8>> {
        Ok(self.lock()?.signer.public().to_vec())
    }

    /// Fingerprint of this agent's signature key, for out-of-band comparison
    /// (see [`crate::fingerprint`]).
    pub fn fingerprint(&self) -> Result<String> {
        Ok(fingerprint(self.lock()?.signer.public()))
    }

    /// The issuer keys pinned for this agent's org, if any.
    pub fn trust_anchors(&self) -> Result<Option<TrustAnchors>> {
        Ok(self.lock()?.anchors.clone())
    }

    /// Pins (first use) or rotates the issuer keys of this agent's org from a freshly fetched
    /// JWKS. A key set for another org, or one that shares no key with the pinned set, is
    /// refused with `SKYTALE_CREDENTIAL_INVALID` (see [`crate::rotate_anchors`]).
    pub fn update_trust_anchors(&self, fetched: TrustAnchors) -> Result<()> {
        let mut inner = self.lock()?;
        let next = rotate_anchors(inner.anchors.as_ref(), fetched)?;
        if inner.anchors.as_ref() == Some(&next) {
            return Ok(());
        }
        let json = serde_json::to_vec(&next).map_err(|e| Error::Internal(e.to_string()))?;
        inner.store.kv_put(ANCHORS_KEY, &json)?;
        inner.anchors = Some(next);
        Ok(())
    }

    /// Replaces the revocation list (from the API server's revocation feed).
    pub fn set_revocations(&self, revoked: Vec<RevokedAgent>) -> Result<()> {
        let mut inner = self.lock()?;
        if inner.revoked == revoked {
            return Ok(());
        }
        let json = serde_json::to_vec(&revoked).map_err(|e| Error::Internal(e.to_string()))?;
        inner.store.kv_put(REVOKED_KEY, &json)?;
        inner.revoked = revoked;
        Ok(())
    }

    /// Installs this agent's credential (from the API server): it is carried in every key
    /// package and new channel from now on. With pinned issuer keys it must verify for this
    /// agent's identity, org and signature key, and not be expired.
    pub fn set_credential(&self, credential: &str) -> Result<()> {
        let mut inner = self.lock()?;
        if let Some(anchors) = &inner.anchors {
            let expected = Expected {
                org: &anchors.org,
                identity: Some(&inner.identity),
                signature_key: inner.signer.public(),
                now: Some(now() as u64),
            };
            verify_credential(credential.as_bytes(), anchors, expected, &inner.revoked)?;
        }
        inner.store.kv_put(CREDENTIAL_KEY, credential.as_bytes())?;
        inner.credential = CredentialWithKey {
            credential: BasicCredential::new(credential.as_bytes().to_vec()).into(),
            signature_key: inner.signer.public().into(),
        };
        Ok(())
    }

    /// Checks a claimed key package before adding it to `channel`: a valid key package whose
    /// credential certifies exactly `identity` in the channel's org, for its own signature key,
    /// unexpired at `now` and not revoked. `SKYTALE_CREDENTIAL_INVALID` otherwise.
    pub fn verify_key_package(&self, channel: &str, key_package: &[u8], identity: &str, now: u64) -> Result<()> {
        let inner = self.lock()?;
        if inner.anchors.is_none() {
            return Err(Error::CredentialInvalid("no issuer keys pinned: connect to the API server first".into()));
        }
        let kp = match parse_message(key_package)?.extract() {
            MlsMessageBodyIn::KeyPackage(kp) => kp,
            _ => return Err(Error::InvalidMessage("not a KeyPackage".into())),
        };
        let kp = kp
            .validate(&inner.crypto, ProtocolVersion::Mls10)
            .map_err(|e| Error::InvalidMessage(format!("key package: {e}")))?;
        let leaf = kp.leaf_node();
        inner.verifier(channel)?.check(
            leaf.credential(),
            leaf.signature_key().as_slice(),
            Some(identity),
            Some(now),
        )?;
        Ok(())
    }

    /// Identity and signature-key fingerprint of each member of the channel.
    pub fn member_fingerprints(&self, name: &str) -> Result<Vec<(String, String)>> {
        let mut inner = self.lock()?;
        let group = inner.group(name)?;
        Ok(group.members().map(|m| (credential_identity(&m.credential), fingerprint(&m.signature_key))).collect())
    }

    /// The relay's epoch (commit slot count) after the last item this agent processed or
    /// skipped, or after its own last accepted commit; `None` before the first.
    pub fn relay_epoch(&self, name: &str) -> Result<Option<u64>> {
        let inner = self.lock()?;
        let e: Option<Option<i64>> = inner
            .store
            .conn()
            .prepare_cached("SELECT relay_epoch FROM skytale_channels WHERE name = ?1")?
            .query_row([name], |r| r.get(0))
            .optional()?;
        match e {
            None => Err(Error::ChannelNotFound(name.to_string())),
            Some(v) => Ok(v.map(|x| x as u64)),
        }
    }

    /// Records the relay's epoch of the channel (never goes back).
    pub fn set_relay_epoch(&self, name: &str, epoch: u64) -> Result<()> {
        let inner = self.lock()?;
        let n = inner
            .store
            .conn()
            .prepare_cached(
                "UPDATE skytale_channels SET relay_epoch = MAX(COALESCE(relay_epoch, 0), ?2) WHERE name = ?1",
            )?
            .execute(params![name, epoch as i64])?;
        if n == 0 {
            return Err(Error::ChannelNotFound(name.to_string()));
        }
        Ok(())
    }

    /// Records a delivered item that cannot be applied (e.g. a commit every honest member
    /// rejects) as consumed: its seq and relay epoch advance, the MLS state does not.
    pub fn skip_delivered(&self, name: &str, delivery: Delivery) -> Result<()> {
        let inner = self.lock()?;
        if !inner.channel_exists(name)? {
            return Err(Error::ChannelNotFound(name.to_string()));
        }
        record_position(inner.store.conn(), name, delivery)
    }
}
