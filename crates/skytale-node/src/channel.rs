//! The `Channel` class: membership changes, encryption and processing of one MLS group.

use std::sync::Arc;

use napi::bindgen_prelude::*;
use napi_derive::napi;
use skytale_core::CommitMode;
use std::result::Result;

use crate::agent::Handle;
use crate::errors::{sync_error, SyncError};
use crate::task::{same, CoreTask};
use crate::types::{CommitResult, IncomingEvent};

/// One channel (an MLS group) of an agent. Obtained from `agent.createChannel`,
/// `agent.joinChannel` or `agent.channel(name)`.
/// Identity → signature-key fingerprint pairs, as the core returns them.
type Fingerprints = Vec<(String, String)>;

#[napi]
pub struct Channel {
    handle: Arc<Handle>,
    name: String,
}

impl Channel {
    pub(crate) fn new(handle: Arc<Handle>, name: String) -> Channel {
        Channel { handle, name }
    }
}

#[napi]
impl Channel {
    /// The channel name (`org/namespace/service`).
    #[napi(getter)]
    pub fn name(&self) -> String {
        self.name.clone()
    }

    /// The current MLS epoch (increases with every merged commit).
    #[napi(getter)]
    pub fn epoch(&self) -> Result<i64, SyncError> {
        let core = self.handle.get().map_err(sync_error)?;
        core.epoch(&self.name).map(|e| e as i64).map_err(sync_error)
    }

    /// Adds members from their KeyPackages; returns the commit (for current members) and the
    /// Welcome (for the new ones). The commit is merged locally at once.
    ///
    /// Rejects with `SKYTALE_KEY_PACKAGE_USED` for a key package this agent already used.
    #[napi(ts_return_type = "Promise<CommitResult>")]
    pub fn add_members(
        &self,
        key_packages: Vec<Uint8Array>,
    ) -> AsyncTask<CoreTask<skytale_core::CommitOutput, CommitResult>> {
        let (handle, name) = (self.handle.clone(), self.name.clone());
        let kps: Vec<Vec<u8>> = key_packages.iter().map(|k| k.to_vec()).collect();
        CoreTask::spawn(move || handle.get()?.add_members(&name, &kps, CommitMode::Merge), |_, o| Ok(o.into()))
    }

    /// Removes members by identity; returns the commit for the remaining members.
    #[napi(ts_return_type = "Promise<CommitResult>")]
    pub fn remove_members(
        &self,
        identities: Vec<String>,
    ) -> AsyncTask<CoreTask<skytale_core::CommitOutput, CommitResult>> {
        let (handle, name) = (self.handle.clone(), self.name.clone());
        CoreTask::spawn(
            move || handle.get()?.remove_members(&name, &identities, CommitMode::Merge),
            |_, o| Ok(o.into()),
        )
    }

    /// Rotates this agent's keys (a self-update commit): a new epoch with fresh secrets.
    #[napi(ts_return_type = "Promise<CommitResult>")]
    pub fn rotate_key(&self) -> AsyncTask<CoreTask<skytale_core::CommitOutput, CommitResult>> {
        let (handle, name) = (self.handle.clone(), self.name.clone());
        CoreTask::spawn(move || handle.get()?.rotate_key(&name, CommitMode::Merge), |_, o| Ok(o.into()))
    }

    /// Encrypts `data` for the channel's members; returns the MLS message to deliver.
    #[napi(ts_return_type = "Promise<Uint8Array>")]
    pub fn encrypt(&self, data: Uint8Array) -> AsyncTask<CoreTask<Vec<u8>, Uint8Array>> {
        let (handle, name) = (self.handle.clone(), self.name.clone());
        let data = data.to_vec();
        CoreTask::spawn(move || handle.get()?.encrypt(&name, &data), |_, v| Ok(Uint8Array::from(v)))
    }

    /// Processes an incoming MLS message: decrypts an application message, merges a commit
    /// or stores a proposal. Nothing changes when it rejects (`SKYTALE_DECRYPT_FAILED`,
    /// `SKYTALE_REPLAY`, `SKYTALE_WRONG_EPOCH`, `SKYTALE_NOT_A_MEMBER`,
    /// `SKYTALE_INVALID_MESSAGE`).
    #[napi(ts_return_type = "Promise<IncomingEvent>")]
    pub fn process_incoming(&self, wire: Uint8Array) -> AsyncTask<CoreTask<skytale_core::Incoming, IncomingEvent>> {
        let (handle, name) = (self.handle.clone(), self.name.clone());
        let wire = wire.to_vec();
        CoreTask::spawn(move || handle.get()?.process_incoming(&name, &wire), |_, ev| Ok(ev.into()))
    }

