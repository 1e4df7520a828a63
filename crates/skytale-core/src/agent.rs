//! `Agent`: one identity, its keystore and its channels (MLS groups).
//!
//! Every operation runs in one SQLite transaction: either all of the MLS state change and
//! Skytale's bookkeeping is stored, or none of it (the in-memory group is then reloaded from
//! the keystore). An `Agent` is `Send + Sync`; operations are serialized by an internal mutex.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use openmls::prelude::tls_codec::{DeserializeBytes, Serialize as _};
use openmls::prelude::*;
use openmls_basic_credential::SignatureKeyPair;
use rusqlite::{params, OptionalExtension};
use zeroize::Zeroizing;

use crate::credential::{credential_identity_unverified, RevokedAgent, TrustAnchors};
use crate::crypto::Crypto;
use crate::error::{Error, Result};
use crate::events::{CommitMode, CommitOutput, Incoming};
use crate::keystore::Keystore;
use crate::mls_errors as me;
use crate::names::{channel_org, validate_channel_name, validate_identity};
use crate::provider::Provider;
use crate::secret::KeystoreSecret;
use crate::signer::AgentSigner;

/// The one ciphersuite Skytale uses.
pub const CIPHERSUITE: Ciphersuite = Ciphersuite::MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519;

/// How many past epochs' secrets channels keep by default to decrypt late application messages.
/// One: the relay refuses sends built on another epoch than the channel's, so a member
/// processing in relay order never needs older secrets; the one kept is for `Agent` users who
/// move messages themselves and may deliver one sent just before a commit after it. openmls
/// persists every kept epoch (its secret tree and member list) with each message, so each one
/// more costs every message, most in big groups; and fewer kept secrets is better forward
/// secrecy. A client that processes everything in relay order keeps none
/// ([`Agent::set_past_epochs`]).
pub const DEFAULT_PAST_EPOCHS: usize = 1;

/// Most past epochs a channel may keep.
const MAX_PAST_EPOCHS: usize = 16;

/// Options to open an agent.
#[derive(Debug, Clone)]
pub struct AgentOptions<'a> {
    /// Data directory holding the keystore.
    pub data_dir: &'a Path,
    /// The agent's identity (routing name and MLS credential), 1-64 of `A-Z a-z 0-9 - _ . @`.
    pub identity: &'a str,
    /// How the keystore key is obtained.
    pub secret: &'a KeystoreSecret,
}

struct Inner {
    store: Keystore,
    crypto: Crypto,
    identity: String,
    signer: AgentSigner,
    credential: CredentialWithKey,
    groups: HashMap<String, MlsGroup>,
    /// Issuer keys pinned for this agent's org; `None` = offline agent that checks no credentials.
    anchors: Option<TrustAnchors>,
    /// Revoked agents (from the API server's revocation feed).
    revoked: Vec<RevokedAgent>,
    /// Past epochs kept by channels created or joined from now on.
    past_epochs: usize,
}

mod acks;
mod batch;
pub use batch::BatchError;
mod fork;
mod policy;
mod resync;
mod trust;
pub use fork::{commit_hash, failure_kind, Failure, AUTH_LEN};
use policy::{build_commit, check_staged, leaf_capabilities, policy_after_removal, policy_extensions, CommitPlan};
pub use resync::{resync_item_kind, ResyncItem, ResyncRequest};
pub(crate) use trust::LeafVerifier;

/// An agent: an identity with its encrypted keystore and MLS channels.
pub struct Agent {
    inner: Mutex<Inner>,
    /// Inbox acknowledgements noted and not written yet (see [`acks`]); apart from `inner` so
    /// that noting one never waits for a keystore transaction.
    pending_acks: Mutex<acks::PendingAcks>,
    identity: String,
    cipher_version: String,
}

impl std::fmt::Debug for Agent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Agent").field("identity", &self.identity).finish_non_exhaustive()
    }
}

fn now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

fn group_config(past_epochs: usize) -> MlsGroupJoinConfig {
    MlsGroupJoinConfig::builder()
        .use_ratchet_tree_extension(true)
        .wire_format_policy(MIXED_CIPHERTEXT_WIRE_FORMAT_POLICY)
        .max_past_epochs(past_epochs)
        .sender_ratchet_configuration(SenderRatchetConfiguration::new(32, 10_000))
        .build()
}

/// Identity string of an MLS credential: the identity an agent credential names (unverified:
/// verification happens where a leaf enters a group), or the raw identity of a plain one.
pub(crate) fn credential_identity(cred: &Credential) -> String {
    match BasicCredential::try_from(cred.clone()) {
        Ok(basic) => credential_identity_unverified(basic.identity())
            .unwrap_or_else(|| String::from_utf8_lossy(basic.identity()).into_owned()),
        Err(_) => "<unknown>".to_string(),
    }
}

/// Where a delivered item sits in the relay's order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delivery {
    /// Relay sequence number.
    pub seq: u64,
    /// The relay's epoch (commit slot count) after this item: a commit's slot + 1, otherwise the
    /// item's epoch.
    pub relay_epoch: u64,
    /// The relay's timestamp of the item (unix seconds): the same for every member, so time
    /// checks of a commit (credential expiry) give the same verdict everywhere.
    pub at_secs: u64,
}

fn serialize(msg: &MlsMessageOut) -> Result<Vec<u8>> {
    msg.tls_serialize_detached().map_err(|e| Error::Internal(format!("serialize: {e}")))
}

fn parse_message(bytes: &[u8]) -> Result<MlsMessageIn> {
    MlsMessageIn::tls_deserialize_exact_bytes(bytes).map_err(|_| Error::InvalidMessage("not an MLS message".into()))
}

