//! Plain data returned by channel operations: incoming events and commit outputs.

/// What processing one incoming MLS message produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Incoming {
    /// An application message, decrypted and authenticated.
    Message {
        /// Identity of the sender (from its MLS credential).
        sender: String,
        /// The plaintext.
        data: Vec<u8>,
        /// Epoch the message was sent in.
        epoch: u64,
    },
    /// A commit, now merged: the channel moved to `epoch`.
    Commit {
        /// Identity of the committer.
        sender: String,
        /// The new epoch.
        epoch: u64,
        /// Identities added by the commit.
        added: Vec<String>,
        /// Identities removed by the commit.
        removed: Vec<String>,
        /// True when this agent itself was removed (the channel is then inactive).
        self_removed: bool,
        /// True for an external commit (a new member joining by itself from a GroupInfo).
        external: bool,
        /// True for an external commit by which an existing member resynced: it replaced its
        /// own old leaf (the membership is unchanged; see `Agent::rejoin_by_external_commit`).
        resync: bool,
        /// The commit's authenticated data (e.g. an invite proof of an external joiner).
        authenticated_data: Vec<u8>,
    },
    /// A proposal, stored until a commit covers it.
    Proposal {
        /// Identity of the proposer.
        sender: String,
        /// Epoch the proposal was made in.
        epoch: u64,
        /// `add`, `remove`, `update` or `other`.
        proposal: String,
    },
}

/// The messages produced by a commit that this agent created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommitOutput {
    /// The commit, to be sent to the current members (MLS message bytes).
    pub commit: Vec<u8>,
    /// The Welcome for added members, when the commit adds any.
    pub welcome: Option<Vec<u8>>,
    /// The epoch the commit was created in (the epoch a delivery service orders it by).
    pub from_epoch: u64,
    /// The epoch after the commit is merged.
    pub epoch: u64,
    /// Identities added.
    pub added: Vec<String>,
    /// Identities removed.
    pub removed: Vec<String>,
}

/// Whether a commit created locally is merged at once or kept pending until the delivery
/// service accepts it (see [`crate::Agent::merge_pending_commit`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommitMode {
    /// Merge immediately (no delivery service ordering).
    Merge,
    /// Keep the commit pending; merge or discard it once the delivery service answers.
    Stage,
}
