//! Stable error codes sent in [`crate::frames::Error`] frames, and this crate's error type.

use std::fmt;

/// Stable error codes of the wire protocol. The string form (`SKYTALE_…`) is what travels in
/// `Error.code`, in QUIC close reasons, and reaches JS as `err.code`. Never renamed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// A request other than `Auth` arrived before authentication.
    AuthRequired,
    /// The token is invalid: bad signature, unknown key, wrong `alg`/`aud`/`iss`, missing claims,
    /// or an identity that does not match the connection.
    AuthInvalid,
    /// The token has expired (at `Auth`, or during the session).
    AuthExpired,
    /// No `Auth` frame within the auth timeout.
    AuthTimeout,
    /// A frame exceeds the size cap.
    FrameTooLarge,
    /// A frame could not be decoded, or a required field is missing.
    MalformedFrame,
    /// The frame's `version` is not supported.
    UnsupportedVersion,
    /// A request field is invalid (bad channel name, identity, kind, …).
    InvalidRequest,
    /// The channel belongs to another org than the token's.
    ForbiddenChannel,
    /// The channel does not exist (for `Send`, `Fetch`, `ChannelState`).
    ChannelNotFound,
    /// Too many frames per second for this identity.
    RateLimited,
    /// The relay is at its connection limit.
    TooManyConnections,
    /// A welcome recipient's pending queue is full.
    RecipientQueueFull,
    /// Too many key packages stored for this identity.
    KeyPackageLimit,
    /// The item's epoch is not the channel's current epoch (see `Nack`).
    WrongEpoch,
    /// No key package is available for the identity.
    KeyPackageNotFound,
    /// No frame from the client within the idle timeout.
    IdleTimeout,
    /// The client does not read its deliveries fast enough; reconnect and resume.
    SlowConsumer,
    /// The relay is shutting down.
    ShuttingDown,
    /// An internal relay error (store failure …).
    Internal,
    /// The invite is unknown, revoked, for another channel, or its `invite_auth` does not match
    /// (one code for all, so nothing leaks about which).
    InviteInvalid,
    /// The invite has expired.
    InviteExpired,
    /// The invite has been used by its maximum number of distinct identities.
    InviteUsedUp,
    /// The token's scope does not allow the request (`channels:r` cannot send, commit or invite).
    ScopeForbidden,
    /// The caller is not in the channel's relay roster (only members touch a channel).
    NotAMember,
    /// `CreateChannel` of a name that another identity already created.
    ChannelExists,
    /// A per-org quota (channels, invites, key packages, archive bytes) is used up.
    QuotaExceeded,
}

impl ErrorCode {
    /// All codes, for docs and tests.
    pub const ALL: [ErrorCode; 27] = [
        ErrorCode::AuthRequired,
        ErrorCode::AuthInvalid,
        ErrorCode::AuthExpired,
        ErrorCode::AuthTimeout,
        ErrorCode::FrameTooLarge,
        ErrorCode::MalformedFrame,
        ErrorCode::UnsupportedVersion,
        ErrorCode::InvalidRequest,
        ErrorCode::ForbiddenChannel,
        ErrorCode::ChannelNotFound,
        ErrorCode::RateLimited,
        ErrorCode::TooManyConnections,
        ErrorCode::RecipientQueueFull,
        ErrorCode::KeyPackageLimit,
        ErrorCode::WrongEpoch,
        ErrorCode::KeyPackageNotFound,
        ErrorCode::IdleTimeout,
        ErrorCode::SlowConsumer,
        ErrorCode::ShuttingDown,
        ErrorCode::Internal,
        ErrorCode::InviteInvalid,
        ErrorCode::InviteExpired,
        ErrorCode::InviteUsedUp,
        ErrorCode::ScopeForbidden,
        ErrorCode::NotAMember,
        ErrorCode::ChannelExists,
        ErrorCode::QuotaExceeded,
    ];

