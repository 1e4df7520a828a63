//! The relay's error type; each variant maps to a stable wire code.

use skytale_proto::ErrorCode;

/// Errors of the relay.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    /// Configuration could not be read or is invalid.
    #[error("config: {0}")]
    Config(String),
    /// A store (SQLite) operation failed.
    #[error("store: {0}")]
    Store(#[from] rusqlite::Error),
    /// A cluster store refused an append because its channel moved on another relay node
    /// (the store's view is current again; the channel actor decides anew and retries).
    #[error("conflict: {0}")]
    Conflict(String),
    /// The storage thread is gone (or a storage backend failed).
    #[error("storage: {0}")]
    Storage(String),
    /// Filesystem or socket I/O failed.
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    /// Transport (iroh) setup failed.
    #[error("transport: {0}")]
    Transport(String),
    /// Fetching or parsing the JWKS failed.
    #[error("jwks: {0}")]
    Jwks(String),
    /// An error to report to the client with a wire code.
    #[error("{code}: {message}")]
    Wire {
        /// Wire code.
        code: ErrorCode,
        /// Detail (never a token or a payload).
        message: String,
    },
}

impl RelayError {
    /// Builds a [`RelayError::Wire`].
    pub fn wire(code: ErrorCode, message: impl Into<String>) -> Self {
        RelayError::Wire { code, message: message.into() }
    }

    /// The wire code of this error.
    pub fn code(&self) -> ErrorCode {
        match self {
            RelayError::Wire { code, .. } => *code,
            _ => ErrorCode::Internal,
        }
    }

    /// Message safe to send to a client (internal details are not leaked).
    pub fn client_message(&self) -> String {
        match self {
            RelayError::Wire { message, .. } => message.clone(),
            _ => "internal relay error".to_string(),
        }
    }
}

impl From<skytale_proto::ProtoError> for RelayError {
    fn from(e: skytale_proto::ProtoError) -> Self {
        use skytale_proto::ProtoError as P;
        let code = match &e {
            P::FrameTooLarge { .. } => ErrorCode::FrameTooLarge,
            P::Malformed(_) => ErrorCode::MalformedFrame,
            P::UnsupportedVersion(_) => ErrorCode::UnsupportedVersion,
            P::InvalidChannel(_) | P::InvalidIdentity(_) => ErrorCode::InvalidRequest,
            _ => ErrorCode::Internal,
        };
        RelayError::wire(code, e.to_string())
    }
}

/// Result alias of the relay.
pub type Result<T, E = RelayError> = std::result::Result<T, E>;
