//! The relay's storage interface: the [`Store`] trait and the rows it deals in.
//!
//! A store keeps channels (epoch, last seq), the archive of channel items, queued welcomes,
//! key packages and invites. It holds ciphertext and routing metadata only. The relay calls it
//! from one dedicated storage thread ([`crate::storage`]), never from the async workers, so
//! implementations are synchronous and need not be `Sync`. [`SqliteStore`] is the embedded
//! backend; a NATS JetStream backend can implement the same trait.

mod sqlite;

pub use sqlite::SqliteStore;

use skytale_proto::frames::{Deliver, Welcome};

use crate::error::Result;

/// A channel's sequencing state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ChannelRow {
    /// Current epoch.
    pub epoch: u64,
    /// Last assigned sequence number.
    pub last_seq: u64,
}

/// A previously archived item found by its dedupe key.
#[derive(Clone, Copy, Debug)]
pub struct Dup {
    /// Its sequence number.
    pub seq: u64,
    /// Its epoch.
    pub epoch: u64,
    /// Its kind (wire value).
    pub kind: i32,
}

/// One item to archive, with the channel state it moves to and the welcomes it queues.
#[derive(Clone, Debug)]
pub struct Append {
    /// Channel.
    pub channel: String,
    /// Org of the channel (welcomes are queued per org).
    pub org: String,
    /// Sequence number.
    pub seq: u64,
    /// Epoch the item was made in.
    pub epoch: u64,
    /// The channel's epoch after this item (`epoch + 1` for commits).
    pub new_epoch: u64,
    /// Kind (wire value).
    pub kind: i32,
    /// Sender identity.
    pub sender: String,
    /// Client message id ("" = none).
    pub client_msg_id: String,
    /// Ciphertext (shared, cheap to clone).
    pub payload: bytes::Bytes,
    /// Archive time, unix ms.
    pub now_ms: u64,
    /// Welcomes to queue: `(recipient, payload)`.
    pub welcomes: Vec<(String, Vec<u8>)>,
}

/// A stored invite.
#[derive(Clone, Debug)]
pub struct InviteRow {
    /// Invite id.
    pub id: String,
    /// Org of the invite's channel.
    pub org: String,
    /// Channel.
    pub channel: String,
    /// SHA-256 of the invite authenticator.
    pub auth_hash: Vec<u8>,
    /// Max distinct identities.
    pub max_uses: u32,
    /// Expiry, unix seconds.
    pub expires_at: u64,
    /// Opaque group info.
    pub group_info: Vec<u8>,
    /// Revoked.
    pub revoked: bool,
}

/// What pruning removed.
#[derive(Clone, Copy, Debug, Default)]
pub struct Pruned {
    /// Rows deleted (archive items, welcomes, invites).
    pub rows: usize,
    /// Archive items deleted.
    pub items: u64,
    /// Archive payload bytes deleted.
    pub bytes: u64,
}

/// The relay's persistent state. Every method is one atomic operation.
pub trait Store: Send {
    /// A channel's state.
    fn channel(&self, name: &str) -> Result<Option<ChannelRow>>;
    /// Creates a channel if missing; returns its state and whether it was created.
    fn ensure_channel(&mut self, name: &str, org: &str, now_ms: u64) -> Result<(ChannelRow, bool)>;
    /// Looks up an archived item by its dedupe key (`client_msg_id` "" never matches).
    fn find_dup(&self, channel: &str, sender: &str, client_msg_id: &str) -> Result<Option<Dup>>;
    /// Archives items in one transaction (group commit), advancing each item's channel and
    /// queueing its welcomes; returns the welcome ids per item. All or nothing.
    fn append_batch(&mut self, items: &[Append]) -> Result<Vec<Vec<u64>>>;
    /// Archived items with `after < seq <= upto`, not sent by `exclude_sender`, at most `limit`.
    fn read_range(
        &self,
        channel: &str,
        after: u64,
        upto: u64,
        exclude_sender: &str,
        limit: usize,
    ) -> Result<Vec<Deliver>>;
    /// Number of queued welcomes for a recipient.
    fn pending_welcomes(&self, org: &str, recipient: &str) -> Result<u64>;
    /// Queued welcomes of a recipient, oldest first.
    fn welcomes_for(&self, org: &str, recipient: &str) -> Result<Vec<Welcome>>;
    /// Deletes a welcome of this recipient; returns whether it existed.
    fn delete_welcome(&mut self, org: &str, recipient: &str, id: u64) -> Result<bool>;
    /// Number of stored key packages of an identity.
    fn count_key_packages(&self, org: &str, identity: &str) -> Result<u64>;
    /// Stores key packages of an identity.
    fn add_key_packages(&mut self, org: &str, identity: &str, kps: &[Vec<u8>], now_ms: u64) -> Result<()>;
    /// Removes and returns the oldest key package of an identity (single claim).
    fn claim_key_package(&mut self, org: &str, identity: &str) -> Result<Option<Vec<u8>>>;
    /// Stores a new invite; `false` if the id is already taken (also by a revoked invite).
    fn create_invite(&mut self, inv: &InviteRow, created_by: &str, now_ms: u64) -> Result<bool>;
    /// An invite by id.
    fn invite(&self, id: &str) -> Result<Option<InviteRow>>;
    /// Replaces an invite's group info.
    fn update_invite(&mut self, id: &str, group_info: &[u8]) -> Result<()>;
    /// Marks an invite revoked and drops its group info.
    fn revoke_invite(&mut self, id: &str) -> Result<()>;
    /// Number of distinct identities that used an invite.
    fn invite_uses(&self, id: &str) -> Result<u32>;
    /// True if `identity` already used the invite.
    fn invite_used_by(&self, id: &str, identity: &str) -> Result<bool>;
    /// Records that `identity` used the invite.
    fn add_invite_use(&mut self, id: &str, identity: &str, now_ms: u64) -> Result<()>;
    /// Deletes archived items and welcomes older than `cutoff_ms`, and invites (with their
    /// uses) that expired before `cutoff_ms`.
    fn prune(&mut self, cutoff_ms: u64) -> Result<Pruned>;
    /// Archive size: (items, payload bytes). May scan; called once at start.
    fn archive_stats(&self) -> Result<(u64, u64)>;
    /// Flushes what the backend buffers (SQLite: checkpoints the WAL into the database file) so
    /// a clean shutdown leaves one self-contained file.
    fn checkpoint(&mut self) -> Result<()> {
        Ok(())
    }
}