impl Agent {
    /// Opens the agent in `opts.data_dir`, creating its keystore and identity on first use.
    ///
    /// Errors: `SKYTALE_KEYSTORE_WRONG_KEY`, `SKYTALE_KEYSTORE_CORRUPT`,
    /// `SKYTALE_KEYSTORE_LOCKED`, `SKYTALE_IDENTITY_MISMATCH`, `SKYTALE_INVALID_IDENTITY`.
    pub fn open(opts: AgentOptions<'_>) -> Result<Agent> {
        validate_identity(opts.identity)?;
        let store = Keystore::open(opts.data_dir, opts.secret)?;
        let crypto = Crypto::default();
        let stored: Option<(String, Vec<u8>)> = store
            .conn()
            .query_row("SELECT name, signature_public FROM skytale_identity WHERE id = 1", [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .optional()?;
        let signer = match stored {
            Some((name, public)) => {
                if name != opts.identity {
                    return Err(Error::IdentityMismatch { stored: name, requested: opts.identity.to_string() });
                }
                SignatureKeyPair::read(
                    &crate::provider::Storage::new(store.conn()),
                    &public,
                    CIPHERSUITE.signature_algorithm(),
                )
                .ok_or_else(|| Error::KeystoreCorrupt("the identity's signature key is missing".into()))?
            }
            None => {
                let signer = SignatureKeyPair::new(CIPHERSUITE.signature_algorithm())
                    .map_err(|e| Error::Internal(format!("key generation: {e:?}")))?;
                let provider = Provider::new(&crypto, store.conn());
                store.conn().execute_batch("BEGIN IMMEDIATE")?;
                let res = (|| -> Result<()> {
                    signer.store(provider.storage()).map_err(Error::from)?;
                    store.conn().execute(
                        "INSERT INTO skytale_identity (id, name, signature_public, created_at) VALUES (1, ?1, ?2, ?3)",
                        params![opts.identity, signer.public(), now()],
                    )?;
                    Ok(())
                })();
                finish_tx(store.conn(), res)?;
                signer
            }
        };
        let signer = AgentSigner::new(signer);
        let stored_credential = store.kv_get(trust::CREDENTIAL_KEY)?;
        let credential = CredentialWithKey {
            credential: BasicCredential::new(
                stored_credential.map(|c| c.to_vec()).unwrap_or_else(|| opts.identity.as_bytes().to_vec()),
            )
            .into(),
            signature_key: signer.public().into(),
        };
        let anchors = trust::load_json::<TrustAnchors>(&store, trust::ANCHORS_KEY)?;
        let revoked = trust::load_json::<Vec<RevokedAgent>>(&store, trust::REVOKED_KEY)?.unwrap_or_default();
        let cipher_version = store.cipher_version().to_string();
        Ok(Agent {
            inner: Mutex::new(Inner {
                store,
                crypto,
                identity: opts.identity.to_string(),
                signer,
                credential,
                groups: HashMap::new(),
                anchors,
                revoked,
                past_epochs: DEFAULT_PAST_EPOCHS,
            }),
            pending_acks: Mutex::new(acks::PendingAcks::default()),
            identity: opts.identity.to_string(),
            cipher_version,
        })
    }

    /// The agent's identity.
    pub fn identity(&self) -> &str {
        &self.identity
    }

    /// The SQLCipher version of the keystore (proof that the store is encrypted).
    pub fn cipher_version(&self) -> &str {
        &self.cipher_version
    }

    /// Sets how many past epochs' secrets channels created or joined from now on keep (channels
    /// already held keep theirs). Keep [`DEFAULT_PAST_EPOCHS`] when messages may be handed to
    /// [`Agent::process_incoming`] in another order than the relay's; a client that processes
    /// every item in relay order, and only merges its own commit after everything the relay
    /// ordered before it, keeps none: an application message then only decrypts in its own
    /// epoch (better forward secrecy, less state written with every message).
    ///
    /// Errors: `SKYTALE_INVALID_ARGUMENT` above 16.
    pub fn set_past_epochs(&self, past_epochs: usize) -> Result<()> {
        if past_epochs > MAX_PAST_EPOCHS {
            return Err(Error::InvalidArgument(format!("past epochs must be 0..={MAX_PAST_EPOCHS}")));
        }
        self.lock()?.past_epochs = past_epochs;
        Ok(())
    }

    fn lock(&self) -> Result<MutexGuard<'_, Inner>> {
        self.inner.lock().map_err(|_| Error::Internal("agent state poisoned by an earlier panic".into()))
    }

    /// Generates `count` single-use KeyPackages (MLS message bytes) for others to add this agent.
    pub fn generate_key_packages(&self, count: u32) -> Result<Vec<Vec<u8>>> {
        if count == 0 || count > 1000 {
            return Err(Error::InvalidArgument("count must be 1..=1000".into()));
        }
        let mut inner = self.lock()?;
        inner.transaction(None, |inner| {
            let provider = Provider::new(&inner.crypto, inner.store.conn());
            let mut out = Vec::with_capacity(count as usize);
            for _ in 0..count {
                let bundle = KeyPackage::builder()
                    .leaf_node_capabilities(leaf_capabilities())
                    .build(CIPHERSUITE, &provider, &inner.signer, inner.credential.clone())
                    .map_err(|e| Error::Internal(format!("key package: {e}")))?;
                out.push(serialize(&MlsMessageOut::from(bundle.key_package().clone()))?);
            }
            Ok(out)
        })
    }

    /// Creates a channel (a new MLS group with this agent as its only member and first
    /// admin) with the default rules: admins add, remove, invite and change the policy.
    pub fn create_channel(&self, name: &str) -> Result<()> {
        self.create_channel_with_rules(name, crate::policy::Rules::default())
    }

    /// Creates a channel with `rules` (see [`crate::policy`]); this agent is its first admin.
    pub fn create_channel_with_rules(&self, name: &str, rules: crate::policy::Rules) -> Result<()> {
        validate_channel_name(name)?;
        let mut inner = self.lock()?;
        if inner.channel_exists(name)? {
            return Err(Error::ChannelExists(name.to_string()));
        }
        inner.transaction(None, |inner| {
            let provider = Provider::new(&inner.crypto, inner.store.conn());
            let create_config = MlsGroupCreateConfig::builder()
                .ciphersuite(CIPHERSUITE)
                .use_ratchet_tree_extension(true)
                .wire_format_policy(MIXED_CIPHERTEXT_WIRE_FORMAT_POLICY)
                .max_past_epochs(inner.past_epochs)
                .sender_ratchet_configuration(*group_config(0).sender_ratchet_configuration())
                .capabilities(leaf_capabilities())
                .with_group_context_extensions(policy_extensions(&crate::policy::ChannelPolicy::for_creator(
                    &inner.identity,
                    rules,
                ))?)
                .build();
            let group = MlsGroup::new_with_group_id(
                &provider,
                &inner.signer,
                &create_config,
                GroupId::from_slice(name.as_bytes()),
                inner.credential.clone(),
            )
            .map_err(|e| Error::Internal(format!("create group: {e}")))?;
            inner.store.conn().execute(
                "INSERT INTO skytale_channels (name, group_id, created_at) VALUES (?1, ?2, ?3)",
                params![name, name.as_bytes(), now()],
            )?;
            inner.groups.insert(name.to_string(), group);
            Ok(())
        })
    }

    /// Joins a channel from a Welcome (MLS message bytes); returns the channel name.
    ///
    /// Errors: `SKYTALE_KEY_PACKAGE_USED` when the Welcome is for a key package this agent no
    /// longer holds (already used), `SKYTALE_CHANNEL_EXISTS` when already a member.
    pub fn join_channel(&self, welcome: &[u8]) -> Result<String> {
        self.join_channel_from(welcome).map(|(name, _)| name)
    }

    /// Like [`Agent::join_channel`], also returning who added this agent: the Welcome's sender
    /// as authenticated by MLS (its leaf's credential), not what a delivery service claims.
    pub fn join_channel_from(&self, welcome: &[u8]) -> Result<(String, String)> {
        let welcome = match parse_message(welcome)?.extract() {
            MlsMessageBodyIn::Welcome(w) => w,
            _ => return Err(Error::InvalidMessage("not a Welcome".into())),
        };
        let mut inner = self.lock()?;
        let mut joined_name = String::new();
        let mut adder = String::new();
        inner.transaction(None, |inner| {
            let provider = Provider::new(&inner.crypto, inner.store.conn());
            let staged = StagedWelcome::build_from_welcome(&provider, &group_config(inner.past_epochs), welcome)
                .map_err(me::welcome_error)?
                .replace_old_group()
                .build()
                .map_err(me::welcome_error)?;
            let group_id = staged.group_context().group_id().as_slice().to_vec();
            let name =
                String::from_utf8(group_id).map_err(|_| Error::InvalidMessage("channel name is not UTF-8".into()))?;
            validate_channel_name(&name)?;
            {
                // Every member of the group we would join must be certified by our org's issuer.
                let verifier = inner.verifier(&name)?;
                for m in staged.members() {
                    verifier.check(&m.credential, &m.signature_key, None, None)?;
                }
            }
            adder = staged
                .welcome_sender()
                .map(|leaf| credential_identity(leaf.credential()))
                .map_err(|e| Error::InvalidMessage(format!("welcome sender: {e}")))?;
            if inner.channel_exists(&name)? {
                let active = inner.group(&name).map(|g| g.is_active()).unwrap_or(false);
                if active {
                    return Err(Error::ChannelExists(name));
                }
                // Re-joining a channel we were removed from: drop the old state first.
                inner.delete_channel_state(&name)?;
            }
            let provider = Provider::new(&inner.crypto, inner.store.conn());
            let group = staged.into_group(&provider).map_err(|e| Error::InvalidMessage(format!("welcome: {e}")))?;
            inner.store.conn().execute(
                "INSERT INTO skytale_channels (name, group_id, created_at) VALUES (?1, ?2, ?3)",
                params![name, name.as_bytes(), now()],
            )?;
            inner.groups.insert(name.clone(), group);
            joined_name = name;
            Ok(())
        })?;
        Ok((joined_name, adder))
    }

    /// A signed GroupInfo of the channel's current epoch, with the ratchet tree, as MLS
    /// message bytes: what a new member needs to join by an external commit.
    pub fn export_group_info(&self, name: &str) -> Result<Vec<u8>> {
        let mut inner = self.lock()?;
        inner.group(name)?;
        let inner = &mut *inner;
        let group = inner.groups.get(name).ok_or_else(|| Error::ChannelNotFound(name.to_string()))?;
        if !group.is_active() {
            return Err(Error::NotAMember(name.to_string()));
        }
        let msg = group
            .export_group_info(&inner.crypto, &inner.signer, true)
            .map_err(|e| Error::Internal(format!("export group info: {e}")))?;
        serialize(&msg)
    }

    /// Joins a channel by an MLS external commit built from `group_info` (as produced by
    /// [`Agent::export_group_info`]), carrying `authenticated_data` (visible to members, e.g. a
    /// proof of an invite). The channel is stored at the new epoch at once; if the delivery
    /// service refuses the commit, call [`Agent::forget_channel`] and try again with a fresh
    /// GroupInfo. Returns the channel name and the commit to send.
    pub fn join_by_external_commit(
        &self,
        group_info: &[u8],
        authenticated_data: &[u8],
    ) -> Result<(String, CommitOutput)> {
        self.external_join(group_info, |_| Ok(authenticated_data.to_vec()), None)
    }

    /// Joins by an external commit with an invite: the commit carries the joiner's proof for
    /// the epoch it joins from, and the join is refused up front (`SKYTALE_INVITE_*`) when the
    /// channel's policy says the invite is revoked, expired, used up or was already used by
    /// this agent — the verdict every member would reach.
    pub fn join_with_invite(
        &self,
        group_info: &[u8],
        invite: &crate::invite::InviteToken,
    ) -> Result<(String, CommitOutput)> {
        let me_id = self.identity.clone();
        let aad = |from_epoch: u64| {
            crate::policy::CommitProofs {
                external: Some(crate::policy::ExternalProof {
                    id: invite.id_hex(),
                    sig: crate::policy::b64(&invite.sign_external_join(&me_id, from_epoch)),
                }),
                admit: vec![],
            }
            .to_aad()
        };
        self.external_join(group_info, aad, Some(invite))
    }

    fn external_join(
        &self,
        group_info: &[u8],
        make_aad: impl FnOnce(u64) -> Result<Vec<u8>>,
        invite: Option<&crate::invite::InviteToken>,
    ) -> Result<(String, CommitOutput)> {
        let verifiable = match parse_message(group_info)?.extract() {
            MlsMessageBodyIn::GroupInfo(gi) => gi,
            _ => return Err(Error::InvalidMessage("not a GroupInfo".into())),
        };
        let name = String::from_utf8(verifiable.group_id().as_slice().to_vec())
            .map_err(|_| Error::InvalidMessage("channel name is not UTF-8".into()))?;
        validate_channel_name(&name)?;
        let from_epoch = verifiable.epoch().as_u64();
        let authenticated_data = make_aad(from_epoch)?;
        let mut inner = self.lock()?;
        let mut result = None;
        inner.transaction(None, |inner| {
            if inner.channel_exists(&name)? {
                let active = inner.group(&name).map(|g| g.is_active()).unwrap_or(false);
                if active {
                    return Err(Error::ChannelExists(name.clone()));
                }
                inner.delete_channel_state(&name)?;
            }
            let provider = Provider::new(&inner.crypto, inner.store.conn());
            let (group, bundle) = MlsGroup::external_commit_builder()
                .with_aad(authenticated_data.clone())
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
                let verifier = inner.verifier(&name)?;
                for m in group.members() {
                    verifier.check(&m.credential, &m.signature_key, None, None)?;
                }
            }
            if let (Some(invite), Some(p)) = (invite, policy::policy_of(group.extensions())?) {
                p.usable_invite(&invite.id_hex(), &inner.identity, now() as u64)?;
            }
            let commit = serialize(bundle.commit())?;
            let epoch = group.epoch().as_u64();
            inner.store.conn().execute(
                "INSERT INTO skytale_channels (name, group_id, created_at) VALUES (?1, ?2, ?3)",
                params![name, name.as_bytes(), now()],
            )?;
            inner.groups.insert(name.clone(), group);
            result = Some((
                name.clone(),
                CommitOutput {
                    commit,
                    welcome: None,
                    from_epoch,
                    epoch,
                    added: vec![inner.identity.clone()],
                    removed: vec![],
                },
            ));
            Ok(())
        })?;
        result.ok_or_else(|| Error::Internal("external commit produced nothing".into()))
    }

