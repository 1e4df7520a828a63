//! # Skytale wire protocol (`skytale/1`)
//!
//! Frames exchanged between Skytale clients and the relay (the MLS delivery service), shared by
//! `skytale-client`, `skytale-relay` and the SLIM bridge. The relay is blind: every `payload` is
//! opaque MLS ciphertext; the relay only sees routing metadata (channel, sender identity, kind,
//! epoch, sequence numbers).
//!
//! ## Transport
//! - iroh QUIC, ALPN [`ALPN`] = `skytale/1`. Relay address: `iroh://<endpoint-id-hex>@host:port`
//!   ([`conn::RelayAddr`]); closed network: no n0 relays, no address lookup, direct addresses.
//! - The client opens **one bidirectional stream** per connection and sends requests on it; the
//!   relay answers on the same stream and also pushes events on it.
//! - Framing ([`codec`]): `u32` big-endian length + protobuf [`Frame`]. The relay refuses client
//!   frames larger than its cap (default [`DEFAULT_MAX_FRAME_SIZE`] = 256 KiB, announced in
//!   [`frames::AuthOk::max_frame_size`]) with `SKYTALE_FRAME_TOO_LARGE` and closes. Relay→client frames
//!   may be up to `max_frame_size + RELAY_FRAME_ALLOWANCE` (metadata around a maximal payload).
//! - Every [`Frame`] has `version` (= [`PROTOCOL_VERSION`]; others → `SKYTALE_UNSUPPORTED_VERSION`),
//!   `request_id` and one [`Body`].
//!
//! ## Requests and replies
//! Every client frame is a request with a unique non-zero `request_id`; every relay reply to it
//! echoes that id. A request gets zero or more *intermediate* frames ([`frames::Deliver`], [`frames::Welcome`])
//! and exactly one *terminal* frame (anything else). Frames with `request_id == 0` are pushes.
//! Requests are processed in order per connection.
//!
//! | client → relay | terminal reply | notes |
//! |---|---|---|
//! | `Auth{jwt, identity}` | `AuthOk` / `Error` | first frame, within the auth timeout (5 s); repeat with a fresh token before `expires_at` (same org and identity) |
//! | `Ping` | `Pong` | keeps the connection out of the idle timeout |
//! | `CreateChannel{channel}` | `ChannelInfo` | creates the channel with the caller as its first member (`created: true`); idempotent for a member; `SKYTALE_CHANNEL_EXISTS` for anyone else; `SKYTALE_QUOTA_EXCEEDED` at the org's channel quota |
//! | `ChannelState{channel}` | `ChannelInfo` | members only; `SKYTALE_CHANNEL_NOT_FOUND` if missing |
//! | `Subscribe{channel, after_seq}` | `ChannelInfo` | members only; `SKYTALE_CHANNEL_NOT_FOUND` if missing; then pushes archived items with `seq > max(after_seq, since_seq)`, then live ones |
//! | `Unsubscribe{channel}` | `Done` | |
//! | `Send{channel, client_msg_id, kind, epoch, payload}` | `Ack{seq, epoch}` / `Nack` | kind `Application` or `Proposal`; members only; channel must exist; `epoch` must be current; `invite_id`/`invite_auth` must be empty |
//! | `Send{kind: JoinRequest, channel, client_msg_id, invite_id, invite_auth, payload}` | `Ack{seq, epoch}` / `Error(SKYTALE_INVITE_*)` | for non-members holding an invite; no epoch check (the item gets the channel's current epoch) |
//! | `Commit{channel, client_msg_id, epoch, payload, welcome?, added, removed, invite_id}` | `Ack{seq, epoch+1}` / `Nack{current_epoch}` | channel must exist; by a member, or an external join with a used invite (see *Membership*) |
//! | `Fetch{channel, after_seq, limit}` | `Deliver`*, `Done{count, last_seq, more}` | catch-up without subscribing; members only; items `seq > max(after_seq, since_seq)`, at most `limit` items and the relay's byte cap per reply |
//! | `PublishKeyPackages{key_packages}` | `Done{count}` | for the authenticated identity; count = now held |
//! | `CountKeyPackages` | `Done{count}` | |
//! | `ClaimKeyPackage{identity}` | `KeyPackage` / `Error(SKYTALE_KEY_PACKAGE_NOT_FOUND)` | each key package is handed out exactly once |
//! | `FetchWelcomes` | `Welcome`*, `Done{count}` | |
//! | `AckWelcome{welcome_id}` | `Done` | deletes the welcome |
//! | `CreateInvite{channel, invite_id, invite_auth, max_uses, expires_at, group_info}` | `Done` | members only; channel must exist (`SKYTALE_CHANNEL_NOT_FOUND`); duplicate or malformed fields → `SKYTALE_INVALID_REQUEST`; `SKYTALE_QUOTA_EXCEEDED` at the org's invite quota |
//! | `UpdateInvite{invite_id, group_info}` | `Done` | members of the invite's channel only; replaces the group info; unknown/revoked → `SKYTALE_INVITE_INVALID` |
//! | `RevokeInvite{invite_id}` | `Done` | members of the invite's channel only; idempotent; afterwards every use → `SKYTALE_INVITE_INVALID` |
//! | `FetchInvite{channel, invite_id, invite_auth}` | `InviteInfo{channel, invite_id, group_info, expires_at, max_uses, uses, epoch, last_seq}` | validates and counts a use like a join request |
//!
//! Pushes (`request_id == 0`): `Deliver` (subscribed channels), `Welcome` (right after `AuthOk`
//! for queued ones, and live when a commit names this identity), and a fatal `Error` just before
//! the relay closes the connection (the QUIC close reason carries the same code string).
//!
//! ## Delivery semantics
//! - **Sequence numbers**: each channel has one sequence, starting at 1, shared by application
//!   messages, proposals and commits. A client processes items in `seq` order, so a commit is
//!   always applied before the messages of the epoch it starts.
//! - **Archive**: every accepted item is durably stored (SQLite, WAL) *before* its `Ack`, and kept
//!   for the archive TTL (default 7 days). `Subscribe{after_seq}` and `Fetch{after_seq}` resume
//!   from the last seq the client processed.
//! - **Never echoed**: the relay never delivers an item to the identity that sent it (live,
//!   replay or fetch). Seqs a member sees therefore have gaps; that is expected.
//! - **Exactly once**: `Ack` is sent after the item is archived. A client that lost the `Ack`
//!   resends with the same `client_msg_id`; the relay answers the original `Ack` with
//!   `duplicate = true` and archives nothing (dedupe key: channel, sender identity,
//!   client_msg_id; window = archive TTL). Receivers dedupe by `seq`.
//! - **Epochs**: the relay tracks each channel's epoch from accepted commits. A commit for epoch
//!   `E` is accepted only if `E` is the current epoch (then current = `E+1`): first wins, every
//!   other commit for `E` gets `Nack{current_epoch, last_seq}` (`SKYTALE_WRONG_EPOCH`); the client
//!   fetches what it missed, applies it, and retries. A `Send` whose epoch is not current is
//!   nacked the same way (re-encrypt in the current epoch).
//! - **Welcomes**: a `Commit` may carry `WelcomeOut{recipients, payload}`; only if the commit is
//!   accepted the welcome is queued per recipient (same org), pushed to online recipients and
//!   pushed again on each connect until `AckWelcome` (at-least-once; dedupe by `welcome_id`).
//!   The payload is stored once for all recipients, which must be among the commit's `added`.
//!   The welcome carries `commit_seq`: subscribe with `after_seq = commit_seq`. Unacknowledged
//!   welcomes expire after the relay's welcome TTL (default 7 days).
//! - **Key packages**: published per identity, claimed exactly once (claim deletes); they
//!   expire after the relay's key-package TTL (default 30 days).
//! - **Quotas**: per org, the relay caps channels, invites, key packages and archived payload
//!   bytes (`SKYTALE_QUOTA_EXCEEDED`), and connections per IP, per org and unauthenticated
//!   (`SKYTALE_TOO_MANY_CONNECTIONS`, fatal).
//! - **Invites** (joining while nobody is online): a member registers an invite with
//!   `CreateInvite`. The relay only sees the invite id, an authenticator (`invite_auth`, of which
//!   it stores a SHA-256 and compares in constant time) and opaque `group_info` encrypted by the
//!   client; invite secrets never reach it. `invite_id` is 1..=64 chars of `[A-Za-z0-9_-]` and
//!   unique on the relay (a revoked id stays taken until pruned); `invite_auth` is 1..=256 bytes;
//!   `max_uses >= 1` (capped to the relay's `max_invite_uses`, default 10000); `expires_at` (unix
//!   seconds) must be in the future (capped to now + `max_invite_ttl_secs`, default 30 days);
//!   `group_info` at most the frame cap. `FetchInvite` returns the effective values.
//!   `UpdateInvite`/`RevokeInvite` work for invites of the token's org (another org's →
//!   `SKYTALE_FORBIDDEN_CHANNEL`, unknown → `SKYTALE_INVITE_INVALID`).
//! - **Invite validation** (`Send{kind: JoinRequest}` and `FetchInvite`): the channel must be of
//!   the token's org (`SKYTALE_FORBIDDEN_CHANNEL`); then unknown id, revoked, other channel,
//!   wrong `invite_auth` or a missing channel → `SKYTALE_INVITE_INVALID` (one code for all);
//!   then past `expires_at` → `SKYTALE_INVITE_EXPIRED`; then use counting per distinct identity:
//!   an identity that already used the invite passes without counting again, a new one gets
//!   `SKYTALE_INVITE_USED_UP` once `uses == max_uses`, else it is recorded (`uses += 1`).
//!   Invites and uses are durable; invites are pruned once expired for longer than the archive
//!   TTL (until then a use gets `SKYTALE_INVITE_EXPIRED`).
//! - **Join requests**: `Send{kind: JoinRequest}` is archived in the channel's sequence with the
//!   channel's current epoch (the `epoch` field is ignored), fanned out to subscribers except the
//!   sender, replayed on `Subscribe`/`Fetch` to members that were offline, and deduped by
//!   `client_msg_id` (a retry of an accepted join request gets its original `Ack` even if the
//!   invite has since expired, been used up or been revoked). A member answers by adding the
//!   joiner (commit + welcome) or the joiner joins with an external commit (see *Membership*).
//! - **Membership** (the relay roster): every channel has a roster of `(identity, since_seq)`,
//!   identities being the authenticated token identities. `CreateChannel` makes the caller its
//!   first member (since 0). Only members may `Send` (Application/Proposal), `Commit`,
//!   `Subscribe`, `Fetch`, `ChannelState`, `CreateInvite`, `UpdateInvite`, `RevokeInvite`;
//!   anyone else gets `SKYTALE_NOT_A_MEMBER` and nothing changes. A member's commit declares
//!   `added` (they join the roster with `since_seq` = the commit's seq, so they read only what
//!   comes after it) and `removed` (they leave it once the commit is archived: their
//!   subscriptions end — they still get the removing commit, then a non-fatal
//!   `Error{SKYTALE_NOT_A_MEMBER}` push — and later requests are refused). Welcome recipients
//!   must be among `added` (`SKYTALE_INVALID_REQUEST`); `added`/`removed` are valid identities,
//!   at most the relay's `max_commit_added` (default 1000) each. A **non-member** may commit
//!   only an external join: `invite_id` names an invite of this channel that it used
//!   (`FetchInvite` or a join request), `added == [itself]`, `removed` empty, no welcome; a
//!   revoked invite → `SKYTALE_INVITE_INVALID`, an expired one → `SKYTALE_INVITE_EXPIRED`. The
//!   relay cannot see MLS membership: the roster is what authenticated committers declared;
//!   members still check every commit against the group's policy.
//!
//! ## Authorization
//! - `Auth.jwt`: EdDSA (Ed25519) JWT from the API server; `aud` = `skytale-relay`, `iss`, `exp`,
//!   `sub`, `org` checked; `alg` other than `EdDSA` is refused.
//! - `Auth.identity` is the routing identity (empty = the token's `sub`). If the token carries an
//!   `identity` claim, they must match.
//! - Channel names are `org/namespace/service` ([`names`]); a token only touches channels of its
//!   own `org` (`SKYTALE_FORBIDDEN_CHANNEL`). Welcomes and key packages are scoped to the org.
//!
//! ## Errors
//! `Error{code, message, fatal, retry_after_ms}` with a stable code from [`ErrorCode`]. Fatal
//! codes close the connection ([`ErrorCode::is_fatal`]): auth failures, oversize/malformed frames,
//! unsupported version, connection limits (relay-wide, per IP, per org, unauthenticated), idle
//! timeout, slow consumer, shutdown. Others (`SKYTALE_NOT_A_MEMBER`, `SKYTALE_CHANNEL_EXISTS`,
//! `SKYTALE_QUOTA_EXCEEDED`, `SKYTALE_FORBIDDEN_CHANNEL`, `SKYTALE_RATE_LIMITED`, `SKYTALE_WRONG_EPOCH`,
//! `SKYTALE_KEY_PACKAGE_NOT_FOUND`, `SKYTALE_INVITE_INVALID`, `SKYTALE_INVITE_EXPIRED`,
//! `SKYTALE_INVITE_USED_UP`, …) fail only the request.
//!
//! ## Writing a client
//! - [`conn::RelayAddr`]: parse `iroh://<id>@host:port` (the relay prints it on start and serves
//!   it on `/health`).
//! - [`conn::client_endpoint`] / [`conn::closed_endpoint`]: bind an iroh endpoint with no n0
//!   relays and no address lookup (reuse one endpoint for all reconnects).
//! - [`conn::RelayConnection::connect`] → `(RelayConnection, PushReceiver)`. The connection is
//!   `Clone`; requests can run concurrently (`auth`, `ping`, `create_channel`, `channel_state`,
//!   `subscribe`, `unsubscribe`, `send`, `commit`, `fetch`, `publish_key_packages`,
//!   `count_key_packages`, `claim_key_package`, `fetch_welcomes`, `ack_welcome`, `create_invite`,
//!   `update_invite`, `revoke_invite`, `fetch_invite`, `send_join_request`, or the generic
//!   `request(Body)`). Failures are [`ProtoError`]: `Relay{code, ..}` for `Error` replies,
//!   `WrongEpoch{current_epoch, last_seq}` for `Nack`, `Closed{code}` when the relay closed the
//!   connection (the code is the fatal `Error`/close reason, e.g. `SKYTALE_AUTH_EXPIRED`).
//!   [`ProtoError::code`] always gives a stable string.
//! - [`conn::PushReceiver::recv`] yields pushed `Deliver`/`Welcome`/`Error` frames; `None`
//!   means the connection is gone: reconnect with backoff, re-`Auth`, re-`Subscribe` each
//!   channel with `after_seq` = the last seq you processed, resend unacked items with the same
//!   `client_msg_id`, and ignore deliveries with `seq <=` your last processed seq.
//! - Without the `conn` feature, [`codec`] ([`codec::encode_frame`], [`codec::read_frame`]) and
//!   [`frames`] are enough to speak the protocol over any byte stream.
//!
//! ## Limits (relay defaults, configurable)
//! frame 256 KiB; 1024 connections; 100 frames/s per identity with a burst of 200 (token
//! bucket, `SKYTALE_RATE_LIMITED` with `retry_after_ms`); 100 pending welcomes per recipient
//! (`SKYTALE_RECIPIENT_QUEUE_FULL`, the commit is refused before it is archived); 100 key
//! packages per identity; auth timeout 5 s; idle timeout 120 s; 8192 queued pushes per
//! connection (`SKYTALE_SLOW_CONSUMER`: reconnect and resume from your last seq).

#![deny(missing_docs)]

pub mod codec;
pub mod codes;
#[cfg(feature = "conn")]
pub mod conn;
mod error;
pub mod frames;
pub mod names;
pub mod probe;

pub use error::{ErrorCode, ProtoError};
pub use frames::{Body, Frame, Kind};

/// The ALPN of the protocol.
pub const ALPN: &[u8] = b"skytale/1";
/// The protocol version carried in every [`Frame`].
pub const PROTOCOL_VERSION: u32 = 1;
/// Default cap on one frame (bytes after the length prefix).
pub const DEFAULT_MAX_FRAME_SIZE: usize = 256 * 1024;
/// How much larger than the client cap a relay→client frame may be (routing metadata).
pub const RELAY_FRAME_ALLOWANCE: usize = 16 * 1024;
/// JWT audience the relay expects.
pub const AUDIENCE: &str = "skytale-relay";
