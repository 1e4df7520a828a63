//! The relay's storage interface: the [`Store`] trait and the rows it deals in.
//!
//! A store keeps channels (epoch, last seq) and their rosters, the archive of channel items,
//! queued welcomes (each payload once, with one pointer per recipient), key packages, invites and
//! per-org usage counters (for quotas). It holds ciphertext and routing metadata only. The relay
//! calls it from one thread at a time ([`crate::storage`]: its storage thread, or a caller that
//! found it idle and writes in place when the backend allows it), so implementations are
//! synchronous and need not be `Sync`. [`SqliteStore`] is the embedded
//! backend; [`NatsStore`] keeps everything in a NATS JetStream cluster shared by several relay
//! nodes (items archived by other nodes reach this one through [`Store::take_feed`]).
//!
//! ## Rosters
//! A channel's roster is the relay's list of who may touch the channel: `(identity, since_seq)`.
//! [`Store::create_channel`] puts the creator in (since 0); a commit's [`Append::added`] and
//! [`Append::removed`] change it in the same transaction that archives the commit (added
//! identities since the commit's seq, so they read only what comes after it). The relay cannot
//! see MLS membership (it is encrypted); the roster is what authenticated committers declared.

pub mod nats;
mod sqlite;

pub use nats::{NatsConfig, NatsStore};
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

/// Per-org usage, for the per-org quotas.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OrgUsage {
    /// Channels.
    pub channels: u64,
    /// Stored invites (revoked ones too, until pruned).
    pub invites: u64,
    /// Stored key packages.
    pub key_packages: u64,
    /// Payload bytes of archived items and queued welcomes (each welcome payload once).
    pub archive_bytes: u64,
}

/// Cutoffs (unix ms) of one prune pass: rows created before them are deleted.
#[derive(Clone, Copy, Debug, Default)]
pub struct PruneCutoffs {
    /// Archived items; also invites that expired before it (with their uses).
    pub archive_ms: u64,
    /// Queued welcomes.
    pub welcome_ms: u64,
    /// Stored key packages.
    pub key_package_ms: u64,
}

/// One item to archive, with the channel state it moves to, the welcome it queues and the
/// roster changes it makes.
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
    /// Commits: a welcome to queue, stored once for all its recipients: `(recipients, payload)`.
    pub welcome: Option<(Vec<String>, bytes::Bytes)>,
    /// Commits: identities that join the roster (since this item's seq; members keep theirs).
    pub added: Vec<String>,
    /// Commits: identities that leave the roster (applied before `added`).
    pub removed: Vec<String>,
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
    /// Rows deleted (archive items, welcomes, key packages, invites).
    pub rows: usize,
    /// Archive items deleted.
    pub items: u64,
    /// Archive payload bytes deleted.
    pub bytes: u64,
}

/// Items another relay node archived (cluster backends), for this node's subscribers.
#[derive(Clone, Debug)]
pub struct Remote {
    /// Channel.
    pub channel: String,
    /// Org of the channel.
    pub org: String,
    /// The channel's last sequence number after these items.
    pub last_seq: u64,
    /// The items, in sequence order (may be empty: a record that only created the channel).
    pub items: Vec<Deliver>,
    /// Welcomes queued by a commit among them: `(recipient, frame)`.
    pub welcomes: Vec<(String, Welcome)>,
    /// The channel's roster after these items, when they changed it (`None` also when the node
    /// could not check the record: then `roster_changed` says to read it from the store).
    pub roster: Option<Vec<(String, u64)>>,
    /// These items changed the roster.
    pub roster_changed: bool,
}

/// Result of one group of a group commit: welcome ids per item.
pub type GroupResult = Result<Vec<Vec<u64>>>;

