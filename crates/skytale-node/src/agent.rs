//! The `Agent` class: open a keystore, make key packages, create and join channels.

use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use napi::bindgen_prelude::*;
use napi_derive::napi;
use skytale_core::{Agent as CoreAgent, AgentOptions, Error as CoreError, KeystoreSecret, Passphrase, SecretKey32};
use std::result::Result;

use crate::channel::Channel;
use crate::errors::{closed, sync_error, SyncError};
use crate::task::{same, CoreTask};
use crate::types::AgentOpenOptions;

/// Shared by an agent and its channels; `close()` empties it.
pub(crate) struct Handle {
    core: RwLock<Option<Arc<CoreAgent>>>,
}

impl Handle {
    /// The open core agent, or `SKYTALE_INVALID_STATE` after `close()`.
    pub(crate) fn get(&self) -> Result<Arc<CoreAgent>, CoreError> {
        self.core.read().map_err(|_| CoreError::Internal("lock poisoned".into()))?.clone().ok_or_else(closed)
    }
}

/// An agent: one identity with its encrypted keystore and its channels.
#[napi]
pub struct Agent {
    handle: Arc<Handle>,
    identity: String,
    cipher_version: String,
    fingerprint: String,
}

#[napi]
impl Agent {
    /// Opens the agent stored in `dataDir`, creating keystore and identity on first use.
    ///
    /// Rejects with `SKYTALE_KEYSTORE_WRONG_KEY` (wrong key or passphrase),
    /// `SKYTALE_KEYSTORE_CORRUPT`, `SKYTALE_KEYSTORE_LOCKED` (open in another process),
    /// `SKYTALE_IDENTITY_MISMATCH` or `SKYTALE_INVALID_ARGUMENT`.
    #[napi(ts_return_type = "Promise<Agent>")]
    pub fn open(options: AgentOpenOptions) -> AsyncTask<CoreTask<Agent, Agent>> {
        let secret = match (options.keystore_key.as_ref(), options.passphrase) {
            (Some(key), None) => SecretKey32::from_slice(key).map(KeystoreSecret::Key),
            (None, Some(pass)) => Passphrase::new(pass).map(KeystoreSecret::Passphrase),
            _ => Err(CoreError::InvalidArgument("give exactly one of keystoreKey and passphrase".into())),
        };
        let data_dir = PathBuf::from(options.data_dir);
        let identity = options.identity;
        CoreTask::spawn(
            move || {
                let secret = secret?;
                let core = CoreAgent::open(AgentOptions { data_dir: &data_dir, identity: &identity, secret: &secret })?;
                let cipher_version = core.cipher_version().to_string();
                let fingerprint = core.fingerprint()?;
                Ok(Agent {
                    handle: Arc::new(Handle { core: RwLock::new(Some(Arc::new(core))) }),
                    identity,
                    cipher_version,
                    fingerprint,
                })
            },
            same,
        )
    }

    /// The open core agent (for the client), or an error after `close()`.
    pub(crate) fn core(&self) -> Result<Arc<CoreAgent>, skytale_client::ClientError> {
        self.handle.get().map_err(skytale_client::ClientError::from)
    }

    /// The agent's identity.
    #[napi(getter)]
    pub fn identity(&self) -> String {
        self.identity.clone()
    }

    /// Fingerprint of this agent's MLS signature key (`"a1b2 c3d4 …"`, SHA-256 based): compare
    /// it out of band with what other members see in `memberFingerprints()`.
    #[napi(getter)]
    pub fn fingerprint(&self) -> String {
        self.fingerprint.clone()
    }

    /// This agent's credential from the API server (a compact JWS), or `null` before it
    /// connected once.
    #[napi(ts_return_type = "Promise<string | null>")]
    pub fn credential(&self) -> AsyncTask<CoreTask<Option<String>, Option<String>>> {
        let handle = self.handle.clone();
        CoreTask::spawn(move || handle.get()?.credential(), same)
    }

