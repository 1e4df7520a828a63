//! # skytale-core
//!
//! The sans-IO heart of Skytale: an [`Agent`] owns one identity (an Ed25519 MLS credential),
//! an encrypted keystore (SQLCipher) and its channels, each an MLS group (RFC 9420,
//! `MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519`, ratchet tree carried in the Welcome).
//! No sockets, no runtime: callers move the bytes.
//!
//! ```no_run
//! use skytale_core::{Agent, AgentOptions, CommitMode, KeystoreSecret, SecretKey32};
//! # fn main() -> skytale_core::Result<()> {
//! let key = KeystoreSecret::Key(SecretKey32::from_bytes([7; 32]));
//! let alice = Agent::open(AgentOptions { data_dir: "/tmp/alice".as_ref(), identity: "alice", secret: &key })?;
//! let bob = Agent::open(AgentOptions { data_dir: "/tmp/bob".as_ref(), identity: "bob", secret: &key })?;
//! alice.create_channel("acme/research/summarizer")?;
//! let kp = bob.generate_key_packages(1)?;
//! let out = alice.add_members("acme/research/summarizer", &kp, CommitMode::Merge)?;
//! let name = bob.join_channel(out.welcome.as_deref().unwrap_or_default())?;
//! let wire = alice.encrypt(&name, b"hi")?;
//! let event = bob.process_incoming(&name, &wire)?;
//! # let _ = event; Ok(()) }
//! ```

mod agent;
pub mod control;
mod credential;
mod crypto;
pub mod envelope;
mod error;
mod events;
pub mod invite;
mod keystore;
mod mls_errors;
mod names;
pub mod policy;
mod provider;
mod secret;
mod signer;
mod wal_sync;

pub use agent::{
    commit_hash, failure_kind, resync_item_kind, Agent, AgentOptions, BatchError, Delivery, Failure, InboxItem,
    ResyncItem, ResyncRequest, AUTH_LEN, CIPHERSUITE, DEFAULT_PAST_EPOCHS,
};
pub use credential::{
    credential_identity_unverified, fingerprint, rotate_anchors, verify_credential, Expected, IssuerKey, RevokedAgent,
    TrustAnchors, VerifiedCredential, CREDENTIAL_AUD, CREDENTIAL_TYP,
};
pub use error::{Error, Result};
pub use events::{CommitMode, CommitOutput, Incoming};
pub use keystore::{Keystore, ARGON2_M_COST_KIB, ARGON2_P_COST, ARGON2_T_COST};
pub use names::{channel_org, validate_channel_name, validate_identity};
pub use secret::{KeystoreSecret, Passphrase, SecretKey32};
pub use zeroize::Zeroizing;
