//! Maps openmls errors to Skytale's stable error codes.

use openmls::framing::errors::{MessageDecryptionError, SecretTreeError};
use openmls::prelude::*;

use crate::error::Error;

fn state_error(channel: &str, e: &MlsGroupStateError) -> Error {
    match e {
        MlsGroupStateError::UseAfterEviction => Error::NotAMember(channel.to_string()),
        MlsGroupStateError::PendingCommit => Error::InvalidState("a commit is pending".into()),
        // Only leave requests are ever stored (`apply_processed`).
        MlsGroupStateError::PendingProposal => Error::LeavePending(channel.to_string()),
        other => Error::InvalidState(other.to_string()),
    }
}

/// Maps an error of `MlsGroup::process_message`.
pub(crate) fn process_error<S: std::fmt::Debug + std::fmt::Display>(
    channel: &str,
    message_epoch: u64,
    current_epoch: u64,
    e: ProcessMessageError<S>,
) -> Error {
    match e {
        ProcessMessageError::ValidationError(v) => match v {
            ValidationError::WrongEpoch | ValidationError::NoPastEpochData => {
                Error::WrongEpoch { message_epoch, current_epoch }
            }
            ValidationError::UnableToDecrypt(d) => match d {
                MessageDecryptionError::SecretTreeError(SecretTreeError::SecretReuseError)
                | MessageDecryptionError::SecretTreeError(SecretTreeError::TooDistantInThePast) => Error::Replay,
                MessageDecryptionError::SecretTreeError(SecretTreeError::TooDistantInTheFuture) => {
                    Error::DecryptFailed("message generation too far in the future".into())
                }
                other => Error::DecryptFailed(other.to_string()),
            },
            ValidationError::WrongGroupId => Error::InvalidMessage("the message belongs to another channel".into()),
            ValidationError::InvalidSignature
            | ValidationError::InvalidMembershipTag
            | ValidationError::MissingMembershipTag
            | ValidationError::UnknownMember => Error::DecryptFailed(v.to_string()),
            other => Error::InvalidMessage(other.to_string()),
        },
        ProcessMessageError::GroupStateError(s) => state_error(channel, &s),
        ProcessMessageError::InvalidCommit(StageCommitError::EpochMismatch) => {
            Error::WrongEpoch { message_epoch, current_epoch }
        }
        ProcessMessageError::InvalidCommit(c) => Error::InvalidMessage(format!("invalid commit: {c}")),
        ProcessMessageError::StorageError(s) => Error::Storage(s.to_string()),
        ProcessMessageError::LibraryError(l) => Error::Internal(l.to_string()),
        other => Error::InvalidMessage(other.to_string()),
    }
}

/// Maps an error of `StagedWelcome::new_from_welcome`.
pub(crate) fn welcome_error<S: std::fmt::Debug + std::fmt::Display>(e: WelcomeError<S>) -> Error {
    match e {
        WelcomeError::NoMatchingKeyPackage
        | WelcomeError::NoMatchingEncryptionKey
        | WelcomeError::JoinerSecretNotFound => Error::KeyPackageUsed,
        WelcomeError::StorageError(s) => Error::Storage(s.to_string()),
        WelcomeError::LibraryError(l) => Error::Internal(l.to_string()),
        other => Error::InvalidMessage(format!("welcome: {other}")),
    }
}

/// Maps an error of `MlsGroup::create_message`.
pub(crate) fn create_message_error(channel: &str, e: CreateMessageError) -> Error {
    match e {
        CreateMessageError::GroupStateError(s) => state_error(channel, &s),
        CreateMessageError::LibraryError(l) => Error::Internal(l.to_string()),
    }
}
