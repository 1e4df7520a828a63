//! Every stable error code of Skytale (`SKYTALE_…`) — of the core, the client, the relay, the
//! API server and the JS layer — in one enum, with the category that picks its JavaScript error
//! class. `tools/gen-codes.mjs` generates `lib/codes.js` and the TypeScript union
//! `SkytaleErrorCode` from this file, and `npm test` fails when any `"SKYTALE_…"` string in the
//! sources is missing here.

/// What kind of failure a code is; picks the JS class (`AuthError`, `KeystoreError`, …).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Category {
    /// API keys, tokens, agent registration and credentials, org boundaries → `AuthError`.
    Auth,
    /// The agent's encrypted local store → `KeystoreError`.
    Keystore,
    /// Network, relay and API server availability → `TransportError`.
    Transport,
    /// Channel, membership, invite and ordering state → `ChannelError`.
    Channel,
    /// MLS messages and key packages → `MlsError`.
    Mls,
    /// Bad arguments → `ValidationError`.
    Validation,
    /// An object used in the wrong state (closed, pending) → `StateError`.
    State,
    /// A bug → `SkytaleError`.
    Internal,
}

macro_rules! codes {
    ($($(#[doc = $doc:literal])* $variant:ident = $code:literal : $cat:ident,)*) => {
        /// Every stable error code.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum Code {
            $($(#[doc = $doc])* $variant,)*
        }

        impl Code {
            /// All codes.
            pub const ALL: &'static [Code] = &[$(Code::$variant,)*];

            /// The stable string (`SKYTALE_…`).
            pub fn as_str(self) -> &'static str {
                match self { $(Code::$variant => $code,)* }
            }

            /// The category (which JS error class).
            pub fn category(self) -> Category {
                match self { $(Code::$variant => Category::$cat,)* }
            }
        }
    };
}

codes! {
    /// Relay: a request before Auth
    AuthRequired = "SKYTALE_AUTH_REQUIRED" : Auth,
    /// Relay: bad token (signature, key, aud/iss, identity)
    AuthInvalid = "SKYTALE_AUTH_INVALID" : Auth,
    /// Relay: the token expired
    AuthExpired = "SKYTALE_AUTH_EXPIRED" : Auth,
    /// Relay: no Auth frame in time
    AuthTimeout = "SKYTALE_AUTH_TIMEOUT" : Auth,
    /// API server: unknown API key
    AuthKeyInvalid = "SKYTALE_AUTH_KEY_INVALID" : Auth,
    /// API server: revoked API key
    AuthKeyRevoked = "SKYTALE_AUTH_KEY_REVOKED" : Auth,
    /// Client: the API server rate-limited the token request
    AuthRateLimited = "SKYTALE_AUTH_RATE_LIMITED" : Auth,
    /// API server: the key may not act for this identity
    AuthIdentityForbidden = "SKYTALE_AUTH_IDENTITY_FORBIDDEN" : Auth,
    /// API server: the key's role does not allow the call
    Forbidden = "SKYTALE_FORBIDDEN" : Auth,
    /// Relay: a channel of another org
    ForbiddenChannel = "SKYTALE_FORBIDDEN_CHANNEL" : Auth,
    /// A token or key scope does not cover the call
    ScopeForbidden = "SKYTALE_SCOPE_FORBIDDEN" : Auth,
    /// API server: the agent is registered with another key
    AgentKeyMismatch = "SKYTALE_AGENT_KEY_MISMATCH" : Auth,
    /// API server: the agent was revoked
    AgentRevoked = "SKYTALE_AGENT_REVOKED" : Auth,
    /// API server: the agent has no credential yet
    AgentNotRegistered = "SKYTALE_AGENT_NOT_REGISTERED" : Auth,
    /// A member's agent credential does not verify
    CredentialInvalid = "SKYTALE_CREDENTIAL_INVALID" : Auth,
    /// `SKYTALE_KEYSTORE_WRONG_KEY`.
    KeystoreWrongKey = "SKYTALE_KEYSTORE_WRONG_KEY" : Keystore,
    /// `SKYTALE_KEYSTORE_CORRUPT`.
    KeystoreCorrupt = "SKYTALE_KEYSTORE_CORRUPT" : Keystore,
    /// Open in another process
    KeystoreLocked = "SKYTALE_KEYSTORE_LOCKED" : Keystore,
    /// The keystore belongs to another identity
    IdentityMismatch = "SKYTALE_IDENTITY_MISMATCH" : Keystore,
    /// A storage (SQLite) failure
    Storage = "SKYTALE_STORAGE" : Keystore,
    /// `SKYTALE_TRANSPORT`.
    Transport = "SKYTALE_TRANSPORT" : Transport,
    /// `SKYTALE_CONNECTION_CLOSED`.
    ConnectionClosed = "SKYTALE_CONNECTION_CLOSED" : Transport,
    /// `SKYTALE_TIMEOUT`.
    Timeout = "SKYTALE_TIMEOUT" : Transport,
    /// `SKYTALE_API_UNREACHABLE`.
    ApiUnreachable = "SKYTALE_API_UNREACHABLE" : Transport,
    /// The API server answered something unexpected
    ApiError = "SKYTALE_API_ERROR" : Transport,
    /// No relay address configured or published
    NoRelay = "SKYTALE_NO_RELAY" : Transport,
    /// `SKYTALE_UNEXPECTED_REPLY`.
    UnexpectedReply = "SKYTALE_UNEXPECTED_REPLY" : Transport,
    /// `SKYTALE_MALFORMED_FRAME`.
    MalformedFrame = "SKYTALE_MALFORMED_FRAME" : Transport,
    /// `SKYTALE_FRAME_TOO_LARGE`.
    FrameTooLarge = "SKYTALE_FRAME_TOO_LARGE" : Transport,
    /// `SKYTALE_UNSUPPORTED_VERSION`.
    UnsupportedVersion = "SKYTALE_UNSUPPORTED_VERSION" : Transport,
    /// `SKYTALE_RATE_LIMITED`.
    RateLimited = "SKYTALE_RATE_LIMITED" : Transport,
    /// `SKYTALE_QUOTA_EXCEEDED`.
    QuotaExceeded = "SKYTALE_QUOTA_EXCEEDED" : Transport,
    /// `SKYTALE_TOO_MANY_CONNECTIONS`.
    TooManyConnections = "SKYTALE_TOO_MANY_CONNECTIONS" : Transport,
    /// `SKYTALE_IDLE_TIMEOUT`.
    IdleTimeout = "SKYTALE_IDLE_TIMEOUT" : Transport,
    /// `SKYTALE_SLOW_CONSUMER`.
    SlowConsumer = "SKYTALE_SLOW_CONSUMER" : Transport,
    /// `SKYTALE_SHUTTING_DOWN`.
    ShuttingDown = "SKYTALE_SHUTTING_DOWN" : Transport,
    /// Relay: a Welcome recipient's queue is full
    RecipientQueueFull = "SKYTALE_RECIPIENT_QUEUE_FULL" : Transport,
    /// JS: the local dev stack (skytale dev) failed to start
    DevStack = "SKYTALE_DEV_STACK" : Transport,
    /// `SKYTALE_CHANNEL_NOT_FOUND`.
    ChannelNotFound = "SKYTALE_CHANNEL_NOT_FOUND" : Channel,
    /// `SKYTALE_CHANNEL_EXISTS`.
    ChannelExists = "SKYTALE_CHANNEL_EXISTS" : Channel,
    /// `SKYTALE_NOT_A_MEMBER`.
    NotAMember = "SKYTALE_NOT_A_MEMBER" : Channel,
    /// `SKYTALE_MEMBER_NOT_FOUND`.
    MemberNotFound = "SKYTALE_MEMBER_NOT_FOUND" : Channel,
    /// `SKYTALE_INVITE_INVALID`.
    InviteInvalid = "SKYTALE_INVITE_INVALID" : Channel,
    /// `SKYTALE_INVITE_EXPIRED`.
    InviteExpired = "SKYTALE_INVITE_EXPIRED" : Channel,
    /// `SKYTALE_INVITE_USED_UP`.
    InviteUsedUp = "SKYTALE_INVITE_USED_UP" : Channel,
    /// The invite was revoked by an admin.
    InviteRevoked = "SKYTALE_INVITE_REVOKED" : Channel,
    /// The channel's policy (roles, invite rules) does not allow the operation.
    PolicyDenied = "SKYTALE_POLICY_DENIED" : Channel,
    /// A Welcome this agent did not ask for was refused (see `acceptWelcomes`).
    WelcomeRefused = "SKYTALE_WELCOME_REFUSED" : Channel,
    /// `SKYTALE_INVITE_WRONG_CHANNEL`.
    InviteWrongChannel = "SKYTALE_INVITE_WRONG_CHANNEL" : Channel,
    /// `SKYTALE_JOIN_TIMEOUT`.
    JoinTimeout = "SKYTALE_JOIN_TIMEOUT" : Channel,
    /// `SKYTALE_WRONG_EPOCH`.
    WrongEpoch = "SKYTALE_WRONG_EPOCH" : Channel,
    /// Lost the race for an epoch too many times
    CommitContention = "SKYTALE_COMMIT_CONTENTION" : Channel,
    /// Members disagree about the epoch
    ForkDetected = "SKYTALE_FORK_DETECTED" : Channel,
    /// `SKYTALE_DECRYPT_FAILED`.
    DecryptFailed = "SKYTALE_DECRYPT_FAILED" : Mls,
    /// `SKYTALE_REPLAY`.
    Replay = "SKYTALE_REPLAY" : Mls,
    /// `SKYTALE_INVALID_MESSAGE`.
    InvalidMessage = "SKYTALE_INVALID_MESSAGE" : Mls,
    /// `SKYTALE_KEY_PACKAGE_USED`.
    KeyPackageUsed = "SKYTALE_KEY_PACKAGE_USED" : Mls,
    /// `SKYTALE_KEY_PACKAGE_NOT_FOUND`.
    KeyPackageNotFound = "SKYTALE_KEY_PACKAGE_NOT_FOUND" : Mls,
    /// --- validation: the caller passed something invalid
    KeyPackageLimit = "SKYTALE_KEY_PACKAGE_LIMIT" : Mls,
    /// `SKYTALE_INVALID_ARGUMENT`.
    InvalidArgument = "SKYTALE_INVALID_ARGUMENT" : Validation,
    /// Bridge: the request is not supported (e.g. a P2P session to an unconfigured peer)
    Unsupported = "SKYTALE_UNSUPPORTED" : Validation,
    /// `SKYTALE_INVALID_IDENTITY`.
    InvalidIdentity = "SKYTALE_INVALID_IDENTITY" : Validation,
    /// `SKYTALE_INVALID_CHANNEL_NAME`.
    InvalidChannelName = "SKYTALE_INVALID_CHANNEL_NAME" : Validation,
    /// `SKYTALE_INVALID_REQUEST`.
    InvalidRequest = "SKYTALE_INVALID_REQUEST" : Validation,
    /// A malformed relay address
    InvalidAddress = "SKYTALE_INVALID_ADDRESS" : Validation,
    /// API server: the resource does not exist
    NotFound = "SKYTALE_NOT_FOUND" : Validation,
    /// API server: it already exists
    Conflict = "SKYTALE_CONFLICT" : Validation,
    /// E.g. a closed agent
    InvalidState = "SKYTALE_INVALID_STATE" : State,
    /// --- internal: bugs and the unexpected (the base class SkytaleError)
    ClientClosed = "SKYTALE_CLIENT_CLOSED" : State,
    /// `SKYTALE_INTERNAL`.
    Internal = "SKYTALE_INTERNAL" : Internal,
    /// CLI: the command was interrupted
    Aborted = "SKYTALE_ABORTED" : Internal,
}

impl Code {
    /// Looks a code string up.
    pub fn parse(s: &str) -> Option<Code> {
        Code::ALL.iter().copied().find(|c| c.as_str() == s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_wire_code_is_listed() {
        for c in crate::ErrorCode::ALL {
            assert!(Code::parse(c.as_str()).is_some(), "{} missing from codes.rs", c.as_str());
        }
        let mut seen = std::collections::HashSet::new();
        for c in Code::ALL {
            assert!(seen.insert(c.as_str()), "{} listed twice", c.as_str());
            assert!(c.as_str().starts_with("SKYTALE_"));
        }
    }
}
