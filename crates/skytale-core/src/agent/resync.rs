//! Resync (issue #10): a member that cannot follow the relay's order (it holds a commit the
//! relay's archive does not have, or the archive has a commit it cannot get) rejoins the
//! channel by an MLS external commit that replaces its own old leaf. Its membership is what
//! authenticates it: other members accept an external commit that removes only a leaf of the
//! joiner's own identity (see `fork::check_external_removes`) and still remove invite-less
//! joiners that were no members.
//!
//! The current GroupInfo comes from the other members through the channel itself, where the
//! relay sees only opaque bytes:
//! - the member sends a [`ResyncRequest`]: a fresh HPKE public key and a nonce, signed with its
//!   MLS signature key (the same in every epoch, so members on the relay's branch verify it
//!   against the requester's leaf in their tree);
//! - a member answers ([`Agent::answer_resync`]) with `relay epoch ‖ GroupInfo` sealed with
//!   HPKE to that key. The GroupInfo is signed by the responder's leaf and every leaf's
//!   credential is verified on rejoin, so the relay can neither forge nor read it (a stale one
//!   only makes the relay refuse the commit, and the member asks again).
//!
//! Wire format (not MLS messages: they start with a magic that no MLS message starts with):
//! request `REQ_MAGIC ‖ nonce[32] ‖ unix secs u64 ‖ b16(identity) ‖ b16(hpke public) ‖ b16(sig)`
//! with the signature over `SIG_LABEL ‖ b16(channel) ‖ nonce ‖ secs ‖ b16(identity) ‖ b16(pk)`;
//! response `RESP_MAGIC ‖ nonce[32] ‖ b16(kem output) ‖ b32(ciphertext)`. `b16`/`b32`: a
//! big-endian u16/u32 length, then the bytes.

use openmls::prelude::tls_codec::Serialize as _;
use openmls::prelude::*;
use openmls_traits::crypto::OpenMlsCrypto;
use openmls_traits::signatures::Signer;
use openmls_traits::types::{HpkeCiphertext, HpkePrivateKey};
use rand::RngCore;
use zeroize::Zeroizing;

use super::policy::leaf_capabilities;
use super::{credential_identity, group_config, parse_message, serialize, Agent, CIPHERSUITE};
use crate::error::{Error, Result};
use crate::events::CommitOutput;
use crate::names::validate_channel_name;
use crate::provider::Provider;

const REQ_MAGIC: &[u8; 8] = b"SKYRSQ01";
const RESP_MAGIC: &[u8; 8] = b"SKYRSP01";
const SIG_LABEL: &[u8] = b"skytale/resync-request/v1";
const HPKE_INFO: &[u8] = b"skytale/resync-response/v1";
/// How old (or how far in the future) a request may be to be answered.
const MAX_AGE_SECS: u64 = 300;

/// What a channel item carrying a resync message is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResyncItem {
    /// A member asks for the channel's current GroupInfo.
    Request,
    /// A member answers a request.
    Response,
}

/// Whether a delivered payload is a resync request or response (rather than an MLS message).
pub fn resync_item_kind(payload: &[u8]) -> Option<ResyncItem> {
    if payload.starts_with(REQ_MAGIC) {
        Some(ResyncItem::Request)
    } else if payload.starts_with(RESP_MAGIC) {
        Some(ResyncItem::Response)
    } else {
        None
    }
}

/// A resync request of this agent: the bytes to send into the channel, and the HPKE private
/// key (zeroized on drop, never stored) that opens the answers.
pub struct ResyncRequest {
    bytes: Vec<u8>,
    channel: String,
    nonce: [u8; 32],
    private: HpkePrivateKey,
}

impl std::fmt::Debug for ResyncRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResyncRequest").field("channel", &self.channel).finish_non_exhaustive()
    }
}

impl ResyncRequest {
    /// The request as sent into the channel.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The channel it is for.
    pub fn channel(&self) -> &str {
        &self.channel
    }
}

fn put16(out: &mut Vec<u8>, bytes: &[u8]) -> Result<()> {
    let len = u16::try_from(bytes.len()).map_err(|_| Error::InvalidArgument("field too long".into()))?;
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(bytes);
    Ok(())
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if self.0.len() < n {
            return Err(Error::InvalidMessage("truncated resync message".into()));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N]> {
        self.take(N)?.try_into().map_err(|_| Error::InvalidMessage("truncated resync message".into()))
    }

    fn b16(&mut self) -> Result<&'a [u8]> {
        let n = u16::from_be_bytes(self.array::<2>()?) as usize;
        self.take(n)
    }

    fn b32(&mut self) -> Result<&'a [u8]> {
        let n = u32::from_be_bytes(self.array::<4>()?) as usize;
        self.take(n)
    }
}

struct ParsedRequest<'a> {
    nonce: [u8; 32],
    identity: String,
    public: &'a [u8],
    signed: Vec<u8>,
    signature: &'a [u8],
    secs: u64,
}