    /// Names of the channels in this keystore (including ones this agent was removed from).
    pub fn channel_names(&self) -> Result<Vec<String>> {
        let inner = self.lock()?;
        let mut stmt = inner.store.conn().prepare("SELECT name FROM skytale_channels ORDER BY name")?;
        let names = stmt.query_map([], |r| r.get::<_, String>(0))?.collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(names)
    }

    /// Whether a channel exists in this keystore.
    pub fn has_channel(&self, name: &str) -> Result<bool> {
        validate_channel_name(name)?;
        self.lock()?.channel_exists(name)
    }

    /// Whether this agent is an active member of the channel.
    pub fn is_member(&self, name: &str) -> Result<bool> {
        let mut inner = self.lock()?;
        Ok(inner.group(name)?.is_active())
    }

    /// The channel's current epoch.
    pub fn epoch(&self, name: &str) -> Result<u64> {
        let mut inner = self.lock()?;
        Ok(inner.group(name)?.epoch().as_u64())
    }

    /// Identities of the channel's current members.
    pub fn members(&self, name: &str) -> Result<Vec<String>> {
        let mut inner = self.lock()?;
        let group = inner.group(name)?;
        Ok(group.members().map(|m| credential_identity(&m.credential)).collect())
    }

    /// Exports a secret of the current epoch (RFC 9420 exporter); all members derive the same.
    pub fn export_secret(&self, name: &str, label: &str, context: &[u8], len: usize) -> Result<Zeroizing<Vec<u8>>> {
        let mut inner = self.lock()?;
        inner.group(name)?;
        let inner = &mut *inner;
        let group = inner.groups.get(name).ok_or_else(|| Error::ChannelNotFound(name.to_string()))?;
        if !group.is_active() {
            return Err(Error::NotAMember(name.to_string()));
        }
        group
            .export_secret(&inner.crypto, label, context, len)
            .map(Zeroizing::new)
            .map_err(|e| Error::Internal(format!("export: {e}")))
    }

