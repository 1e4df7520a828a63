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
        tags = "10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 40, 41, 42, 43, 44, 45, 46, 47, 48, 49, 50"
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
    /// Create a channel, the caller being its first member (idempotent for a member);
    /// answered with [`ChannelInfo`].
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
    /// Register an invite for a channel of the token's org; answered with [`Done`].
    #[prost(message, tag = "24")]
    CreateInvite(CreateInvite),
    /// Replace an invite's opaque group info; answered with [`Done`].
    #[prost(message, tag = "25")]
    UpdateInvite(UpdateInvite),
    /// Revoke an invite; answered with [`Done`].
    #[prost(message, tag = "26")]
    RevokeInvite(RevokeInvite),
    /// Validate (and use) an invite and get its group info; answered with [`InviteInfo`].
    #[prost(message, tag = "27")]
    FetchInvite(FetchInvite),

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
    /// Reply to [`FetchInvite`].
    #[prost(message, tag = "50")]
    InviteInfo(InviteInfo),
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
    /// A join request from a non-member holding an invite (through [`Send`] with
    /// `invite_id`/`invite_auth`; no epoch check). Opaque to the relay.
    JoinRequest = 4,
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

/// `Send{channel, client_msg_id, kind, epoch, payload, invite_id?, invite_auth?}`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Send {
    /// `org/namespace/service` (must exist).
    #[prost(string, tag = "1")]
    pub channel: String,
    /// Client-unique id; a second send with the same (identity, channel, id) gets the first Ack.
    #[prost(string, tag = "2")]
    pub client_msg_id: String,
    /// [`Kind::Application`], [`Kind::Proposal`] or [`Kind::JoinRequest`].
    #[prost(enumeration = "Kind", tag = "3")]
    pub kind: i32,
    /// MLS epoch the message was made in; must equal the channel's current epoch
    /// (ignored for [`Kind::JoinRequest`]: the relay stores the channel's current epoch).
    #[prost(uint64, tag = "4")]
    pub epoch: u64,
    /// Opaque ciphertext.
    #[prost(bytes = "vec", tag = "5")]
    pub payload: Vec<u8>,
    /// For [`Kind::JoinRequest`]: the invite id (empty otherwise).
    #[prost(string, tag = "6")]
    pub invite_id: String,
    /// For [`Kind::JoinRequest`]: the invite's relay authenticator (empty otherwise). Never logged.
    #[prost(bytes = "vec", tag = "7")]
    pub invite_auth: Vec<u8>,
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
    /// `org/namespace/service` (must exist: [`CreateChannel`] first).
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
    /// Welcome for added members (its recipients must be among `added`), stored once and queued
    /// for each recipient only if the commit is accepted.
    #[prost(message, optional, tag = "5")]
    pub welcome: Option<WelcomeOut>,
    /// Identities this commit adds to the group (the relay adds them to the channel's roster;
    /// welcome recipients must be among them). Declared by the committer, who must be a member.
    #[prost(string, repeated, tag = "6")]
    pub added: Vec<String>,
    /// Identities this commit removes from the group (the relay drops them from the roster and
    /// ends their subscriptions once the commit is archived).
    #[prost(string, repeated, tag = "7")]
    pub removed: Vec<String>,
    /// For an external commit by a non-member: the invite it joins with (the committer must
    /// have used it through [`FetchInvite`] or a join request, and it must still be valid).
    /// Empty for commits by members.
    #[prost(string, tag = "8")]
    pub invite_id: String,
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
    /// The relay epoch (commit slot count) after the commit that added the recipient; 0 when
    /// unknown (the commit was pruned from the archive).
    #[prost(uint64, tag = "6")]
    pub commit_epoch: u64,
}

/// `AckWelcome{welcome_id}`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct AckWelcome {
    /// Id from [`Welcome::welcome_id`].
    #[prost(uint64, tag = "1")]
    pub welcome_id: u64,
}

