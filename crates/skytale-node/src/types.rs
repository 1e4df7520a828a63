//! Plain JS objects exchanged with the bindings (`#[napi(object)]`).

use napi::bindgen_prelude::*;
use napi_derive::napi;
use skytale_core::{CommitOutput, Incoming};

/// Options of `Agent.open`. Give exactly one of `keystoreKey` and `passphrase`.
#[napi(object)]
pub struct AgentOpenOptions {
    /// Directory holding this agent's encrypted keystore (created if missing).
    pub data_dir: String,
    /// The agent's identity: 1-64 characters of `A-Z a-z 0-9 - _ . @`.
    pub identity: String,
    /// A raw 32-byte keystore key.
    pub keystore_key: Option<Uint8Array>,
    /// A passphrase; the key is derived with Argon2id and a salt kept in the data dir.
    pub passphrase: Option<String>,
}

/// What a commit created by this agent produced.
#[napi(object)]
pub struct CommitResult {
    /// The commit message, for the channel's other members.
    pub commit: Uint8Array,
    /// The Welcome for new members (present when members were added).
    pub welcome: Option<Uint8Array>,
    /// The epoch the commit was made in.
    pub from_epoch: i64,
    /// The channel's epoch after the commit.
    pub epoch: i64,
    /// Identities added.
    pub added: Vec<String>,
    /// Identities removed.
    pub removed: Vec<String>,
}

impl From<CommitOutput> for CommitResult {
    fn from(o: CommitOutput) -> Self {
        CommitResult {
            commit: Uint8Array::from(o.commit),
            welcome: o.welcome.map(Uint8Array::from),
            from_epoch: o.from_epoch as i64,
            epoch: o.epoch as i64,
            added: o.added,
            removed: o.removed,
        }
    }
}

/// The result of processing one incoming message.
#[napi(object)]
pub struct IncomingEvent {
    /// What the message was.
    #[napi(ts_type = "'message' | 'commit' | 'proposal'")]
    pub kind: String,
    /// Identity of the sender (authenticated by MLS).
    pub sender: String,
    /// For messages: the epoch it was sent in; for commits: the new epoch.
    pub epoch: i64,
    /// The plaintext (`kind: 'message'`).
    pub data: Option<Uint8Array>,
    /// Identities added (`kind: 'commit'`).
    pub added: Option<Vec<String>>,
    /// Identities removed (`kind: 'commit'`).
    pub removed: Option<Vec<String>>,
    /// True when this agent was removed by the commit.
    pub self_removed: Option<bool>,
    /// The proposal type (`kind: 'proposal'`): add, remove, update or other.
    pub proposal: Option<String>,
}

impl From<Incoming> for IncomingEvent {
    fn from(ev: Incoming) -> Self {
        match ev {
            Incoming::Message { sender, data, epoch } => IncomingEvent {
                kind: "message".into(),
                sender,
                epoch: epoch as i64,
                data: Some(Uint8Array::from(data)),
                added: None,
                removed: None,
                self_removed: None,
                proposal: None,
            },
            Incoming::Commit { sender, epoch, added, removed, self_removed, .. } => IncomingEvent {
                kind: "commit".into(),
                sender,
                epoch: epoch as i64,
                data: None,
                added: Some(added),
                removed: Some(removed),
                self_removed: Some(self_removed),
                proposal: None,
            },
            Incoming::Proposal { sender, epoch, proposal } => IncomingEvent {
                kind: "proposal".into(),
                sender,
                epoch: epoch as i64,
                data: None,
                added: None,
                removed: None,
                self_removed: None,
                proposal: Some(proposal),
            },
        }
    }
}