    /// Adds members from their KeyPackages (as produced by [`Agent::generate_key_packages`]).
    ///
    /// Errors: `SKYTALE_KEY_PACKAGE_USED` when this agent already used one of the key packages.
    pub fn add_members(&self, name: &str, key_packages: &[Vec<u8>], mode: CommitMode) -> Result<CommitOutput> {
        self.add_members_checked(name, key_packages, mode, true)
    }

    /// [`Agent::add_members`] without this agent's own policy check: what a hostile member can
    /// always do with a modified client. Exists for tests that show the other members reject it.
    #[doc(hidden)]
    pub fn add_members_bypassing_policy(
        &self,
        name: &str,
        key_packages: &[Vec<u8>],
        mode: CommitMode,
    ) -> Result<CommitOutput> {
        self.add_members_checked(name, key_packages, mode, false)
    }

    fn add_members_checked(
        &self,
        name: &str,
        key_packages: &[Vec<u8>],
        mode: CommitMode,
        check_policy: bool,
    ) -> Result<CommitOutput> {
        if key_packages.is_empty() {
            return Err(Error::InvalidArgument("no key packages".into()));
        }
        let mut inner = self.lock()?;
        inner.transaction(Some(name), |inner| {
            let mut kps = Vec::with_capacity(key_packages.len());
            let mut refs = Vec::with_capacity(key_packages.len());
            for bytes in key_packages {
                let kp_in = match parse_message(bytes)?.extract() {
                    MlsMessageBodyIn::KeyPackage(kp) => kp,
                    _ => return Err(Error::InvalidMessage("not a KeyPackage".into())),
                };
                let kp = kp_in
                    .validate(&inner.crypto, ProtocolVersion::Mls10)
                    .map_err(|e| Error::InvalidMessage(format!("key package: {e}")))?;
                if kp.ciphersuite() != CIPHERSUITE {
                    return Err(Error::InvalidMessage("key package of another ciphersuite".into()));
                }
                inner.verifier(name)?.check(
                    kp.leaf_node().credential(),
                    kp.leaf_node().signature_key().as_slice(),
                    None,
                    Some(now() as u64),
                )?;
                let kp_ref = kp.hash_ref(&inner.crypto).map_err(|e| Error::Internal(e.to_string()))?;
                let used: Option<i64> = inner
                    .store
                    .conn()
                    .query_row("SELECT 1 FROM skytale_used_key_packages WHERE ref = ?1", [kp_ref.as_slice()], |r| r.get(0))
                    .optional()?;
                if used.is_some() || refs.iter().any(|r: &Vec<u8>| r.as_slice() == kp_ref.as_slice()) {
                    return Err(Error::KeyPackageUsed);
                }
                refs.push(kp_ref.as_slice().to_vec());
                kps.push(kp);
            }
            let added: Vec<String> = kps.iter().map(|k| credential_identity(k.leaf_node().credential())).collect();
            let (crypto, conn, signer) = (&inner.crypto, inner.store.conn(), &inner.signer);
            let group = inner.groups.get_mut(name).ok_or_else(|| Error::ChannelNotFound(name.to_string()))?;
            ensure_ready(name, group)?;
            let current: Vec<String> = group.members().map(|m| credential_identity(&m.credential)).collect();
            if let Some(dup) = added.iter().find(|a| current.contains(a)) {
                return Err(Error::InvalidArgument(format!("'{dup}' is already a member")));
            }
            if check_policy {
                policy::require(group, &inner.identity, crate::policy::Action::Add)?;
            }
            let provider = Provider::new(crypto, conn);
            let from_epoch = group.epoch().as_u64();
            // Add-only commit without an update path (RFC 9420 allows it; ~4x cheaper for large
            // groups). Post-compromise security is kept by the driver's scheduled self-update
            // (see skytale-client: a rotation follows adds once the last one is older than its
            // interval).
            let plan = CommitPlan { adds: kps, ..Default::default() };
            let (commit, welcome) = build_commit(&provider, group, signer, plan, mode)?;
            let welcome = welcome.ok_or_else(|| Error::Internal("an add produced no Welcome".into()))?;
            for r in &refs {
                conn.execute("INSERT INTO skytale_used_key_packages (ref, used_at) VALUES (?1, ?2)", params![r, now()])?;
            }
            if mode == CommitMode::Stage {
                // If the delivery service rejects this commit, these key packages were not used.
                let refs_json = serde_json::to_vec(&refs.iter().map(hex::encode).collect::<Vec<_>>())
                    .map_err(|e| Error::Internal(e.to_string()))?;
                conn.execute(
                    "INSERT INTO skytale_kv (key, value) VALUES (?1, ?2) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                    params![pending_kps_key(name), refs_json],
                )?;
            }
            Ok(CommitOutput {
                commit: serialize(&commit)?,
                welcome: Some(serialize(&welcome)?),
                from_epoch,
                epoch: from_epoch + 1,
                added,
                removed: vec![],
            })
        })
    }

