//! The client's error type: core (MLS, keystore) errors, relay errors and IO errors, each with
//! a stable code string.

use thiserror::Error;

/// Every failure of the client, with a stable [`ClientError::code`].
#[derive(Debug, Error)]
pub enum ClientError {
    /// An error of the local core (keystore, MLS); its code is the core's.
    #[error(transparent)]
    Core(#[from] skytale_core::Error),
    /// An error frame or transport failure of the relay connection.
    #[error(transparent)]
    Relay(#[from] skytale_proto::ProtoError),
    /// The API server refused the request (`SKYTALE_AUTH_KEY_INVALID`, `SKYTALE_AUTH_KEY_REVOKED`,
    /// `SKYTALE_RATE_LIMITED`, `SKYTALE_AUTH_IDENTITY_FORBIDDEN`, `SKYTALE_AGENT_KEY_MISMATCH`,
    /// `SKYTALE_AGENT_REVOKED`, `SKYTALE_AGENT_NOT_REGISTERED`, …) or could not be reached
    /// (`SKYTALE_API_UNREACHABLE`).
    #[error("{code}: {message}")]
    Api {
        /// Stable code.
        code: &'static str,
        /// Detail (never the key).
        message: String,
    },
    /// The API server's rate limit refused the request (HTTP 429, `SKYTALE_RATE_LIMITED`):
    /// nothing was done, and the same request may be made again after `retry_after` (its
    /// `Retry-After`).
    #[error("SKYTALE_RATE_LIMITED: {message} (retry after {} s)", retry_after.as_secs())]
    ApiRateLimited {
        /// Detail (never the key).
        message: String,
        /// How long the server asked to wait.
        retry_after: std::time::Duration,
    },
    /// No relay address: none configured and the API server did not hand one out.
    #[error("no relay address configured and none published by the API server")]
    NoRelay,
    /// The client was closed.
    #[error("the client is closed")]
    Closed,
    /// A commit was refused by the relay too many times in a row (contention).
    #[error("commit on {0} kept losing to concurrent commits")]
    CommitContention(String),
    /// Invalid argument.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// An invite problem (`SKYTALE_INVITE_INVALID`, `SKYTALE_INVITE_WRONG_CHANNEL`,
    /// `SKYTALE_JOIN_TIMEOUT`, …).
    #[error("{code}: {message}")]
    Invite {
        /// Stable code.
        code: &'static str,
        /// Detail (never the secret).
        message: String,
    },
    /// A wait ran out of time.
    #[error("timed out: {0}")]
    Timeout(String),
}

impl ClientError {
    /// The stable code (`SKYTALE_…`).
    pub fn code(&self) -> &str {
        match self {
            ClientError::Core(e) => e.code(),
            ClientError::Relay(e) => e.code(),
            ClientError::Api { code, .. } => code,
            ClientError::ApiRateLimited { .. } => "SKYTALE_RATE_LIMITED",
            ClientError::NoRelay => "SKYTALE_NO_RELAY",
            ClientError::Closed => "SKYTALE_CLIENT_CLOSED",
            ClientError::CommitContention(_) => "SKYTALE_COMMIT_CONTENTION",
            ClientError::InvalidArgument(_) => "SKYTALE_INVALID_ARGUMENT",
            ClientError::Timeout(_) => "SKYTALE_TIMEOUT",
            ClientError::Invite { code, .. } => code,
        }
    }

    /// How long the API server asked to wait before the same request (its rate limit).
    pub fn retry_after(&self) -> Option<std::time::Duration> {
        match self {
            ClientError::ApiRateLimited { retry_after, .. } => Some(*retry_after),
            _ => None,
        }
    }

    /// True for failures that a reconnect cannot fix (bad credentials, forbidden).
    pub fn is_permanent(&self) -> bool {
        matches!(
            self.code(),
            "SKYTALE_AUTH_KEY_INVALID"
                | "SKYTALE_AUTH_KEY_REVOKED"
                | "SKYTALE_AUTH_INVALID"
                | "SKYTALE_AUTH_EXPIRED"
                | "SKYTALE_FORBIDDEN_CHANNEL"
                | "SKYTALE_NO_RELAY"
                | "SKYTALE_INVALID_ADDRESS"
                | "SKYTALE_CLIENT_CLOSED"
                | "SKYTALE_AUTH_IDENTITY_FORBIDDEN"
                | "SKYTALE_FORBIDDEN"
                | "SKYTALE_AGENT_KEY_MISMATCH"
                | "SKYTALE_AGENT_REVOKED"
                | "SKYTALE_AGENT_NOT_REGISTERED"
                | "SKYTALE_CREDENTIAL_INVALID"
        )
    }
}

/// Result alias of the client.
pub type Result<T, E = ClientError> = std::result::Result<T, E>;
