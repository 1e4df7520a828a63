//! Protobuf frame definitions (hand-written `prost` messages, no `protoc` needed).
//!
//! Every frame on the wire is one [`Frame`] envelope: `version`, `request_id` and exactly one
//! [`Body`]. Field tags are stable; new fields get new tags, removed tags are never reused.
//! See the crate docs for who sends which body and what the relay answers.

/// The envelope of every frame.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Frame {
    /// Protocol version; must equal [`crate::PROTOCOL_VERSION`].
    #[prost(uint32, tag = "1")]
    pub version: u32,
    /// Client-chosen, non-zero id of a request; echoed in every reply frame to it.
    /// Zero on frames the relay pushes on its own (live deliveries, welcomes, fatal errors).
    #[prost(uint64, tag = "2")]
    pub request_id: u64,
    /// The frame's content.
    #[prost(
        oneof = "Body",
        tags = "10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 40, 41, 42, 43, 44, 45, 46, 47, 48, 49"
    )]
    pub body: Option<Body>,
}

/// The content of a [`Frame`].
#[derive(Clone, PartialEq, prost::Oneof)]
pub enum Body {
    // ---- client -> relay (requests) ----
    /// Authenticate (must be the first frame; may be repeated to refresh the token).
    #[prost(message, tag = "10")]
    Auth(Auth),
    /// Liveness check; answered with [`Pong`].
    #[prost(message, tag = "11")]
    Ping(Ping),
    /// Create a channel (idempotent); answered with [`ChannelInfo`].
    #[prost(message, tag = "12")]
    CreateChannel(CreateChannel),
    /// Subscribe to a channel with replay; answered with [`ChannelInfo`], then deliveries.
    #[prost(message, tag = "13")]
    Subscribe(Subscribe),
    /// Stop live deliveries of a channel; answered with [`Done`].
    #[prost(message, tag = "14")]
    Unsubscribe(Unsubscribe),
    /// Send an application message or proposal; answered with [`Ack`] or [`Nack`].
    #[prost(message, tag = "15")]
    Send(Send),
    /// Send a commit (optionally with a welcome); answered with [`Ack`] or [`Nack`].
    #[prost(message, tag = "16")]
    Commit(Commit),
    /// Catch up on archived items; answered with [`Deliver`] frames, then [`Done`].
    #[prost(message, tag = "17")]
    Fetch(Fetch),
    /// Publish key packages for the authenticated identity; answered with [`Done`].
    #[prost(message, tag = "18")]
    PublishKeyPackages(PublishKeyPackages),
    /// Claim (and remove) one key package of an identity; answered with [`KeyPackage`].
    #[prost(message, tag = "19")]
    ClaimKeyPackage(ClaimKeyPackage),
    /// Ask for queued welcomes; answered with [`Welcome`] frames, then [`Done`].
    #[prost(message, tag = "20")]
    FetchWelcomes(FetchWelcomes),
    /// Acknowledge (and delete) a delivered welcome; answered with [`Done`].
    #[prost(message, tag = "21")]
    AckWelcome(AckWelcome),
    /// Count the key packages the relay holds for the authenticated identity; answered with [`Done`].
    #[prost(message, tag = "22")]
    CountKeyPackages(CountKeyPackages),
    /// Ask for a channel's current epoch and last sequence number; answered with [`ChannelInfo`].
    #[prost(message, tag = "23")]
    ChannelState(ChannelState),

    // ---- relay -> client ----
    /// Successful authentication.
    #[prost(message, tag = "40")]
    AuthOk(AuthOk),
    /// Reply to [`Ping`].
    #[prost(message, tag = "41")]
    Pong(Pong),
    /// A request failed (or, with request_id 0, the connection is about to be closed).
    #[prost(message, tag = "42")]
    Error(Error),
    /// An item was archived under a sequence number.
    #[prost(message, tag = "43")]
    Ack(Ack),
    /// A send/commit was refused because its epoch is not the channel's current one.
    #[prost(message, tag = "44")]
    Nack(Nack),
    /// One archived item of a channel (live, replayed or fetched).
    #[prost(message, tag = "45")]
    Deliver(Deliver),
    /// A channel's state.
    #[prost(message, tag = "46")]
    ChannelInfo(ChannelInfo),
    /// A claimed key package.
    #[prost(message, tag = "47")]
    KeyPackage(KeyPackage),
    /// A queued welcome for the authenticated identity.
    #[prost(message, tag = "48")]
    Welcome(Welcome),
    /// Generic success / end of a multi-frame reply.
    #[prost(message, tag = "49")]
    Done(Done),
}