fn signed_part(channel: &str, body: &[u8]) -> Result<Vec<u8>> {
    let mut signed = SIG_LABEL.to_vec();
    put16(&mut signed, channel.as_bytes())?;
    signed.extend_from_slice(body);
    Ok(signed)
}

fn parse_request<'a>(channel: &str, bytes: &'a [u8]) -> Result<ParsedRequest<'a>> {
    let mut r =
        Reader(bytes.strip_prefix(REQ_MAGIC).ok_or_else(|| Error::InvalidMessage("not a resync request".into()))?);
    let start = r.0;
    let nonce = r.array::<32>()?;
    let secs = u64::from_be_bytes(r.array::<8>()?);
    let identity = String::from_utf8(r.b16()?.to_vec()).map_err(|_| Error::InvalidMessage("identity".into()))?;
    let public = r.b16()?;
    let body = &start[..start.len() - r.0.len()];
    let signature = r.b16()?;
    Ok(ParsedRequest { nonce, identity, public, signed: signed_part(channel, body)?, signature, secs })
}

fn hpke_info(channel: &str, nonce: &[u8; 32]) -> Result<Vec<u8>> {
    let mut info = HPKE_INFO.to_vec();
    put16(&mut info, channel.as_bytes())?;
    info.extend_from_slice(nonce);
    Ok(info)
}

impl Agent {
    /// A resync request for channel `name` (which this agent holds) at time `now` (unix secs).
    pub fn resync_request(&self, name: &str, now: u64) -> Result<ResyncRequest> {
        let inner = self.lock()?;
        if !inner.channel_exists(name)? {
            return Err(Error::ChannelNotFound(name.to_string()));
        }
        let mut ikm = Zeroizing::new([0u8; 32]);
        rand::thread_rng().fill_bytes(&mut ikm[..]);
        let keys = inner
            .crypto
            .derive_hpke_keypair(CIPHERSUITE.hpke_config(), &ikm[..])
            .map_err(|e| Error::Internal(format!("hpke key: {e:?}")))?;
        let mut nonce = [0u8; 32];
        rand::thread_rng().fill_bytes(&mut nonce);
        let mut body = nonce.to_vec();
        body.extend_from_slice(&now.to_be_bytes());
        put16(&mut body, inner.identity.as_bytes())?;
        put16(&mut body, &keys.public)?;
        let signature =
            inner.signer.sign(&signed_part(name, &body)?).map_err(|e| Error::Internal(format!("sign: {e:?}")))?;
        let mut bytes = REQ_MAGIC.to_vec();
        bytes.extend_from_slice(&body);
        put16(&mut bytes, &signature)?;
        Ok(ResyncRequest { bytes, channel: name.to_string(), nonce, private: keys.private })
    }

    /// Answers another member's resync request delivered in channel `name` from `sender`:
    /// `relay_epoch ‖ GroupInfo` of the current epoch, sealed to the request's key. `None`
    /// when this agent is no active member, the requester is no member of its tree, or the
    /// request is older than a few minutes. A request whose signature does not verify with the
    /// requester's leaf key is `SKYTALE_CREDENTIAL_INVALID`.
    pub fn answer_resync(
        &self,
        name: &str,
        request: &[u8],
        sender: &str,
        relay_epoch: u64,
        now: u64,
    ) -> Result<Option<Vec<u8>>> {
        let req = parse_request(name, request)?;
        if req.identity != sender || req.secs.abs_diff(now) > MAX_AGE_SECS {
            return Ok(None);
        }
        let mut inner = self.lock()?;
        inner.group(name)?;
        let inner = &mut *inner;
        let group = inner.groups.get(name).ok_or_else(|| Error::ChannelNotFound(name.to_string()))?;
        if !group.is_active() {
            return Ok(None);
        }
        let keys: Vec<Vec<u8>> = group
            .members()
            .filter(|m| credential_identity(&m.credential) == req.identity)
            .map(|m| m.signature_key)
            .collect();
        if keys.is_empty() {
            return Ok(None);
        }
        let verified = keys.iter().any(|pk| {
            inner.crypto.verify_signature(CIPHERSUITE.signature_algorithm(), &req.signed, pk, req.signature).is_ok()
        });
        if !verified {
            return Err(Error::CredentialInvalid(format!("resync request of {} with a bad signature", req.identity)));
        }
        let info = group
            .export_group_info(&inner.crypto, &inner.signer, true)
            .map_err(|e| Error::Internal(format!("export group info: {e}")))?;
        let mut plain = Zeroizing::new(relay_epoch.to_be_bytes().to_vec());
        plain.extend_from_slice(&serialize(&info)?);
        let sealed = inner
            .crypto
            .hpke_seal(
                CIPHERSUITE.hpke_config(),
                req.public,
                &hpke_info(name, &req.nonce)?,
                req.identity.as_bytes(),
                &plain,
            )
            .map_err(|e| Error::Internal(format!("hpke seal: {e:?}")))?;
        let mut out = RESP_MAGIC.to_vec();
        out.extend_from_slice(&req.nonce);
        put16(&mut out, sealed.kem_output.as_slice())?;
        let ct = sealed.ciphertext.as_slice();
        let len = u32::try_from(ct.len()).map_err(|_| Error::InvalidArgument("group info too large".into()))?;
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(ct);
        Ok(Some(out))
    }