/// The relay's persistent state. Every method is one atomic operation.
pub trait Store: Send {
    /// A channel's state.
    fn channel(&self, name: &str) -> Result<Option<ChannelRow>>;
    /// Creates a channel (epoch 0) if missing and puts `creator` in its roster since seq 0;
    /// returns whether the channel was created. On an existing channel only the roster entry
    /// is added (the caller decides who may: see [`crate::channel`]).
    fn create_channel(&mut self, name: &str, org: &str, creator: &str, now_ms: u64) -> Result<bool>;
    /// A channel's whole roster: `(identity, since_seq)`.
    fn roster(&self, channel: &str) -> Result<Vec<(String, u64)>>;
    /// One roster entry: `Some(since_seq)` if `identity` is a member of `channel`.
    fn member(&self, channel: &str, identity: &str) -> Result<Option<u64>>;
    /// An org's usage (for quotas); zeros for an unknown org.
    fn org_usage(&self, org: &str) -> Result<OrgUsage>;
    /// Looks up an archived item by its dedupe key (`client_msg_id` "" never matches).
    fn find_dup(&self, channel: &str, sender: &str, client_msg_id: &str) -> Result<Option<Dup>>;
    /// Archives items in one transaction (group commit), advancing each item's channel, queueing
    /// its welcome (payload once, one id per recipient, in recipient order) and applying its
    /// roster changes; returns the welcome ids per item. All or nothing.
    fn append_batch(&mut self, items: &[Append]) -> Result<Vec<Vec<u64>>>;
    /// Archives several independent groups (each one channel actor's batch) and answers each.
    /// Default: all groups in one [`Store::append_batch`] transaction; if that fails, each group
    /// on its own, so one bad group cannot fail its neighbours. A cluster backend may refuse a
    /// group with [`crate::error::RelayError::Conflict`] when its channel moved on another node.
    fn append_groups(&mut self, groups: &[&[Append]]) -> Vec<GroupResult> {
        if let [one] = groups {
            return vec![self.append_batch(one)];
        }
        let all: Vec<Append> = groups.iter().flat_map(|g| g.iter().cloned()).collect();
        match self.append_batch(&all) {
            Ok(ids) => {
                let mut ids = ids.into_iter();
                groups.iter().map(|g| Ok(ids.by_ref().take(g.len()).collect())).collect()
            }
            Err(e) => {
                tracing::warn!(error = %e, "group commit failed; retrying its appends one by one");
                groups.iter().map(|g| self.append_batch(g)).collect()
            }
        }
    }
    /// Archived items with `after < seq <= upto`, not sent by `exclude_sender`, in order: at most
    /// `limit` items and at most `max_bytes` of payload (the first item is returned even if it
    /// alone is larger).
    fn read_range(
        &self,
        channel: &str,
        after: u64,
        upto: u64,
        exclude_sender: &str,
        limit: usize,
        max_bytes: usize,
    ) -> Result<Vec<Deliver>>;
    /// Number of queued welcomes for a recipient.
    fn pending_welcomes(&self, org: &str, recipient: &str) -> Result<u64>;
    /// Queued welcomes of a recipient, oldest first.
    fn welcomes_for(&self, org: &str, recipient: &str) -> Result<Vec<Welcome>>;
    /// Deletes a welcome of this recipient (and its payload once no recipient is left);
    /// returns whether it existed.
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
    /// Deletes archived items, welcomes and key packages older than their cutoffs, and invites
    /// (with their uses) that expired before the archive cutoff.
    fn prune(&mut self, cutoffs: &PruneCutoffs) -> Result<Pruned>;
    /// Archive size: (items, payload bytes). May scan; called once at start.
    fn archive_stats(&self) -> Result<(u64, u64)>;
    /// Flushes what the backend buffers (SQLite: checkpoints the WAL into the database file) so
    /// a clean shutdown leaves one self-contained file.
    fn checkpoint(&mut self) -> Result<()> {
        Ok(())
    }
    /// Light upkeep the storage thread runs after each round of work (SQLite: finishes a WAL
    /// checkpoint its background thread started, so the WAL can start over).
    fn maintain(&mut self) -> Result<()> {
        Ok(())
    }
    /// Whether [`Store::maintain`] has something to do now (checked after a write in place, so
    /// the storage thread does the upkeep; see [`crate::storage`]).
    fn upkeep_due(&self) -> bool {
        false
    }
    /// Whether appends are short enough to run in place on the caller's thread when the store
    /// is idle (see [`crate::storage`]): no network round trip, no disk sync. Default: no.
    fn writes_inline(&self) -> bool {
        false
    }
    /// The feed of items archived by other relay nodes (cluster backends; taken once, before
    /// the store moves to the storage thread). `None` for a single-node store.
    fn take_feed(&mut self) -> Option<tokio::sync::mpsc::UnboundedReceiver<Remote>> {
        None
    }
}