    /// Removes members by identity.
    pub fn remove_members(&self, name: &str, identities: &[String], mode: CommitMode) -> Result<CommitOutput> {
        if identities.is_empty() {
            return Err(Error::InvalidArgument("no identities".into()));
        }
        let mut inner = self.lock()?;
        inner.transaction(Some(name), |inner| {
            let own = inner.identity.clone();
            let (crypto, conn, signer) = (&inner.crypto, inner.store.conn(), &inner.signer);
            let group = inner.groups.get_mut(name).ok_or_else(|| Error::ChannelNotFound(name.to_string()))?;
            ensure_ready(name, group)?;
            let mut leaves = Vec::new();
            for id in identities {
                if *id == own {
                    return Err(Error::InvalidArgument(
                        "an agent cannot remove itself; leave the channel instead".into(),
                    ));
                }
                let found: Vec<LeafNodeIndex> =
                    group.members().filter(|m| credential_identity(&m.credential) == *id).map(|m| m.index).collect();
                if found.is_empty() {
                    return Err(Error::MemberNotFound(id.clone()));
                }
                leaves.extend(found);
            }
            policy::require(group, &own, crate::policy::Action::Remove)?;
            let provider = Provider::new(crypto, conn);
            let from_epoch = group.epoch().as_u64();
            // Removed members lose their roles in the same commit (a re-invited one starts over).
            let plan =
                CommitPlan { removes: leaves, policy: policy_after_removal(group, identities)?, ..Default::default() };
            let (commit, welcome) = build_commit(&provider, group, signer, plan, mode)?;
            Ok(CommitOutput {
                commit: serialize(&commit)?,
                welcome: welcome.as_ref().map(serialize).transpose()?,
                from_epoch,
                epoch: from_epoch + 1,
                added: vec![],
                removed: identities.to_vec(),
            })
        })
    }

    /// Rotates this agent's leaf key (an MLS self-update commit): a new epoch with fresh keys.
    pub fn rotate_key(&self, name: &str, mode: CommitMode) -> Result<CommitOutput> {
        let mut inner = self.lock()?;
        inner.transaction(Some(name), |inner| {
            let (crypto, conn, signer) = (&inner.crypto, inner.store.conn(), &inner.signer);
            let group = inner.groups.get_mut(name).ok_or_else(|| Error::ChannelNotFound(name.to_string()))?;
            ensure_ready(name, group)?;
            let provider = Provider::new(crypto, conn);
            let from_epoch = group.epoch().as_u64();
            let plan = CommitPlan { force_self_update: true, ..Default::default() };
            let (commit, _) = build_commit(&provider, group, signer, plan, mode)?;
            let commit = serialize(&commit)?;
            Ok(CommitOutput {
                commit,
                welcome: None,
                from_epoch,
                epoch: from_epoch + 1,
                added: vec![],
                removed: vec![],
            })
        })
    }

    /// Merges this agent's pending commit (after the delivery service accepted it).
    pub fn merge_pending_commit(&self, name: &str) -> Result<u64> {
        let mut inner = self.lock()?;
        inner.transaction(Some(name), |inner| {
            let (crypto, conn) = (&inner.crypto, inner.store.conn());
            let group = inner.groups.get_mut(name).ok_or_else(|| Error::ChannelNotFound(name.to_string()))?;
            if group.pending_commit().is_none() {
                return Err(Error::InvalidState("no pending commit".into()));
            }
            let provider = Provider::new(crypto, conn);
            group.merge_pending_commit(&provider).map_err(|e| Error::Internal(format!("merge: {e}")))?;
            conn.execute("DELETE FROM skytale_kv WHERE key = ?1", [pending_kps_key(name)])?;
            Ok(group.epoch().as_u64())
        })
    }

    /// Discards this agent's pending commit (after the delivery service rejected it).
    pub fn clear_pending_commit(&self, name: &str) -> Result<()> {
        let mut inner = self.lock()?;
        inner.transaction(Some(name), |inner| {
            let conn = inner.store.conn();
            let group = inner.groups.get_mut(name).ok_or_else(|| Error::ChannelNotFound(name.to_string()))?;
            let storage = crate::provider::Storage::new(conn);
            group.clear_pending_commit(&storage).map_err(|e| Error::Storage(format!("clear pending commit: {e}")))?;
            let pending: Option<Vec<u8>> = conn
                .query_row("SELECT value FROM skytale_kv WHERE key = ?1", [pending_kps_key(name)], |r| r.get(0))
                .optional()?;
            if let Some(json) = pending {
                let refs: Vec<String> = serde_json::from_slice(&json).unwrap_or_default();
                for r in refs {
                    if let Ok(bytes) = hex::decode(r) {
                        conn.execute("DELETE FROM skytale_used_key_packages WHERE ref = ?1", [bytes])?;
                    }
                }
                conn.execute("DELETE FROM skytale_kv WHERE key = ?1", [pending_kps_key(name)])?;
            }
            Ok(())
        })
    }

