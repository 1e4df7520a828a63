//! The one error type of `skytale-core`, with a stable code string per variant.
//!
//! Codes are part of the public contract: they reach JavaScript as `err.code` and are
//! matched by callers. Messages never contain key material, plaintext or tokens.

use thiserror::Error;

/// Every failure the core can report. Each variant has a stable [`Error::code`].
#[derive(Debug, Error)]
pub enum Error {
    /// A channel name is not of the form `org/namespace/service`.
    #[error("invalid channel name: {0}")]
    InvalidChannelName(String),
    /// An identity string is empty, too long or has characters outside the allowed set.
    #[error("invalid identity: {0}")]
    InvalidIdentity(String),
    /// The keystore key (or passphrase) does not open this data directory.
    #[error("the keystore key does not open this data directory")]
    KeystoreWrongKey,
    /// The keystore exists but cannot be read (damaged or partly missing files).
    #[error("the keystore is corrupt: {0}")]
    KeystoreCorrupt(String),
    /// Another process (or another `Agent` in this one) holds this data directory.
    #[error("the keystore is in use by another process")]
    KeystoreLocked,
    /// The data directory belongs to another identity.
    #[error("this data directory belongs to identity '{stored}', not '{requested}'")]
    IdentityMismatch {
        /// The identity recorded in the keystore.
        stored: String,
        /// The identity that was asked for.
        requested: String,
    },
    /// No channel of this name in this keystore.
    #[error("channel not found: {0}")]
    ChannelNotFound(String),
    /// A channel of this name already exists in this keystore.
    #[error("channel already exists: {0}")]
    ChannelExists(String),
    /// A message could not be decrypted or authenticated.
    #[error("decryption failed: {0}")]
    DecryptFailed(String),
    /// A message belongs to another epoch than the one this member can process.
    #[error("wrong epoch: message is for epoch {message_epoch}, channel is at epoch {current_epoch}")]
    WrongEpoch {
        /// Epoch the message claims.
        message_epoch: u64,
        /// Epoch of the local channel state.
        current_epoch: u64,
    },
    /// The message was already processed.
    #[error("message already processed (replay)")]
    Replay,
    /// This agent is not (or no longer) a member of the channel.
    #[error("not a member of channel {0}")]
    NotAMember(String),
    /// The bytes are not a valid message of the expected kind.
    #[error("invalid message: {0}")]
    InvalidMessage(String),
    /// A key package was already used (consumed by a join, or already added by this agent).
    #[error("key package already used")]
    KeyPackageUsed,
    /// A member named in a request is not in the channel.
    #[error("no member named '{0}' in the channel")]
    MemberNotFound(String),
    /// The request itself is invalid (empty list, bad length, …).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// An operation needs a state the channel is not in (e.g. a pending commit exists).
    #[error("invalid channel state: {0}")]
    InvalidState(String),
    /// A member's leave request waits for its commit: MLS allows no application message in
    /// this epoch until then, and any other commit would void the request (code
    /// `SKYTALE_INVALID_STATE`; a connected client commits or waits for the leave first).
    #[error("invalid channel state: a leave request in {0} waits for its commit")]
    LeavePending(String),
    /// An agent credential is missing, forged, for another org or identity, bound to another
    /// signature key, expired or revoked; or the issuer's keys cannot be trusted.
    #[error("credential refused: {0}")]
    CredentialInvalid(String),
    /// Members disagree about the channel's history: an authenticated message or a commit
    /// shows another state of an epoch this member holds (see `agent::fork`).
    #[error("fork detected in {channel}: local epoch {local_epoch}, remote epoch {remote_epoch}: {reason}")]
    Fork {
        /// The channel.
        channel: String,
        /// This member's MLS epoch.
        local_epoch: u64,
        /// The epoch the other side claims.
        remote_epoch: u64,
        /// What was seen.
        reason: String,
    },
    /// Storage failed below MLS (disk full, I/O error).
    #[error("storage error: {0}")]
    Storage(String),
    /// An internal error in the MLS library or the core; a bug.
    #[error("internal error: {0}")]
    Internal(String),

    /// The channel's policy does not allow this (role or invite rules).
    #[error("not allowed by the channel policy: {0}")]
    PolicyDenied(String),

    /// An invite problem, with its specific code (`SKYTALE_INVITE_*`).
    #[error("{message}")]
    Invite {
        /// `SKYTALE_INVITE_INVALID`, `SKYTALE_INVITE_EXPIRED`, `SKYTALE_INVITE_USED_UP`,
        /// `SKYTALE_INVITE_REVOKED` or `SKYTALE_INVITE_WRONG_CHANNEL`.
        code: &'static str,
        /// Detail.
        message: String,
    },
}

impl Error {
    /// The stable, documented code of this error (`SKYTALE_…`).
    pub fn code(&self) -> &'static str {
        match self {
            Error::InvalidChannelName(_) => "SKYTALE_INVALID_CHANNEL_NAME",
            Error::InvalidIdentity(_) => "SKYTALE_INVALID_IDENTITY",
            Error::KeystoreWrongKey => "SKYTALE_KEYSTORE_WRONG_KEY",
            Error::KeystoreCorrupt(_) => "SKYTALE_KEYSTORE_CORRUPT",
            Error::KeystoreLocked => "SKYTALE_KEYSTORE_LOCKED",
            Error::IdentityMismatch { .. } => "SKYTALE_IDENTITY_MISMATCH",
            Error::ChannelNotFound(_) => "SKYTALE_CHANNEL_NOT_FOUND",
            Error::ChannelExists(_) => "SKYTALE_CHANNEL_EXISTS",
            Error::DecryptFailed(_) => "SKYTALE_DECRYPT_FAILED",
            Error::WrongEpoch { .. } => "SKYTALE_WRONG_EPOCH",
            Error::Replay => "SKYTALE_REPLAY",
            Error::NotAMember(_) => "SKYTALE_NOT_A_MEMBER",
            Error::InvalidMessage(_) => "SKYTALE_INVALID_MESSAGE",
            Error::KeyPackageUsed => "SKYTALE_KEY_PACKAGE_USED",
            Error::MemberNotFound(_) => "SKYTALE_MEMBER_NOT_FOUND",
            Error::InvalidArgument(_) => "SKYTALE_INVALID_ARGUMENT",
            Error::InvalidState(_) | Error::LeavePending(_) => "SKYTALE_INVALID_STATE",
            Error::CredentialInvalid(_) => "SKYTALE_CREDENTIAL_INVALID",
            Error::Fork { .. } => "SKYTALE_FORK_DETECTED",
            Error::Storage(_) => "SKYTALE_STORAGE",
            Error::Internal(_) => "SKYTALE_INTERNAL",
            Error::PolicyDenied(_) => "SKYTALE_POLICY_DENIED",
            Error::Invite { code, .. } => code,
        }
    }
}

/// Result alias of the core.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<rusqlite::Error> for Error {
    fn from(e: rusqlite::Error) -> Self {
        match e.sqlite_error_code() {
            Some(rusqlite::ErrorCode::NotADatabase) => Error::KeystoreCorrupt("not a database".into()),
            Some(rusqlite::ErrorCode::DatabaseCorrupt) => Error::KeystoreCorrupt("database corrupt".into()),
            Some(rusqlite::ErrorCode::DatabaseBusy) | Some(rusqlite::ErrorCode::DatabaseLocked) => {
                Error::KeystoreLocked
            }
            _ => Error::Storage(e.to_string()),
        }
    }
}