/// `CreateInvite{channel, invite_id, invite_auth, max_uses, expires_at, group_info}`: registers
/// an invite for an existing channel of the token's org.
#[derive(Clone, PartialEq, prost::Message)]
pub struct CreateInvite {
    /// `org/namespace/service` (must exist, same org as the token).
    #[prost(string, tag = "1")]
    pub channel: String,
    /// Invite id: 1..=64 chars of `[A-Za-z0-9_-]`, unique on the relay.
    #[prost(string, tag = "2")]
    pub invite_id: String,
    /// Authenticator the joiner must present (compared in constant time). Never logged.
    #[prost(bytes = "vec", tag = "3")]
    pub invite_auth: Vec<u8>,
    /// How many distinct identities may use the invite (>= 1).
    #[prost(uint32, tag = "4")]
    pub max_uses: u32,
    /// Expiry (unix seconds); must be in the future.
    #[prost(uint64, tag = "5")]
    pub expires_at: u64,
    /// Opaque group info, encrypted by the client.
    #[prost(bytes = "vec", tag = "6")]
    pub group_info: Vec<u8>,
}

/// `UpdateInvite{invite_id, group_info}`: replaces an invite's group info.
#[derive(Clone, PartialEq, prost::Message)]
pub struct UpdateInvite {
    /// Invite id.
    #[prost(string, tag = "1")]
    pub invite_id: String,
    /// New opaque group info.
    #[prost(bytes = "vec", tag = "2")]
    pub group_info: Vec<u8>,
}

/// `RevokeInvite{invite_id}`: the invite becomes invalid.
#[derive(Clone, PartialEq, prost::Message)]
pub struct RevokeInvite {
    /// Invite id.
    #[prost(string, tag = "1")]
    pub invite_id: String,
}

/// `FetchInvite{channel, invite_id, invite_auth}`: validates and uses an invite (like a join
/// request) and returns its group info.
#[derive(Clone, PartialEq, prost::Message)]
pub struct FetchInvite {
    /// Channel the invite is for.
    #[prost(string, tag = "1")]
    pub channel: String,
    /// Invite id.
    #[prost(string, tag = "2")]
    pub invite_id: String,
    /// The invite's authenticator. Never logged.
    #[prost(bytes = "vec", tag = "3")]
    pub invite_auth: Vec<u8>,
}

/// Reply to [`FetchInvite`].
#[derive(Clone, PartialEq, prost::Message)]
pub struct InviteInfo {
    /// Channel.
    #[prost(string, tag = "1")]
    pub channel: String,
    /// Invite id.
    #[prost(string, tag = "2")]
    pub invite_id: String,
    /// Opaque group info (as last stored by `CreateInvite`/`UpdateInvite`).
    #[prost(bytes = "vec", tag = "3")]
    pub group_info: Vec<u8>,
    /// Expiry (unix seconds).
    #[prost(uint64, tag = "4")]
    pub expires_at: u64,
    /// Maximum number of distinct identities.
    #[prost(uint32, tag = "5")]
    pub max_uses: u32,
    /// Distinct identities that used the invite so far (including the caller).
    #[prost(uint32, tag = "6")]
    pub uses: u32,
    /// The channel's current epoch.
    #[prost(uint64, tag = "7")]
    pub epoch: u64,
    /// The channel's last sequence number.
    #[prost(uint64, tag = "8")]
    pub last_seq: u64,
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
            Body::CreateInvite(_) => "create_invite",
            Body::UpdateInvite(_) => "update_invite",
            Body::RevokeInvite(_) => "revoke_invite",
            Body::FetchInvite(_) => "fetch_invite",
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
            Body::InviteInfo(_) => "invite_info",
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
                | Body::CreateInvite(_)
                | Body::UpdateInvite(_)
                | Body::RevokeInvite(_)
                | Body::FetchInvite(_)
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
        Frame { version: crate::PROTOCOL_VERSION, request_id, body: Some(body) }
    }
}