    /// Whether the channel has a commit of this agent waiting to be merged or discarded.
    pub fn has_pending_commit(&self, name: &str) -> Result<bool> {
        let mut inner = self.lock()?;
        Ok(inner.group(name)?.pending_commit().is_some())
    }

    /// Encrypts an application message for the channel's current members.
    pub fn encrypt(&self, name: &str, plaintext: &[u8]) -> Result<Vec<u8>> {
        let mut inner = self.lock()?;
        inner.transaction(Some(name), |inner| {
            let (crypto, conn, signer) = (&inner.crypto, inner.store.conn(), &inner.signer);
            let group = inner.groups.get_mut(name).ok_or_else(|| Error::ChannelNotFound(name.to_string()))?;
            ensure_ready(name, group)?;
            let provider = Provider::new(crypto, conn);
            let padded = crate::envelope::pad(plaintext)?;
            fork::tag_outgoing(conn, name, group)?;
            let msg =
                group.create_message(&provider, signer, &padded).map_err(|e| me::create_message_error(name, e))?;
            serialize(&msg)
        })
    }

    /// Processes one incoming MLS message for the channel: decrypts application messages,
    /// merges commits (so every member follows every epoch) and stores proposals.
    ///
    /// Errors: `SKYTALE_DECRYPT_FAILED`, `SKYTALE_REPLAY`, `SKYTALE_WRONG_EPOCH`,
    /// `SKYTALE_NOT_A_MEMBER`, `SKYTALE_INVALID_MESSAGE`. On error nothing is changed.
    pub fn process_incoming(&self, name: &str, wire: &[u8]) -> Result<Incoming> {
        self.process_incoming_inner(name, wire, None)
    }

    /// Processes an incoming message delivered by the relay under sequence number `seq`, and in
    /// the same transaction records `seq` as the channel's last processed one and, for
    /// application messages and commits, stores the event in the channel's inbox (see
    /// [`Agent::inbox`]), and the relay epoch after it. A crash therefore neither loses nor
    /// repeats an item. A commit whose new members are not certified is refused with
    /// `SKYTALE_CREDENTIAL_INVALID` and changes nothing; record it with [`Agent::skip_delivered`].
    pub fn process_delivered(&self, name: &str, wire: &[u8], delivery: Delivery) -> Result<Incoming> {
        self.process_incoming_inner(name, wire, Some(delivery))
    }

    fn process_incoming_inner(&self, name: &str, wire: &[u8], delivery: Option<Delivery>) -> Result<Incoming> {
        let protocol = parse_protocol(wire)?;
        let mut inner = self.lock()?;
        inner.transaction(Some(name), |inner| match delivery {
            Some(d) => fork::process_delivered_one(inner, name, protocol, wire, d),
            None => process_one(inner, name, protocol, None),
        })
    }
}

/// Parses bytes as a channel (protocol) message.
fn parse_protocol(wire: &[u8]) -> Result<ProtocolMessage> {
    parse_message(wire)?
        .try_into_protocol_message()
        .map_err(|_| Error::InvalidMessage("not a channel message (welcome or key package?)".into()))
}

/// Processes one protocol message inside the caller's transaction (the channel's group loaded).
fn process_one(
    inner: &mut Inner,
    name: &str,
    protocol: ProtocolMessage,
    delivery: Option<Delivery>,
) -> Result<Incoming> {
    let (crypto, conn) = (&inner.crypto, inner.store.conn());
    let group = inner.groups.get_mut(name).ok_or_else(|| Error::ChannelNotFound(name.to_string()))?;
    if protocol.group_id().as_slice() != name.as_bytes() {
        return Err(Error::InvalidMessage("the message belongs to another channel".into()));
    }
    if !group.is_active() {
        return Err(Error::NotAMember(name.to_string()));
    }
    let current_epoch = group.epoch().as_u64();
    let message_epoch = protocol.epoch().as_u64();
    if message_epoch > current_epoch {
        return Err(Error::WrongEpoch { message_epoch, current_epoch });
    }
    if message_epoch < current_epoch && protocol.content_type() != ContentType::Application {
        // A handshake message of a past epoch: a replayed or superseded commit/proposal.
        return Err(Error::WrongEpoch { message_epoch, current_epoch });
    }
    fork::remember_epoch(conn, name, group)?;
    let clear_aad = fork::clear_aad(&protocol);
    let provider = Provider::new(crypto, conn);
    let processed = group.process_message(&provider, protocol).map_err(|e| {
        fork::evidence(
            conn,
            name,
            group,
            clear_aad.as_deref(),
            me::process_error(name, message_epoch, current_epoch, e),
        )
    })?;
    fork::check_processed(conn, name, group, &processed)?;
    let verifier = LeafVerifier::new(inner.anchors.as_ref(), &inner.revoked, channel_org(name)?);
    let at = delivery.map(|d| d.at_secs).unwrap_or(now() as u64);
    // Whose leave requests wait (a commit that does not cover them voids them).
    let leaving = match processed.content() {
        ProcessedMessageContent::StagedCommitMessage(_) => policy::leave_request_identities(group),
        _ => Vec::new(),
    };
    let event = apply_processed(name, &provider, group, processed, &verifier, at)?;
    if let Some(d) = delivery {
        record_delivery(conn, name, d, &event)?;
        policy::note_voided_leaves(conn, name, &leaving, &event)?;
    }
    Ok(event)
}

fn record_delivery(conn: &rusqlite::Connection, name: &str, d: Delivery, event: &Incoming) -> Result<()> {
    let seq = d.seq;
    record_position(conn, name, d)?;
    let row = match event {
        Incoming::Message { sender, data, epoch } => Some(("message", sender.clone(), *epoch, data.clone())),
        Incoming::Commit { sender, epoch, added, removed, self_removed, external, .. } => {
            let summary = serde_json::to_vec(&serde_json::json!({"added": added, "removed": removed, "selfRemoved": self_removed, "external": external}))
                .map_err(|e| Error::Internal(e.to_string()))?;
            Some(("commit", sender.clone(), *epoch, summary))
        }
        Incoming::Proposal { .. } => None,
    };
    policy::owe_external_join_use(conn, name, event)?;
    if let Some((kind, sender, epoch, data)) = row {
        conn.prepare_cached("INSERT OR IGNORE INTO skytale_inbox (channel, seq, kind, sender, epoch, data) VALUES (?1, ?2, ?3, ?4, ?5, ?6)")?.execute(params![name, seq as i64, kind, sender, epoch as i64, data])?;
    }
    Ok(())
}