/// Kind of an archived channel item.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum Kind {
    /// Not set (invalid in requests).
    Unspecified = 0,
    /// An MLS application message (PrivateMessage with application content).
    Application = 1,
    /// An MLS proposal.
    Proposal = 2,
    /// An MLS commit (only through [`Commit`]).
    Commit = 3,
}

/// `Auth{jwt, identity}`: first frame of every connection.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Auth {
    /// EdDSA JWT from the API server. Never logged.
    #[prost(string, tag = "1")]
    pub jwt: String,
    /// Routing identity of this client (welcome queue, key packages, no-echo). Empty = token `sub`.
    #[prost(string, tag = "2")]
    pub identity: String,
}

/// Reply to [`Auth`].
#[derive(Clone, PartialEq, prost::Message)]
pub struct AuthOk {
    /// Token subject.
    #[prost(string, tag = "1")]
    pub sub: String,
    /// Token organisation (first component of every channel this connection may touch).
    #[prost(string, tag = "2")]
    pub org: String,
    /// Identity the relay bound to this connection.
    #[prost(string, tag = "3")]
    pub identity: String,
    /// Token expiry (unix seconds); re-send [`Auth`] with a fresh token before it.
    #[prost(uint64, tag = "4")]
    pub expires_at: u64,
    /// Largest frame (bytes, without the 4-byte prefix) the relay accepts.
    #[prost(uint32, tag = "5")]
    pub max_frame_size: u32,
    /// Relay software version.
    #[prost(string, tag = "6")]
    pub relay_version: String,
}

/// `Ping`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Ping {}

/// `Pong`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Pong {}

/// `CreateChannel{channel}`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct CreateChannel {
    /// `org/namespace/service`.
    #[prost(string, tag = "1")]
    pub channel: String,
}

/// `ChannelState{channel}`: read a channel's state without subscribing.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ChannelState {
    /// `org/namespace/service`.
    #[prost(string, tag = "1")]
    pub channel: String,
}

/// `Subscribe{channel, after_seq}`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Subscribe {
    /// `org/namespace/service`.
    #[prost(string, tag = "1")]
    pub channel: String,
    /// Replay archived items with `seq > after_seq` before live ones (0 = from the start).
    #[prost(uint64, tag = "2")]
    pub after_seq: u64,
}

/// `Unsubscribe{channel}`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Unsubscribe {
    /// `org/namespace/service`.
    #[prost(string, tag = "1")]
    pub channel: String,
}

/// `Send{channel, client_msg_id, kind, epoch, payload}`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Send {
    /// `org/namespace/service` (must exist).
    #[prost(string, tag = "1")]
    pub channel: String,
    /// Client-unique id; a second send with the same (identity, channel, id) gets the first Ack.
    #[prost(string, tag = "2")]
    pub client_msg_id: String,
    /// [`Kind::Application`] or [`Kind::Proposal`].
    #[prost(enumeration = "Kind", tag = "3")]
    pub kind: i32,
    /// MLS epoch the message was made in; must equal the channel's current epoch.
    #[prost(uint64, tag = "4")]
    pub epoch: u64,
    /// Opaque ciphertext.
    #[prost(bytes = "vec", tag = "5")]
    pub payload: Vec<u8>,
}

/// An MLS Welcome to queue for its recipients, carried by a [`Commit`].
#[derive(Clone, PartialEq, prost::Message)]
pub struct WelcomeOut {
    /// Identities (same org) that get this welcome.
    #[prost(string, repeated, tag = "1")]
    pub recipients: Vec<String>,
    /// Opaque MLS Welcome.
    #[prost(bytes = "vec", tag = "2")]
    pub payload: Vec<u8>,
}

/// `Commit{channel, client_msg_id, epoch, payload, welcome?}`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Commit {
    /// `org/namespace/service` (created if missing).
    #[prost(string, tag = "1")]
    pub channel: String,
    /// Client-unique id (dedupe, as for [`Send`]).
    #[prost(string, tag = "2")]
    pub client_msg_id: String,
    /// Epoch the commit was made in; accepted only if equal to the channel's current epoch.
    #[prost(uint64, tag = "3")]
    pub epoch: u64,
    /// Opaque MLS commit.
    #[prost(bytes = "vec", tag = "4")]
    pub payload: Vec<u8>,
    /// Welcome for added members, queued only if the commit is accepted.
    #[prost(message, optional, tag = "5")]
    pub welcome: Option<WelcomeOut>,
}