    /// Opens an answer to `request`: `(relay epoch, GroupInfo)`, or `None` when the answer is
    /// for another request. An answer that does not open is `SKYTALE_DECRYPT_FAILED`.
    pub fn open_resync(&self, request: &ResyncRequest, response: &[u8]) -> Result<Option<(u64, Vec<u8>)>> {
        let mut r = Reader(
            response.strip_prefix(RESP_MAGIC).ok_or_else(|| Error::InvalidMessage("not a resync response".into()))?,
        );
        if r.array::<32>()? != request.nonce {
            return Ok(None);
        }
        let kem_output = r.b16()?.to_vec();
        let ciphertext = r.b32()?.to_vec();
        let inner = self.lock()?;
        let sealed = HpkeCiphertext { kem_output: kem_output.into(), ciphertext: ciphertext.into() };
        let plain = Zeroizing::new(
            inner
                .crypto
                .hpke_open(
                    CIPHERSUITE.hpke_config(),
                    &sealed,
                    &request.private,
                    &hpke_info(&request.channel, &request.nonce)?,
                    inner.identity.as_bytes(),
                )
                .map_err(|_| Error::DecryptFailed("resync response does not open".into()))?,
        );
        if plain.len() < 9 {
            return Err(Error::InvalidMessage("resync response too short".into()));
        }
        let epoch = u64::from_be_bytes(plain[..8].try_into().map_err(|_| Error::InvalidMessage("epoch".into()))?);
        Ok(Some((epoch, plain[8..].to_vec())))
    }

    /// Rejoins channel `name` (which this agent holds, typically on a forked or stuck state)
    /// by an external commit from `group_info`: the MLS state is replaced at once (the channel's
    /// position and inbox stay), the commit removes this agent's old leaf. Every leaf of the
    /// group is verified as on a join. Send the commit through the relay at the GroupInfo's
    /// relay epoch; if the relay refuses it, get a fresh GroupInfo and call this again.
    pub fn rejoin_by_external_commit(&self, name: &str, group_info: &[u8]) -> Result<CommitOutput> {
        validate_channel_name(name)?;
        let verifiable = match parse_message(group_info)?.extract() {
            MlsMessageBodyIn::GroupInfo(gi) => gi,
            _ => return Err(Error::InvalidMessage("not a GroupInfo".into())),
        };
        if verifiable.group_id().as_slice() != name.as_bytes() {
            return Err(Error::InvalidMessage("the GroupInfo belongs to another channel".into()));
        }
        let from_epoch = verifiable.epoch().as_u64();
        let mut inner = self.lock()?;
        if !inner.channel_exists(name)? {
            return Err(Error::ChannelNotFound(name.to_string()));
        }
        inner.transaction(None, |inner| {
            let storage = crate::provider::Storage::new(inner.store.conn());
            if let Some(mut old) = MlsGroup::load(&storage, &GroupId::from_slice(name.as_bytes()))
                .map_err(|e| Error::Storage(format!("load channel: {e}")))?
            {
                old.delete(&storage).map_err(|e| Error::Storage(format!("delete channel state: {e}")))?;
            }
            inner.groups.remove(name);
            let provider = Provider::new(&inner.crypto, inner.store.conn());
            let (group, bundle) = MlsGroup::external_commit_builder()
                .with_config(group_config(inner.past_epochs))
                .build_group(&provider, verifiable, inner.credential.clone())
                .map_err(|e| Error::InvalidMessage(format!("group info: {e}")))?
                .leaf_node_parameters(LeafNodeParameters::builder().with_capabilities(leaf_capabilities()).build())
                .load_psks(provider.storage())
                .map_err(|e| Error::Storage(format!("psks: {e:?}")))?
                .build(provider.rand(), provider.crypto(), &inner.signer, |_| true)
                .map_err(|e| Error::Internal(format!("external commit: {e}")))?
                .finalize(&provider)
                .map_err(|e| Error::Internal(format!("external commit: {e}")))?;
            {
                let verifier = inner.verifier(name)?;
                for m in group.members() {
                    verifier.check(&m.credential, &m.signature_key, None, None)?;
                }
            }
            let commit = bundle.commit().tls_serialize_detached().map_err(|e| Error::Internal(format!("{e}")))?;
            let epoch = group.epoch().as_u64();
            inner.groups.insert(name.to_string(), group);
            Ok(CommitOutput { commit, welcome: None, from_epoch, epoch, added: vec![], removed: vec![] })
        })
    }
}
