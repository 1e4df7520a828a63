//! What the JetStream backend writes: archive records (one NATS message = one or more items of
//! one channel, with the channel state after them) and the values of its KV buckets, as
//! hand-written `prost` messages; and the escaping of names into subject tokens and KV keys.

use bytes::Bytes;

/// One archive message: consecutive items of one channel and the channel's state after them.
/// A record without items creates the channel (or only records its state).
#[derive(Clone, PartialEq, prost::Message)]
pub struct Record {
    /// Org of the channel.
    #[prost(string, tag = "1")]
    pub org: String,
    /// The channel's epoch after this record.
    #[prost(uint64, tag = "2")]
    pub epoch: u64,
    /// The channel's last sequence number after this record.
    #[prost(uint64, tag = "3")]
    pub last_seq: u64,
    /// The items, in sequence order (`seq` = previous record's `last_seq` + 1, + 2, …).
    #[prost(message, repeated, tag = "4")]
    pub items: Vec<RecItem>,
    /// Id of the relay node that wrote it (live fan-out skips its own records).
    #[prost(string, tag = "5")]
    pub node: String,
    /// Random id of this record (tells whether a publish whose ack was lost landed).
    #[prost(uint64, tag = "6")]
    pub id: u64,
    /// Write time, unix ms.
    #[prost(uint64, tag = "7")]
    pub created_ms: u64,
    /// Stream sequence of the channel's record this one follows (0 = the first). A record is
    /// valid only if it follows the channel's last valid record: if the server ever accepts two
    /// records for the same predecessor (possible with some nats-server versions, see
    /// [`super`]), every node keeps the first and ignores the other, and its writer retries.
    #[prost(uint64, tag = "8")]
    pub prev: u64,
    /// The record changed the roster: `roster` is the whole roster after it.
    #[prost(bool, tag = "9")]
    pub roster_full: bool,
    /// The roster after this record (only with `roster_full`).
    #[prost(message, repeated, tag = "10")]
    pub roster: Vec<Member>,
}

/// A roster entry.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Member {
    /// Identity.
    #[prost(string, tag = "1")]
    pub identity: String,
    /// First seq it may read after.
    #[prost(uint64, tag = "2")]
    pub since: u64,
}

/// KV value of a channel's roster (a copy of the last record that changed it, so the roster
/// outlives the archive's TTL).
#[derive(Clone, PartialEq, prost::Message)]
pub struct RosterSnap {
    /// Stream sequence of the record it comes from.
    #[prost(uint64, tag = "1")]
    pub as_of: u64,
    /// The roster.
    #[prost(message, repeated, tag = "2")]
    pub members: Vec<Member>,
}

/// KV value of an org's usage. Counts that expire are kept in time buckets (start unix ms →
/// count), so what the archive TTL (or the key-package TTL, or an invite's expiry) dropped stops
/// counting without anyone deleting it.
#[derive(Clone, PartialEq, prost::Message)]
pub struct OrgUsageRec {
    /// Channels.
    #[prost(uint64, tag = "1")]
    pub channels: u64,
    /// Invites by the time they may be pruned (expiry + archive TTL).
    #[prost(message, repeated, tag = "2")]
    pub invites: Vec<Bucket>,
    /// Key packages by store time.
    #[prost(message, repeated, tag = "3")]
    pub key_packages: Vec<Bucket>,
    /// Archived payload bytes by archive time.
    #[prost(message, repeated, tag = "4")]
    pub archive: Vec<Bucket>,
}

/// One time bucket of a count.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Bucket {
    /// Start, unix ms.
    #[prost(uint64, tag = "1")]
    pub start_ms: u64,
    /// Count (may go down: a claimed key package).
    #[prost(int64, tag = "2")]
    pub count: i64,
}

/// One archived item.
#[derive(Clone, PartialEq, prost::Message)]
pub struct RecItem {
    /// Sequence number.
    #[prost(uint64, tag = "1")]
    pub seq: u64,
    /// Epoch the item was made in.
    #[prost(uint64, tag = "2")]
    pub epoch: u64,
    /// Kind (wire value).
    #[prost(int32, tag = "3")]
    pub kind: i32,
    /// Sender identity.
    #[prost(string, tag = "4")]
    pub sender: String,
    /// Client message id ("" = none).
    #[prost(string, tag = "5")]
    pub client_msg_id: String,
    /// Ciphertext.
    #[prost(bytes = "bytes", tag = "6")]
    pub payload: Bytes,
    /// Archive time, unix ms.
    #[prost(uint64, tag = "7")]
    pub now_ms: u64,
    /// Commits: identities added to the roster (since this seq).
    #[prost(string, repeated, tag = "9")]
    pub added: Vec<String>,
    /// Commits: identities removed from the roster.
    #[prost(string, repeated, tag = "10")]
    pub removed: Vec<String>,
    /// Commits: recipients of the welcome.
    #[prost(string, repeated, tag = "11")]
    pub welcome_recipients: Vec<String>,
    /// Commits: the welcome (opaque MLS Welcome), stored once for all recipients.
    #[prost(bytes = "bytes", tag = "12")]
    pub welcome: Bytes,
}