/// Reply to [`Send`]/[`Commit`]: the item is durably archived.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Ack {
    /// Channel.
    #[prost(string, tag = "1")]
    pub channel: String,
    /// Sequence number assigned to the item.
    #[prost(uint64, tag = "2")]
    pub seq: u64,
    /// The channel's epoch after this item (a commit for epoch E acks with E+1).
    #[prost(uint64, tag = "3")]
    pub epoch: u64,
    /// True if this was a duplicate `client_msg_id`: nothing new was archived.
    #[prost(bool, tag = "4")]
    pub duplicate: bool,
}

/// Reply to [`Send`]/[`Commit`] whose epoch is not current (code `SKYTALE_WRONG_EPOCH`).
#[derive(Clone, PartialEq, prost::Message)]
pub struct Nack {
    /// Channel.
    #[prost(string, tag = "1")]
    pub channel: String,
    /// The channel's current epoch.
    #[prost(uint64, tag = "2")]
    pub current_epoch: u64,
    /// The channel's last sequence number (fetch up to here, apply, retry).
    #[prost(uint64, tag = "3")]
    pub last_seq: u64,
}

/// One archived channel item.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Deliver {
    /// Channel.
    #[prost(string, tag = "1")]
    pub channel: String,
    /// Sequence number (strictly increasing per channel; gaps = your own items or expired ones).
    #[prost(uint64, tag = "2")]
    pub seq: u64,
    /// Epoch the item was made in.
    #[prost(uint64, tag = "3")]
    pub epoch: u64,
    /// Item kind.
    #[prost(enumeration = "Kind", tag = "4")]
    pub kind: i32,
    /// Identity of the sender.
    #[prost(string, tag = "5")]
    pub sender: String,
    /// Opaque ciphertext.
    #[prost(bytes = "vec", tag = "6")]
    pub payload: Vec<u8>,
    /// Archive time (unix milliseconds).
    #[prost(uint64, tag = "7")]
    pub timestamp_ms: u64,
}

/// `Fetch{channel, after_seq, limit}`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Fetch {
    /// Channel.
    #[prost(string, tag = "1")]
    pub channel: String,
    /// Return items with `seq > after_seq`.
    #[prost(uint64, tag = "2")]
    pub after_seq: u64,
    /// At most this many items (0 = relay maximum).
    #[prost(uint32, tag = "3")]
    pub limit: u32,
}

/// State of a channel (reply to [`CreateChannel`], [`Subscribe`], [`ChannelState`]).
#[derive(Clone, PartialEq, prost::Message)]
pub struct ChannelInfo {
    /// Channel.
    #[prost(string, tag = "1")]
    pub channel: String,
    /// Current epoch.
    #[prost(uint64, tag = "2")]
    pub epoch: u64,
    /// Last assigned sequence number (0 = none yet).
    #[prost(uint64, tag = "3")]
    pub last_seq: u64,
    /// True if this request created the channel.
    #[prost(bool, tag = "4")]
    pub created: bool,
}

/// `PublishKeyPackages{key_packages}` for the authenticated identity.
#[derive(Clone, PartialEq, prost::Message)]
pub struct PublishKeyPackages {
    /// Opaque serialized MLS KeyPackages; each is handed out once.
    #[prost(bytes = "vec", repeated, tag = "1")]
    pub key_packages: Vec<Vec<u8>>,
}

/// `CountKeyPackages{}`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct CountKeyPackages {}

/// `ClaimKeyPackage{identity}`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ClaimKeyPackage {
    /// Identity (same org) whose key package to claim.
    #[prost(string, tag = "1")]
    pub identity: String,
}

/// A claimed key package (removed from the relay).
#[derive(Clone, PartialEq, prost::Message)]
pub struct KeyPackage {
    /// Owner identity.
    #[prost(string, tag = "1")]
    pub identity: String,
    /// Opaque serialized MLS KeyPackage.
    #[prost(bytes = "vec", tag = "2")]
    pub key_package: Vec<u8>,
}

/// `FetchWelcomes{}`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct FetchWelcomes {}