/// Records a delivered item's position: last seq and relay epoch (neither ever goes back).
fn record_position(conn: &rusqlite::Connection, name: &str, d: Delivery) -> Result<()> {
    conn.prepare_cached("UPDATE skytale_channels SET last_seq = MAX(last_seq, ?2), relay_epoch = MAX(COALESCE(relay_epoch, 0), ?3) WHERE name = ?1")?.execute(params![name, d.seq as i64, d.relay_epoch as i64])?;
    Ok(())
}

fn apply_processed(
    name: &str,
    provider: &Provider<'_>,
    group: &mut MlsGroup,
    processed: ProcessedMessage,
    verifier: &LeafVerifier<'_>,
    at: u64,
) -> Result<Incoming> {
    {
        {
            let sender = credential_identity(processed.credential());
            let epoch = processed.epoch().as_u64();
            let sender_kind = processed.sender().clone();
            let authenticated_data = processed.aad().to_vec();
            match processed.into_content() {
                ProcessedMessageContent::ApplicationMessage(app) => {
                    Ok(Incoming::Message { sender, data: crate::envelope::unpad(app.into_bytes())?, epoch })
                }
                ProcessedMessageContent::ProposalMessage(proposal) => {
                    let kind = match proposal.proposal() {
                        Proposal::Add(_) => "add",
                        Proposal::Remove(_) => "remove",
                        Proposal::Update(_) => "update",
                        _ => "other",
                    };
                    // A stored proposal stops every member from sending until a commit covers
                    // it (MLS), and members commit only leave requests (a member removing
                    // itself). Anything else a member proposes is refused, not stored: one
                    // stray proposal would otherwise silence the channel.
                    let leave_request = matches!(
                        (proposal.proposal(), proposal.sender()),
                        (Proposal::Remove(r), Sender::Member(s)) if *s == r.removed()
                    );
                    if !leave_request {
                        return Err(Error::PolicyDenied(format!(
                            "{sender} proposed {kind}: members only take leave requests as proposals"
                        )));
                    }
                    group
                        .store_pending_proposal(provider.storage(), *proposal)
                        .map_err(|e| Error::Storage(format!("store proposal: {e}")))?;
                    Ok(Incoming::Proposal { sender, epoch, proposal: kind.to_string() })
                }
                ProcessedMessageContent::StagedCommitMessage(staged) => {
                    let external = matches!(sender_kind, Sender::NewMemberCommit);
                    verifier.check_commit(group, &staged, &sender, external, at)?;
                    // The channel policy: every member judges alike (see crate::policy).
                    check_staged(name, group, &staged, &sender, external, &authenticated_data, at)?;
                    // A member resyncing (issue #10) replaces its own old leaf: not a removal.
                    let resync = fork::check_external_removes(group, &staged, &sender, external)?;
                    let added = staged
                        .add_proposals()
                        .map(|p| credential_identity(p.add_proposal().key_package().leaf_node().credential()))
                        .collect();
                    let removed = staged
                        .remove_proposals()
                        .filter_map(|p| group.member(p.remove_proposal().removed()).map(credential_identity))
                        .filter(|id| !(resync && *id == sender))
                        .collect();
                    let self_removed = staged.self_removed();
                    group.merge_staged_commit(provider, *staged).map_err(|e| Error::Internal(format!("merge: {e}")))?;
                    Ok(Incoming::Commit {
                        sender,
                        epoch: group.epoch().as_u64(),
                        added,
                        removed,
                        self_removed,
                        external,
                        resync,
                        authenticated_data,
                    })
                }
                ProcessedMessageContent::OwnPendingCommit => {
                    group.merge_pending_commit(provider).map_err(|e| Error::Internal(format!("merge: {e}")))?;
                    Ok(Incoming::Commit {
                        sender,
                        epoch: group.epoch().as_u64(),
                        added: vec![],
                        removed: vec![],
                        self_removed: false,
                        external: false,
                        resync: false,
                        authenticated_data,
                    })
                }
                ProcessedMessageContent::OwnPrivateMessage => {
                    Err(Error::InvalidMessage("the message was sent by this agent".into()))
                }
                _ => Err(Error::InvalidMessage("unsupported message content".into())),
            }
        }
    }
}

/// One item of a channel's inbox: a delivered message or commit not yet taken by the app.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InboxItem {
    /// Relay sequence number.
    pub seq: u64,
    /// `message` or `commit`.
    pub kind: String,
    /// Sender identity.
    pub sender: String,
    /// Epoch (message: sent in; commit: the new epoch).
    pub epoch: u64,
    /// Plaintext (message) or a JSON summary `{added, removed, selfRemoved}` (commit).
    pub data: Vec<u8>,
}

