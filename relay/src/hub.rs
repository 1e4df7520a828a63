//! Connection registry for pushes: per-connection control flags, the subscriber handle a
//! channel actor pushes into, and the map of online identities (for live welcomes and
//! revocation). Channel subscriptions live in the channel actors ([`crate::channel`]).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use tokio::sync::{mpsc, Notify};

/// Per-connection control shared with the hub (slow-consumer signalling).
#[derive(Default)]
pub struct SessionCtl {
    /// Set when a push could not be queued because the connection's queue was full.
    pub slow: AtomicBool,
    /// Set when the token that opened the session was revoked (API key or agent).
    pub revoked: AtomicBool,
    /// Wakes the session when `slow` or `revoked` was set.
    pub notify: Notify,
}

/// A connection registered for pushes.
#[derive(Clone)]
pub struct Subscriber {
    /// The connection's identity (never-echo rule).
    pub identity: String,
    /// The connection's push queue (pre-encoded frames, shared by all recipients).
    pub tx: mpsc::Sender<Bytes>,
    /// Slow-consumer signalling.
    pub ctl: Arc<SessionCtl>,
    /// API key id that minted the session's token (`akid` claim), for revocation.
    pub akid: Option<String>,
    /// Issue time of the session's token (unix seconds), for agent revocation.
    pub iat: u64,
}

impl Subscriber {
    /// Queues a pre-encoded frame; marks the connection slow if its queue is full.
    pub fn push(&self, frame: Bytes) {
        if let Err(mpsc::error::TrySendError::Full(_)) = self.tx.try_send(frame) {
            self.ctl.slow.store(true, Ordering::SeqCst);
            self.ctl.notify.notify_one();
        }
    }
}

type OnlineMap = HashMap<(String, String), HashMap<u64, Subscriber>>;

/// Online identities: (org, identity) → connection id → subscriber. Its own small lock,
/// held only for map updates and welcome pushes (never across IO or storage).
#[derive(Default)]
pub struct Online {
    map: Mutex<OnlineMap>,
}

impl Online {
    fn lock(&self) -> MutexGuard<'_, OnlineMap> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers (or re-registers, with a refreshed token) a connection.
    pub fn register(&self, org: &str, identity: &str, conn_id: u64, sub: Subscriber) {
        self.lock().entry((org.to_string(), identity.to_string())).or_default().insert(conn_id, sub);
    }

    /// Removes a connection.
    pub fn remove(&self, org: &str, identity: &str, conn_id: u64) {
        let mut map = self.lock();
        let key = (org.to_string(), identity.to_string());
        if let Some(m) = map.get_mut(&key) {
            m.remove(&conn_id);
            if m.is_empty() {
                map.remove(&key);
            }
        }
    }

    /// Whether an identity has a connection (so a push is worth encoding).
    pub fn is_online(&self, org: &str, identity: &str) -> bool {
        self.lock().contains_key(&(org.to_string(), identity.to_string()))
    }

    /// Pushes a frame to every connection of an identity.
    pub fn push(&self, org: &str, identity: &str, frame: &Bytes) {
        if let Some(conns) = self.lock().get(&(org.to_string(), identity.to_string())) {
            for sub in conns.values() {
                sub.push(frame.clone());
            }
        }
    }

    /// Calls `f(org, identity, subscriber)` for every online connection.
    pub fn for_each(&self, mut f: impl FnMut(&str, &str, &Subscriber)) {
        for ((org, identity), conns) in self.lock().iter() {
            for sub in conns.values() {
                f(org, identity, sub);
            }
        }
    }
}