    /// Encrypts several messages for the channel's members in one call and one keystore
    /// transaction; returns their MLS messages, in order. All or nothing: when it rejects
    /// (`err.index` names the message that failed, if one did) no message was encrypted.
    #[napi(ts_return_type = "Promise<Uint8Array[]>")]
    pub fn encrypt_batch(&self, data: Vec<Uint8Array>) -> AsyncTask<CoreTask<Vec<Vec<u8>>, Vec<Uint8Array>>> {
        let (handle, name) = (self.handle.clone(), self.name.clone());
        let data: Vec<Vec<u8>> = data.iter().map(|d| d.to_vec()).collect();
        CoreTask::spawn_batch(
            move || {
                let plaintexts: Vec<&[u8]> = data.iter().map(Vec::as_slice).collect();
                handle.get()?.encrypt_all(&name, &plaintexts)
            },
            |_, v| Ok(v.into_iter().map(Uint8Array::from).collect()),
        )
    }

    /// Processes several incoming MLS messages, in order, in one call and one keystore
    /// transaction; returns one event per message. All or nothing: when one fails the promise
    /// rejects with its error (`err.index` says which) and nothing changed — not even for the
    /// messages before it; call `processIncoming` from there to get past it.
    #[napi(ts_return_type = "Promise<IncomingEvent[]>")]
    pub fn process_incoming_batch(
        &self,
        wires: Vec<Uint8Array>,
    ) -> AsyncTask<CoreTask<Vec<skytale_core::Incoming>, Vec<IncomingEvent>>> {
        let (handle, name) = (self.handle.clone(), self.name.clone());
        let wires: Vec<Vec<u8>> = wires.iter().map(|w| w.to_vec()).collect();
        CoreTask::spawn_batch(
            move || {
                let wires: Vec<&[u8]> = wires.iter().map(Vec::as_slice).collect();
                handle.get()?.process_incoming_all(&name, &wires)
            },
            |_, evs| Ok(evs.into_iter().map(IncomingEvent::from).collect()),
        )
    }

    /// A signed GroupInfo of the current epoch with the ratchet tree (MLS message bytes), from
    /// which a new member can join by an external commit.
    #[napi(ts_return_type = "Promise<Uint8Array>")]
    pub fn export_group_info(&self) -> AsyncTask<CoreTask<Vec<u8>, Uint8Array>> {
        let (handle, name) = (self.handle.clone(), self.name.clone());
        CoreTask::spawn(move || handle.get()?.export_group_info(&name), |_, v| Ok(Uint8Array::from(v)))
    }

    /// Identities of the current members.
    #[napi(ts_return_type = "Promise<string[]>")]
    pub fn members(&self) -> AsyncTask<CoreTask<Vec<String>, Vec<String>>> {
        let (handle, name) = (self.handle.clone(), self.name.clone());
        CoreTask::spawn(move || handle.get()?.members(&name), same)
    }

    /// Each member's identity → fingerprint of its signature key, for out-of-band checks.
    #[napi(ts_return_type = "Promise<Record<string, string>>")]
    pub fn member_fingerprints(&self) -> AsyncTask<CoreTask<Fingerprints, std::collections::HashMap<String, String>>> {
        let (handle, name) = (self.handle.clone(), self.name.clone());
        CoreTask::spawn(move || handle.get()?.member_fingerprints(&name), |_, v| Ok(v.into_iter().collect()))
    }

    /// Whether this agent is still a member (false after being removed).
    #[napi(ts_return_type = "Promise<boolean>")]
    pub fn is_member(&self) -> AsyncTask<CoreTask<bool, bool>> {
        let (handle, name) = (self.handle.clone(), self.name.clone());
        CoreTask::spawn(move || handle.get()?.is_member(&name), same)
    }

    /// Derives `length` bytes from the current epoch's exporter secret (RFC 9420 §8.5); every
    /// member derives the same bytes for the same label and context.
    #[napi(ts_return_type = "Promise<Uint8Array>")]
    pub fn export_secret(
        &self,
        label: String,
        length: u32,
        context: Option<Uint8Array>,
    ) -> AsyncTask<CoreTask<Vec<u8>, Uint8Array>> {
        let (handle, name) = (self.handle.clone(), self.name.clone());
        let context = context.map(|c| c.to_vec()).unwrap_or_default();
        CoreTask::spawn(
            move || Ok(handle.get()?.export_secret(&name, &label, &context, length as usize)?.to_vec()),
            |_, v| Ok(Uint8Array::from(v)),
        )
    }
}