    /// The stable code string.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::AuthRequired => "SKYTALE_AUTH_REQUIRED",
            ErrorCode::AuthInvalid => "SKYTALE_AUTH_INVALID",
            ErrorCode::AuthExpired => "SKYTALE_AUTH_EXPIRED",
            ErrorCode::AuthTimeout => "SKYTALE_AUTH_TIMEOUT",
            ErrorCode::FrameTooLarge => "SKYTALE_FRAME_TOO_LARGE",
            ErrorCode::MalformedFrame => "SKYTALE_MALFORMED_FRAME",
            ErrorCode::UnsupportedVersion => "SKYTALE_UNSUPPORTED_VERSION",
            ErrorCode::InvalidRequest => "SKYTALE_INVALID_REQUEST",
            ErrorCode::ForbiddenChannel => "SKYTALE_FORBIDDEN_CHANNEL",
            ErrorCode::ChannelNotFound => "SKYTALE_CHANNEL_NOT_FOUND",
            ErrorCode::RateLimited => "SKYTALE_RATE_LIMITED",
            ErrorCode::TooManyConnections => "SKYTALE_TOO_MANY_CONNECTIONS",
            ErrorCode::RecipientQueueFull => "SKYTALE_RECIPIENT_QUEUE_FULL",
            ErrorCode::KeyPackageLimit => "SKYTALE_KEY_PACKAGE_LIMIT",
            ErrorCode::WrongEpoch => "SKYTALE_WRONG_EPOCH",
            ErrorCode::KeyPackageNotFound => "SKYTALE_KEY_PACKAGE_NOT_FOUND",
            ErrorCode::IdleTimeout => "SKYTALE_IDLE_TIMEOUT",
            ErrorCode::SlowConsumer => "SKYTALE_SLOW_CONSUMER",
            ErrorCode::ShuttingDown => "SKYTALE_SHUTTING_DOWN",
            ErrorCode::Internal => "SKYTALE_INTERNAL",
            ErrorCode::InviteInvalid => "SKYTALE_INVITE_INVALID",
            ErrorCode::InviteExpired => "SKYTALE_INVITE_EXPIRED",
            ErrorCode::InviteUsedUp => "SKYTALE_INVITE_USED_UP",
            ErrorCode::ScopeForbidden => "SKYTALE_SCOPE_FORBIDDEN",
            ErrorCode::NotAMember => "SKYTALE_NOT_A_MEMBER",
            ErrorCode::ChannelExists => "SKYTALE_CHANNEL_EXISTS",
            ErrorCode::QuotaExceeded => "SKYTALE_QUOTA_EXCEEDED",
        }
    }

    /// Parses a code string; `None` for unknown codes (treat like [`ErrorCode::Internal`]).
    pub fn parse(s: &str) -> Option<ErrorCode> {
        ErrorCode::ALL.iter().copied().find(|c| c.as_str() == s)
    }

    /// True if the relay closes the connection after sending this code.
    pub fn is_fatal(self) -> bool {
        matches!(
            self,
            ErrorCode::AuthRequired
                | ErrorCode::AuthInvalid
                | ErrorCode::AuthExpired
                | ErrorCode::AuthTimeout
                | ErrorCode::FrameTooLarge
                | ErrorCode::MalformedFrame
                | ErrorCode::UnsupportedVersion
                | ErrorCode::TooManyConnections
                | ErrorCode::IdleTimeout
                | ErrorCode::SlowConsumer
                | ErrorCode::ShuttingDown
        )
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Errors of this crate (framing, addresses, and the [`crate::conn`] client connection).
#[derive(Debug, thiserror::Error)]
pub enum ProtoError {
    /// A frame is larger than the cap.
    #[error("frame of {size} bytes exceeds the cap of {max} bytes")]
    FrameTooLarge {
        /// Announced or encoded size.
        size: usize,
        /// The cap.
        max: usize,
    },
    /// A frame could not be decoded.
    #[error("malformed frame: {0}")]
    Malformed(String),
    /// Unsupported protocol version.
    #[error("unsupported protocol version {0}")]
    UnsupportedVersion(u32),
    /// Invalid channel name.
    #[error("invalid channel name: {0}")]
    InvalidChannel(String),
    /// Invalid identity.
    #[error("invalid identity: {0}")]
    InvalidIdentity(String),
    /// Invalid relay address (expected `iroh://<endpoint-id>@host:port`).
    #[error("invalid relay address: {0}")]
    InvalidAddress(String),
    /// Transport failure (connect, read, write).
    #[error("transport: {0}")]
    Transport(String),
    /// The connection is closed; `code` is the relay's code if it sent one.
    #[error("connection closed{}", .code.as_ref().map(|c| format!(": {c}")).unwrap_or_default())]
    Closed {
        /// The relay's error code, if known.
        code: Option<String>,
    },
    /// The relay answered with an `Error` frame.
    #[error("{code}: {message}")]
    Relay {
        /// Stable code string.
        code: String,
        /// Detail.
        message: String,
        /// Suggested wait for `SKYTALE_RATE_LIMITED`.
        retry_after_ms: u64,
    },
    /// The relay refused an item for its epoch.
    #[error("SKYTALE_WRONG_EPOCH: channel {channel} is at epoch {current_epoch}")]
    WrongEpoch {
        /// Channel.
        channel: String,
        /// Current epoch.
        current_epoch: u64,
        /// Last sequence number of the channel.
        last_seq: u64,
    },
    /// The relay answered with an unexpected frame.
    #[error("unexpected reply: {0}")]
    Unexpected(&'static str),
    /// A request timed out.
    #[error("request timed out")]
    Timeout,
}

impl ProtoError {
    /// The stable code string of this error.
    pub fn code(&self) -> &str {
        match self {
            ProtoError::FrameTooLarge { .. } => ErrorCode::FrameTooLarge.as_str(),
            ProtoError::Malformed(_) => ErrorCode::MalformedFrame.as_str(),
            ProtoError::UnsupportedVersion(_) => ErrorCode::UnsupportedVersion.as_str(),
            ProtoError::InvalidChannel(_) | ProtoError::InvalidIdentity(_) => ErrorCode::InvalidRequest.as_str(),
            ProtoError::InvalidAddress(_) => "SKYTALE_INVALID_ADDRESS",
            ProtoError::Transport(_) => "SKYTALE_TRANSPORT",
            ProtoError::Closed { code } => code.as_deref().unwrap_or("SKYTALE_CONNECTION_CLOSED"),
            ProtoError::Relay { code, .. } => code,
            ProtoError::WrongEpoch { .. } => ErrorCode::WrongEpoch.as_str(),
            ProtoError::Unexpected(_) => "SKYTALE_UNEXPECTED_REPLY",
            ProtoError::Timeout => "SKYTALE_TIMEOUT",
        }
    }
}