impl Agent {
    /// The oldest `limit` items of a channel's inbox with `seq > after_seq` (delivered, not yet
    /// acknowledged by the app with [`Agent::inbox_ack`]).
    pub fn inbox(&self, name: &str, after_seq: u64, limit: u32) -> Result<Vec<InboxItem>> {
        let inner = self.lock()?;
        let mut stmt = inner.store.conn().prepare_cached(
            "SELECT seq, kind, sender, epoch, data FROM skytale_inbox WHERE channel = ?1 AND seq > ?3 ORDER BY seq LIMIT ?2",
        )?;
        let items = stmt
            .query_map(params![name, limit as i64, after_seq as i64], |r| {
                Ok(InboxItem {
                    seq: r.get::<_, i64>(0)? as u64,
                    kind: r.get(1)?,
                    sender: r.get(2)?,
                    epoch: r.get::<_, i64>(3)? as u64,
                    data: r.get(4)?,
                })
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(items)
    }

    /// Removes one inbox item (e.g. a control message the driver consumed itself).
    pub fn inbox_remove(&self, name: &str, seq: u64) -> Result<()> {
        let inner = self.lock()?;
        inner
            .store
            .conn()
            .prepare_cached("DELETE FROM skytale_inbox WHERE channel = ?1 AND seq = ?2")?
            .execute(params![name, seq as i64])?;
        Ok(())
    }

    /// Removes inbox items of a channel up to and including `seq` (the app has taken them).
    /// Written at once; [`Agent::inbox_ack_later`] notes one without writing.
    pub fn inbox_ack(&self, name: &str, seq: u64) -> Result<()> {
        let inner = self.lock()?;
        acks::delete_acked(inner.store.conn(), name, seq)?;
        drop(inner);
        self.acks_written(name, seq);
        Ok(())
    }

    /// The last relay sequence number processed for a channel (0 when none).
    pub fn last_seq(&self, name: &str) -> Result<u64> {
        let inner = self.lock()?;
        let seq: Option<i64> = inner
            .store
            .conn()
            .prepare_cached("SELECT last_seq FROM skytale_channels WHERE name = ?1")?
            .query_row([name], |r| r.get(0))
            .optional()?;
        seq.map(|s| s as u64).ok_or_else(|| Error::ChannelNotFound(name.to_string()))
    }

    /// Records the last relay sequence number processed for a channel (it never goes back).
    pub fn set_last_seq(&self, name: &str, seq: u64) -> Result<()> {
        let inner = self.lock()?;
        let n = inner
            .store
            .conn()
            .prepare_cached("UPDATE skytale_channels SET last_seq = MAX(last_seq, ?2) WHERE name = ?1")?
            .execute(params![name, seq as i64])?;
        if n == 0 {
            return Err(Error::ChannelNotFound(name.to_string()));
        }
        Ok(())
    }

    /// Deletes a channel's local state (after leaving or being removed).
    pub fn forget_channel(&self, name: &str) -> Result<()> {
        let mut inner = self.lock()?;
        if !inner.channel_exists(name)? {
            return Err(Error::ChannelNotFound(name.to_string()));
        }
        inner.transaction(Some(name), |inner| inner.delete_channel_state(name))?;
        drop(inner);
        // Its inbox went with it: a noted acknowledgement has nothing left to delete.
        self.take_pending_ack(name);
        Ok(())
    }

    /// Reads an opaque value stored with this agent (for drivers: cursors, queues).
    pub fn kv_get(&self, key: &str) -> Result<Option<Vec<u8>>> {
        self.lock()?.store.kv_get(key)
    }

    /// Stores an opaque value with this agent.
    pub fn kv_put(&self, key: &str, value: &[u8]) -> Result<()> {
        self.lock()?.store.kv_put(key, value)
    }

    /// All stored values whose key starts with `prefix`, ordered by key.
    pub fn kv_list(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>> {
        let inner = self.lock()?;
        let mut stmt = inner
            .store
            .conn()
            .prepare_cached("SELECT key, value FROM skytale_kv WHERE substr(key, 1, length(?1)) = ?1 ORDER BY key")?;
        let rows = stmt
            .query_map([prefix], |r| Ok((r.get::<_, String>(0)?, r.get::<_, Vec<u8>>(1)?)))?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(rows)
    }

    /// Deletes a stored value.
    pub fn kv_delete(&self, key: &str) -> Result<()> {
        self.lock()?.store.conn().execute("DELETE FROM skytale_kv WHERE key = ?1", [key])?;
        Ok(())
    }
}

fn pending_kps_key(name: &str) -> String {
    format!("pending-key-packages/{name}")
}

fn ensure_ready(name: &str, group: &MlsGroup) -> Result<()> {
    if !group.is_active() {
        return Err(Error::NotAMember(name.to_string()));
    }
    if group.pending_commit().is_some() {
        return Err(Error::InvalidState("a commit of this agent is pending; merge or clear it first".into()));
    }
    Ok(())
}

fn finish_commit(provider: &Provider<'_>, group: &mut MlsGroup, mode: CommitMode) -> Result<()> {
    if mode == CommitMode::Merge {
        group.merge_pending_commit(provider).map_err(|e| Error::Internal(format!("merge: {e}")))?;
    }
    Ok(())
}

fn finish_tx<T>(conn: &rusqlite::Connection, res: Result<T>) -> Result<T> {
    match res {
        Ok(v) => {
            conn.prepare_cached("COMMIT")?.execute([])?;
            Ok(v)
        }
        Err(e) => {
            let _ = conn.execute_batch("ROLLBACK");
            Err(e)
        }
    }
}

impl Inner {
    fn channel_exists(&self, name: &str) -> Result<bool> {
        let found: Option<i64> = self
            .store
            .conn()
            .prepare_cached("SELECT 1 FROM skytale_channels WHERE name = ?1")?
            .query_row([name], |r| r.get(0))
            .optional()?;
        Ok(found.is_some())
    }

    /// The channel's group, loaded from the keystore on first use.
    fn group(&mut self, name: &str) -> Result<&mut MlsGroup> {
        if !self.groups.contains_key(name) {
            validate_channel_name(name)?;
            if !self.channel_exists(name)? {
                return Err(Error::ChannelNotFound(name.to_string()));
            }
            let storage = crate::provider::Storage::new(self.store.conn());
            let group = MlsGroup::load(&storage, &GroupId::from_slice(name.as_bytes()))
                .map_err(|e| Error::Storage(format!("load channel: {e}")))?
                .ok_or_else(|| Error::KeystoreCorrupt(format!("channel {name} has no MLS state")))?;
            self.groups.insert(name.to_string(), group);
        }
        self.groups.get_mut(name).ok_or_else(|| Error::ChannelNotFound(name.to_string()))
    }

    fn delete_channel_state(&mut self, name: &str) -> Result<()> {
        let storage = crate::provider::Storage::new(self.store.conn());
        if let Some(mut group) = MlsGroup::load(&storage, &GroupId::from_slice(name.as_bytes()))
            .map_err(|e| Error::Storage(format!("load channel: {e}")))?
        {
            group.delete(&storage).map_err(|e| Error::Storage(format!("delete channel: {e}")))?;
        }
        self.groups.remove(name);
        self.store.conn().execute("DELETE FROM skytale_channels WHERE name = ?1", [name])?;
        self.store.conn().execute("DELETE FROM skytale_inbox WHERE channel = ?1", [name])?;
        Ok(())
    }

    /// Runs `f` in one transaction. On error the transaction is rolled back and the cached
    /// group of `channel` is dropped, so the next use reloads the stored (unchanged) state.
    fn transaction<T>(&mut self, channel: Option<&str>, f: impl FnOnce(&mut Inner) -> Result<T>) -> Result<T> {
        if let Some(name) = channel {
            self.group(name)?;
        }
        self.store.conn().prepare_cached("BEGIN IMMEDIATE")?.execute([])?;
        let res = f(self);
        if res.is_err() {
            if let Some(name) = channel {
                self.groups.remove(name);
            }
        }
        let res = finish_tx(self.store.conn(), res);
        if res.is_err() {
            if let Some(name) = channel {
                self.groups.remove(name);
            }
        }
        res
    }
}