/// KV value of an identity's key packages (oldest first).
#[derive(Clone, PartialEq, prost::Message)]
pub struct KeyPackages {
    /// The key packages.
    #[prost(bytes = "vec", repeated, tag = "1")]
    pub packages: Vec<Vec<u8>>,
    /// Store time of each, unix ms.
    #[prost(uint64, repeated, tag = "2")]
    pub created_ms: Vec<u64>,
}

/// KV value of an invite.
#[derive(Clone, PartialEq, prost::Message)]
pub struct InviteRec {
    /// Org of the invite's channel.
    #[prost(string, tag = "1")]
    pub org: String,
    /// Channel.
    #[prost(string, tag = "2")]
    pub channel: String,
    /// SHA-256 of the invite authenticator.
    #[prost(bytes = "vec", tag = "3")]
    pub auth_hash: Vec<u8>,
    /// Max distinct identities.
    #[prost(uint32, tag = "4")]
    pub max_uses: u32,
    /// Expiry, unix seconds.
    #[prost(uint64, tag = "5")]
    pub expires_at: u64,
    /// Opaque group info.
    #[prost(bytes = "vec", tag = "6")]
    pub group_info: Vec<u8>,
    /// Revoked.
    #[prost(bool, tag = "7")]
    pub revoked: bool,
    /// Creator identity.
    #[prost(string, tag = "8")]
    pub created_by: String,
    /// Creation time, unix ms.
    #[prost(uint64, tag = "9")]
    pub created_ms: u64,
    /// Identities that used it.
    #[prost(string, repeated, tag = "10")]
    pub uses: Vec<String>,
}

/// KV value of a recipient's welcome queue: pointers into the archive (the payload stays in
/// the commit's record) and the ids already acknowledged (so a late repair cannot requeue them).
#[derive(Clone, PartialEq, prost::Message)]
pub struct WelcomeQueue {
    /// Queued welcomes, oldest first.
    #[prost(message, repeated, tag = "1")]
    pub pending: Vec<WelcomePtr>,
    /// Acknowledged welcome ids with their creation time (dropped after the archive TTL).
    #[prost(message, repeated, tag = "2")]
    pub acked: Vec<WelcomePtr>,
}

/// A queued welcome: where its commit is archived.
#[derive(Clone, PartialEq, prost::Message)]
pub struct WelcomePtr {
    /// Welcome id = stream sequence of the commit's record.
    #[prost(uint64, tag = "1")]
    pub id: u64,
    /// Channel.
    #[prost(string, tag = "2")]
    pub channel: String,
    /// Sequence number of the commit.
    #[prost(uint64, tag = "3")]
    pub commit_seq: u64,
    /// The channel's epoch after the commit.
    #[prost(uint64, tag = "4")]
    pub commit_epoch: u64,
    /// Committer identity.
    #[prost(string, tag = "5")]
    pub sender: String,
    /// Queue time, unix ms.
    #[prost(uint64, tag = "6")]
    pub created_ms: u64,
}

/// Escapes a name into one subject token / KV key token: `[A-Za-z0-9_-]` stay, every other byte
/// becomes `=XX` (hex). Injective, so distinct names never share a subject or key.
pub fn esc(name: &str) -> String {
    let mut out = String::with_capacity(name.len() + 8);
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || b == b'_' || b == b'-' {
            out.push(b as char);
        } else {
            out.push_str(&format!("={b:02X}"));
        }
    }
    out
}

/// Inverse of [`esc`]; `None` if `token` is not an escaped name.
pub fn unesc(token: &str) -> Option<String> {
    let bytes = token.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'=' {
            let hex = token.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_round_trips_and_yields_one_token() {
        for name in ["acme/ns/svc", "a-1.b_c/x.y/z", "agent@acme", "=3D", "Ünïcode"] {
            let t = esc(name);
            assert!(t.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'='), "{t}");
            assert_eq!(unesc(&t).as_deref(), Some(name));
        }
        assert_ne!(esc("a.b"), esc("a=2Eb"));
        assert_eq!(unesc("=4"), None);
    }
}
