//! Batched hot paths: many delivered items processed, or many messages encrypted, in one
//! keystore transaction (one fsync) instead of one each. Every item keeps its own guarantees:
//! each processed item sits in a savepoint, so a failing one changes nothing of its own and the
//! others still commit; what its failure means is recorded in the same transaction (see
//! [`super::fork::after_failure`]: a consumed commit slot, fork evidence, garbage), so a crash
//! neither loses nor repeats anything. An item built on an epoch this member does not have yet
//! stops the batch: nothing after it is processed until the missing commit is.
//!
//! The `*_all` calls of the offline API are all or nothing instead: one transaction, rolled
//! back as a whole when an item fails, with the failing item's index in [`BatchError`].

use super::{ensure_ready, fork, me, parse_protocol, serialize, Agent, Delivery};
use crate::error::{Error, Result};
use crate::events::Incoming;
use crate::provider::Provider;

impl Agent {
    /// Processes delivered items of one channel, in order, in one transaction. Returns one
    /// result per processed item. A failed item changes no MLS state; a rejected commit still
    /// consumes its slot (seq and relay epoch advance). An item that is behind (built on an
    /// epoch this member does not have: [`crate::Failure::Behind`]) is returned as the last
    /// result: the items after it are not processed and its position is not recorded.
    pub fn process_delivered_batch(&self, name: &str, items: &[(Vec<u8>, Delivery)]) -> Result<Vec<Result<Incoming>>> {
        if items.is_empty() {
            return Ok(Vec::new());
        }
        let mut inner = self.lock()?;
        // An acknowledgement the app noted rides along (one transaction instead of two).
        let ack = self.take_pending_ack(name);
        let res = inner.transaction(Some(name), |inner| {
            if let Some(seq) = ack {
                super::acks::delete_acked(inner.store.conn(), name, seq)?;
            }
            let mut out = Vec::with_capacity(items.len());
            for (wire, delivery) in items {
                inner.store.conn().prepare_cached("SAVEPOINT skytale_item")?.execute([])?;
                let res = match inner.group(name) {
                    Ok(_) => {
                        parse_protocol(wire).and_then(|p| fork::process_delivered_one(inner, name, p, wire, *delivery))
                    }
                    Err(e) => Err(e),
                };
                match res {
                    Ok(ev) => {
                        inner.store.conn().prepare_cached("RELEASE skytale_item")?.execute([])?;
                        out.push(Ok(ev));
                    }
                    Err(e) => {
                        inner.store.conn().execute_batch("ROLLBACK TO skytale_item; RELEASE skytale_item")?;
                        // The cached group may hold a half-applied change: reload it (inside this
                        // transaction it reads the state as of the savepoint).
                        inner.groups.remove(name);
                        let after = fork::after_failure(inner.store.conn(), name, wire, delivery, &e)?;
                        out.push(Err(e));
                        if after == fork::After::Stop {
                            break;
                        }
                    }
                }
            }
            Ok(out)
        });
        if let (Err(_), Some(seq)) = (&res, ack) {
            self.restore_acks([(name.to_string(), seq)]);
        }
        res
    }

    /// Encrypts several application messages for the channel, in order, in one transaction.
    /// All or nothing: on an error no message is produced and nothing changes.
    pub fn encrypt_batch(&self, name: &str, plaintexts: &[&[u8]]) -> Result<Vec<Vec<u8>>> {
        self.encrypt_all(name, plaintexts).map_err(|f| f.error)
    }

    /// [`Agent::encrypt_batch`], saying which message an error belongs to (a message too large
    /// to pad, say).
    pub fn encrypt_all(&self, name: &str, plaintexts: &[&[u8]]) -> std::result::Result<Vec<Vec<u8>>, BatchError> {
        let mut failed = None;
        let mut inner = self.lock()?;
        inner
            .transaction(Some(name), |inner| {
                let (crypto, conn, signer) = (&inner.crypto, inner.store.conn(), &inner.signer);
                let group = inner.groups.get_mut(name).ok_or_else(|| Error::ChannelNotFound(name.to_string()))?;
                ensure_ready(name, group)?;
                let provider = Provider::new(crypto, conn);
                let mut out = Vec::with_capacity(plaintexts.len());
                for (i, p) in plaintexts.iter().enumerate() {
                    failed = Some(i);
                    let padded = crate::envelope::pad(p)?;
                    fork::tag_outgoing(conn, name, group)?;
                    let msg = group
                        .create_message(&provider, signer, &padded)
                        .map_err(|e| me::create_message_error(name, e))?;
                    out.push(serialize(&msg)?);
                }
                failed = None;
                Ok(out)
            })
            .map_err(|error| BatchError { item: failed, error })
    }

    /// Processes several incoming MLS messages of the channel, in order, in one transaction
    /// (what [`Agent::process_incoming`] does for one). All or nothing: when one fails the
    /// error says which, and nothing changes (the ones before it are not processed either);
    /// process from there one by one to get past it.
    pub fn process_incoming_all(&self, name: &str, wires: &[&[u8]]) -> std::result::Result<Vec<Incoming>, BatchError> {
        let mut failed = None;
        let mut inner = self.lock()?;
        inner
            .transaction(Some(name), |inner| {
                let mut out = Vec::with_capacity(wires.len());
                for (i, wire) in wires.iter().enumerate() {
                    failed = Some(i);
                    let protocol = parse_protocol(wire)?;
                    out.push(super::process_one(inner, name, protocol, None)?);
                }
                failed = None;
                Ok(out)
            })
            .map_err(|error| BatchError { item: failed, error })
    }
}

/// A refused batch: the error and, when one item caused it, that item's index. Nothing of the
/// batch was applied.
#[derive(Debug)]
pub struct BatchError {
    /// Index of the item that failed; `None` when the batch failed as a whole (a closed agent,
    /// an unknown channel, a storage failure).
    pub item: Option<usize>,
    /// What went wrong.
    pub error: Error,
}

impl From<Error> for BatchError {
    fn from(error: Error) -> Self {
        BatchError { item: None, error }
    }
}

impl std::fmt::Display for BatchError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.item {
            Some(i) => write!(f, "item {i}: {}", self.error),
            None => self.error.fmt(f),
        }
    }
}

impl std::error::Error for BatchError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.error)
    }
}