    /// The SQLCipher version of the keystore (non-empty: the store is encrypted).
    #[napi(getter)]
    pub fn cipher_version(&self) -> String {
        self.cipher_version.clone()
    }

    /// Generates `count` single-use KeyPackages that others use to add this agent.
    #[napi(ts_return_type = "Promise<Uint8Array[]>")]
    pub fn generate_key_packages(&self, count: u32) -> AsyncTask<CoreTask<Vec<Vec<u8>>, Vec<Uint8Array>>> {
        let handle = self.handle.clone();
        CoreTask::spawn(
            move || handle.get()?.generate_key_packages(count),
            |_, kps| Ok(kps.into_iter().map(Uint8Array::from).collect()),
        )
    }

    /// Creates a channel named `org/namespace/service` with this agent as its only member.
    ///
    /// Rejects with `SKYTALE_INVALID_CHANNEL_NAME` or `SKYTALE_CHANNEL_EXISTS`.
    #[napi(ts_return_type = "Promise<Channel>")]
    pub fn create_channel(&self, name: String) -> AsyncTask<CoreTask<Channel, Channel>> {
        let handle = self.handle.clone();
        CoreTask::spawn(
            move || {
                handle.get()?.create_channel(&name)?;
                Ok(Channel::new(handle, name))
            },
            same,
        )
    }

    /// Joins a channel from a Welcome produced by `channel.addMembers`.
    ///
    /// Rejects with `SKYTALE_KEY_PACKAGE_USED` when the Welcome is for a key package that was
    /// already used, `SKYTALE_CHANNEL_EXISTS` when already a member.
    #[napi(ts_return_type = "Promise<Channel>")]
    pub fn join_channel(&self, welcome: Uint8Array) -> AsyncTask<CoreTask<Channel, Channel>> {
        let handle = self.handle.clone();
        let welcome = welcome.to_vec();
        CoreTask::spawn(
            move || {
                let name = handle.get()?.join_channel(&welcome)?;
                Ok(Channel::new(handle, name))
            },
            same,
        )
    }

    /// Returns a handle on an existing channel. Throws `SKYTALE_CHANNEL_NOT_FOUND`.
    #[napi]
    pub fn channel(&self, name: String) -> Result<Channel, SyncError> {
        let core = self.handle.get().map_err(sync_error)?;
        if !core.has_channel(&name).map_err(sync_error)? {
            return Err(sync_error(CoreError::ChannelNotFound(name)));
        }
        Ok(Channel::new(self.handle.clone(), name))
    }

    /// Names of all channels in this agent's keystore.
    #[napi(ts_return_type = "Promise<string[]>")]
    pub fn channels(&self) -> AsyncTask<CoreTask<Vec<String>, Vec<String>>> {
        let handle = self.handle.clone();
        CoreTask::spawn(move || handle.get()?.channel_names(), same)
    }

    /// Sets how many past epochs' secrets channels created or joined from now on keep (0–16,
    /// default 1; channels already held keep theirs). Keep 1 when messages may reach
    /// `processIncoming` in another order than the relay's; 0 when every message is processed
    /// in relay order and an own commit is merged only after what was ordered before it (better
    /// forward secrecy, less state written per message: a message then decrypts only in its own
    /// epoch). `Client.connect` sets 0. Throws `SKYTALE_INVALID_ARGUMENT` above 16.
    #[napi]
    pub fn set_past_epochs(&self, past_epochs: u32) -> Result<(), SyncError> {
        self.handle.get().map_err(sync_error)?.set_past_epochs(past_epochs as usize).map_err(sync_error)
    }

    /// Closes the keystore. Calls still running finish first; later calls reject with
    /// `SKYTALE_INVALID_STATE`. The data directory can then be opened again.
    #[napi]
    pub fn close(&self) -> Result<(), SyncError> {
        let mut guard =
            self.handle.core.write().map_err(|_| sync_error(CoreError::Internal("lock poisoned".into())))?;
        guard.take();
        Ok(())
    }
}