/// A queued MLS Welcome for the authenticated identity.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Welcome {
    /// Relay id of this welcome; pass to [`AckWelcome`].
    #[prost(uint64, tag = "1")]
    pub welcome_id: u64,
    /// Channel the welcome is for.
    #[prost(string, tag = "2")]
    pub channel: String,
    /// Identity of the committer.
    #[prost(string, tag = "3")]
    pub sender: String,
    /// Opaque MLS Welcome.
    #[prost(bytes = "vec", tag = "4")]
    pub payload: Vec<u8>,
    /// Sequence number of the commit that carried it (subscribe with `after_seq` = this).
    #[prost(uint64, tag = "5")]
    pub commit_seq: u64,
}

/// `AckWelcome{welcome_id}`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct AckWelcome {
    /// Id from [`Welcome::welcome_id`].
    #[prost(uint64, tag = "1")]
    pub welcome_id: u64,
}

/// Generic success, and the end marker of multi-frame replies.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Done {
    /// Request-specific count (items fetched, welcomes sent, key packages stored/held).
    #[prost(uint64, tag = "1")]
    pub count: u64,
    /// For [`Fetch`]: the highest seq covered by this reply (resume with `after_seq` = this).
    #[prost(uint64, tag = "2")]
    pub last_seq: u64,
    /// For [`Fetch`]: true if more items are available.
    #[prost(bool, tag = "3")]
    pub more: bool,
}

/// An error, with a stable code string (see [`crate::ErrorCode`]).
#[derive(Clone, PartialEq, prost::Message)]
pub struct Error {
    /// Stable code, e.g. `SKYTALE_AUTH_EXPIRED`.
    #[prost(string, tag = "1")]
    pub code: String,
    /// Human-readable detail (never contains secrets or payloads).
    #[prost(string, tag = "2")]
    pub message: String,
    /// True if the relay closes the connection after this frame.
    #[prost(bool, tag = "3")]
    pub fatal: bool,
    /// For rate limiting: suggested wait in milliseconds.
    #[prost(uint64, tag = "4")]
    pub retry_after_ms: u64,
}

impl Body {
    /// Short name of the body type, for logs and metrics (never includes content).
    pub fn name(&self) -> &'static str {
        match self {
            Body::Auth(_) => "auth",
            Body::Ping(_) => "ping",
            Body::CreateChannel(_) => "create_channel",
            Body::Subscribe(_) => "subscribe",
            Body::Unsubscribe(_) => "unsubscribe",
            Body::Send(_) => "send",
            Body::Commit(_) => "commit",
            Body::Fetch(_) => "fetch",
            Body::PublishKeyPackages(_) => "publish_key_packages",
            Body::ClaimKeyPackage(_) => "claim_key_package",
            Body::FetchWelcomes(_) => "fetch_welcomes",
            Body::AckWelcome(_) => "ack_welcome",
            Body::CountKeyPackages(_) => "count_key_packages",
            Body::ChannelState(_) => "channel_state",
            Body::AuthOk(_) => "auth_ok",
            Body::Pong(_) => "pong",
            Body::Error(_) => "error",
            Body::Ack(_) => "ack",
            Body::Nack(_) => "nack",
            Body::Deliver(_) => "deliver",
            Body::ChannelInfo(_) => "channel_info",
            Body::KeyPackage(_) => "key_package",
            Body::Welcome(_) => "welcome",
            Body::Done(_) => "done",
        }
    }

    /// True for bodies a client may send.
    pub fn is_client_request(&self) -> bool {
        matches!(
            self,
            Body::Auth(_)
                | Body::Ping(_)
                | Body::CreateChannel(_)
                | Body::Subscribe(_)
                | Body::Unsubscribe(_)
                | Body::Send(_)
                | Body::Commit(_)
                | Body::Fetch(_)
                | Body::PublishKeyPackages(_)
                | Body::ClaimKeyPackage(_)
                | Body::FetchWelcomes(_)
                | Body::AckWelcome(_)
                | Body::CountKeyPackages(_)
                | Body::ChannelState(_)
        )
    }

    /// True for relay frames that are intermediate parts of a multi-frame reply
    /// ([`Deliver`] and [`Welcome`]); every other reply frame ends its request.
    pub fn is_intermediate(&self) -> bool {
        matches!(self, Body::Deliver(_) | Body::Welcome(_))
    }
}

impl Frame {
    /// A frame of the current protocol version.
    pub fn new(request_id: u64, body: Body) -> Self {
        Frame {
            version: crate::PROTOCOL_VERSION,
            request_id,
            body: Some(body),
        }
    }
}
