//! Fork detection (issue #10). A relay can Ack a commit and never deliver it, or deliver
//! different commits to different members; then members silently hold different states of
//! "the same" epoch. Three checks make that visible:
//!
//! - **Epoch authenticators in application messages.** Every application message this agent
//!   makes carries, in its MLS authenticated data (`set_aad`, covered by the AEAD and the
//!   sender's signature), a tag byte, the sender's epoch and the first [`AUTH_LEN`] bytes of
//!   its epoch authenticator (RFC 9420 §8.7). A receiver that decrypts a message of an epoch
//!   it holds compares the authenticator with its own; a message that does not decrypt but
//!   names, in its clear authenticated data, an epoch this member holds with another
//!   authenticator is evidence too (unauthenticated: it only triggers a check against the
//!   relay's archive). Honest members can be an epoch behind while a commit is in flight:
//!   only same-epoch authenticators are compared.
//! - **Commit slots.** The relay orders commits into slots (the relay epoch). Each member
//!   records the hash of the commit that filled each slot it passed; a second, different
//!   commit delivered for a filled slot is a fork (the same commit again is a replay).
//! - **Behind.** An item built on an epoch this member does not have means a commit before it
//!   is missing: processing stops there (nothing after it is skipped) so the driver can fetch
//!   the missing commit, or resync when the relay's archive does not have it for this member.
//!
//! Failures of delivered items are classified by [`failure_kind`]; only truly unprocessable
//! items are counted as skipped ([`Agent::skipped`]).

use openmls::prelude::*;
use rusqlite::{params, Connection, OptionalExtension};
use sha2::{Digest, Sha256};

use super::{parse_protocol, process_one, record_position, Agent, Delivery, Inner};
use crate::error::{Error, Result};
use crate::events::Incoming;

/// Bytes of the epoch authenticator carried in each application message.
pub const AUTH_LEN: usize = 16;
/// First byte of the fork-detection authenticated data (version 1).
const AAD_TAG: u8 = 0xF1;
/// Length of the fork-detection authenticated data: tag, epoch (u64 BE), authenticator.
const AAD_LEN: usize = 1 + 8 + AUTH_LEN;
/// How many past epochs' authenticators are kept (more than the past epochs whose messages
/// can still be decrypted).
const KEEP_EPOCHS: u64 = 16;
/// How many past commit slots are kept.
const KEEP_SLOTS: u64 = 64;

/// What a delivered item that could not be processed means for the channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// It can never be processed here (not a message of this channel, a replay, undecryptable
    /// without evidence of a fork, from before this member resynced). Counted as skipped.
    Garbage,
    /// A well-formed commit the members refuse: its relay slot is consumed, as for everyone.
    EmptySlot,
    /// Built on an epoch this member does not have: a commit before it is missing.
    Behind,
    /// Evidence that members hold different states of one epoch.
    Fork,
}

/// Classifies the error of a delivered item.
pub fn failure_kind(e: &Error) -> Failure {
    match e {
        Error::Fork { .. } => Failure::Fork,
        Error::WrongEpoch { message_epoch, current_epoch } if message_epoch > current_epoch => Failure::Behind,
        Error::CredentialInvalid(_) | Error::PolicyDenied(_) | Error::Invite { .. } => Failure::EmptySlot,
        _ => Failure::Garbage,
    }
}

fn truncated(group: &MlsGroup) -> [u8; AUTH_LEN] {
    let mut out = [0u8; AUTH_LEN];
    let full = group.epoch_authenticator().as_slice();
    let n = full.len().min(AUTH_LEN);
    out[..n].copy_from_slice(&full[..n]);
    out
}

fn parse_aad(aad: &[u8]) -> Option<(u64, [u8; AUTH_LEN])> {
    if aad.len() != AAD_LEN || aad[0] != AAD_TAG {
        return None;
    }
    let epoch = u64::from_be_bytes(aad[1..9].try_into().ok()?);
    let auth: [u8; AUTH_LEN] = aad[9..].try_into().ok()?;
    Some((epoch, auth))
}

fn auth_prefix(name: &str) -> String {
    format!("fork/auth/{name}/")
}

fn auth_key(name: &str, epoch: u64) -> String {
    format!("fork/auth/{name}/{epoch:016x}")
}

fn slot_prefix(name: &str) -> String {
    format!("fork/slot/{name}/")
}

fn slot_key(name: &str, slot: u64) -> String {
    format!("fork/slot/{name}/{slot:016x}")
}

fn heal_key(name: &str) -> String {
    format!("fork/resynced-at/{name}")
}

fn skipped_key(name: &str) -> String {
    format!("fork/skipped/{name}")
}

fn kv_get(conn: &Connection, key: &str) -> Result<Option<Vec<u8>>> {
    Ok(conn.prepare_cached("SELECT value FROM skytale_kv WHERE key = ?1")?.query_row([key], |r| r.get(0)).optional()?)
}

fn kv_put(conn: &Connection, key: &str, value: &[u8]) -> Result<()> {
    conn.prepare_cached(
        "INSERT INTO skytale_kv (key, value) VALUES (?1, ?2) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
    )?
    .execute(params![key, value])?;
    Ok(())
}

fn kv_u64(conn: &Connection, key: &str) -> Result<u64> {
    Ok(kv_get(conn, key)?.and_then(|v| <[u8; 8]>::try_from(v.as_slice()).ok()).map(u64::from_be_bytes).unwrap_or(0))
}

/// Deletes the keys of `prefix` that sort below `bound` (keys end in fixed-width hex numbers).
fn prune(conn: &Connection, prefix: &str, bound: &str) -> Result<()> {
    conn.execute("DELETE FROM skytale_kv WHERE key >= ?1 AND key < ?2", params![prefix, bound])?;
    Ok(())
}

/// The hash by which commit slots are compared.
pub fn commit_hash(wire: &[u8]) -> [u8; 32] {
    Sha256::digest(wire).into()
}

/// Remembers the current epoch's authenticator (to check late messages of that epoch).
pub(super) fn remember_epoch(conn: &Connection, name: &str, group: &MlsGroup) -> Result<()> {
    let epoch = group.epoch().as_u64();
    let added = conn
        .prepare_cached("INSERT OR IGNORE INTO skytale_kv (key, value) VALUES (?1, ?2)")?
        .execute(params![auth_key(name, epoch), truncated(group).to_vec()])?;
    if added > 0 && epoch > KEEP_EPOCHS {
        prune(conn, &auth_prefix(name), &auth_key(name, epoch - KEEP_EPOCHS))?;
    }
    Ok(())
}

/// Sets the fork-detection authenticated data for the next application message and remembers
/// the epoch's authenticator.
pub(super) fn tag_outgoing(conn: &Connection, name: &str, group: &mut MlsGroup) -> Result<()> {
    remember_epoch(conn, name, group)?;
    let mut aad = Vec::with_capacity(AAD_LEN);
    aad.push(AAD_TAG);
    aad.extend_from_slice(&group.epoch().as_u64().to_be_bytes());
    aad.extend_from_slice(&truncated(group));
    group.set_aad(aad);
    Ok(())
}

/// This member's authenticator of `epoch`, if it still knows it.
fn auth_of(conn: &Connection, name: &str, group: &MlsGroup, epoch: u64) -> Result<Option<[u8; AUTH_LEN]>> {
    if epoch == group.epoch().as_u64() {
        return Ok(Some(truncated(group)));
    }
    Ok(kv_get(conn, &auth_key(name, epoch))?.and_then(|v| <[u8; AUTH_LEN]>::try_from(v.as_slice()).ok()))
}

fn fork(name: &str, group: &MlsGroup, remote_epoch: u64, reason: &str) -> Error {
    Error::Fork {
        channel: name.to_string(),
        local_epoch: group.epoch().as_u64(),
        remote_epoch,
        reason: reason.to_string(),
    }
}

/// Checks the authenticated data of a decrypted application message: it must carry the
/// message's epoch and, for an epoch this member holds, the same epoch authenticator.
pub(super) fn check_processed(
    conn: &Connection,
    name: &str,
    group: &MlsGroup,
    processed: &ProcessedMessage,
) -> Result<()> {
    if !matches!(processed.content(), ProcessedMessageContent::ApplicationMessage(_)) {
        return Ok(());
    }
    let (epoch, auth) = parse_aad(processed.aad())
        .ok_or_else(|| Error::InvalidMessage("application message without an epoch authenticator".into()))?;
    if epoch != processed.epoch().as_u64() {
        return Err(Error::InvalidMessage("the authenticated epoch is not the message's epoch".into()));
    }
    match auth_of(conn, name, group, epoch)? {
        Some(mine) if mine != auth => {
            Err(fork(name, group, epoch, "an authenticated message carries another authenticator of this epoch"))
        }
        _ => Ok(()),
    }
}

/// The clear authenticated data of a channel message (unauthenticated until it decrypts).
pub(super) fn clear_aad(protocol: &ProtocolMessage) -> Option<Vec<u8>> {
    match protocol {
        ProtocolMessage::PrivateMessage(p) => Some(p.aad().to_vec()),
        ProtocolMessage::PublicMessage(_) => None,
    }
}

/// Turns a decryption failure into fork evidence when the message names, in its clear
/// authenticated data, an epoch this member holds with another authenticator.
pub(super) fn evidence(conn: &Connection, name: &str, group: &MlsGroup, aad: Option<&[u8]>, err: Error) -> Error {
    if !matches!(err, Error::DecryptFailed(_)) {
        return err;
    }
    let Some((epoch, auth)) = aad.and_then(parse_aad) else { return err };
    match auth_of(conn, name, group, epoch) {
        Ok(Some(mine)) if mine != auth => fork(
            name,
            group,
            epoch,
            "a message of an epoch this member holds does not decrypt and names another authenticator",
        ),
        _ => err,
    }
}

/// Checks a delivered commit against the slots this member already filled: a commit for a
/// filled slot is a replay (same commit) or a fork (another one).
pub(super) fn check_slot(conn: &Connection, name: &str, group: &MlsGroup, wire: &[u8], d: &Delivery) -> Result<()> {
    let slot = d.relay_epoch.saturating_sub(1);
    let relay_epoch: Option<i64> = conn
        .prepare_cached("SELECT relay_epoch FROM skytale_channels WHERE name = ?1")?
        .query_row([name], |r| r.get(0))
        .optional()?
        .flatten();
    let filled = relay_epoch.map(|e| e as u64).unwrap_or(0);
    if slot >= filled {
        return Ok(());
    }
    match kv_get(conn, &slot_key(name, slot))? {
        Some(v) if v.get(8..) == Some(&commit_hash(wire)[..]) => Err(Error::Replay),
        Some(_) => Err(fork(
            name,
            group,
            group.epoch().as_u64(),
            &format!("a second, different commit was delivered for relay slot {slot}"),
        )),
        None => Err(Error::InvalidMessage(format!("a commit for relay slot {slot}, before this member's history"))),
    }
}

/// Records which commit filled relay slot `slot` (delivered under `seq`).
pub(super) fn record_slot(conn: &Connection, name: &str, slot: u64, seq: u64, wire: &[u8]) -> Result<()> {
    let mut value = seq.to_be_bytes().to_vec();
    value.extend_from_slice(&commit_hash(wire));
    kv_put(conn, &slot_key(name, slot), &value)?;
    if slot > KEEP_SLOTS {
        prune(conn, &slot_prefix(name), &slot_key(name, slot - KEEP_SLOTS))?;
    }
    Ok(())
}

/// Processes one delivered item inside the caller's transaction: a commit is first checked
/// against the slots this member filled, and recorded in its slot once applied.
pub(super) fn process_delivered_one(
    inner: &mut Inner,
    name: &str,
    protocol: ProtocolMessage,
    wire: &[u8],
    d: Delivery,
) -> Result<Incoming> {
    let commit = protocol.content_type() == ContentType::Commit;
    if commit {
        inner.group(name)?;
        let group = inner.groups.get(name).ok_or_else(|| Error::ChannelNotFound(name.to_string()))?;
        check_slot(inner.store.conn(), name, group, wire, &d)?;
    }
    let event = process_one(inner, name, protocol, Some(d))?;
    if commit && d.relay_epoch > 0 {
        record_slot(inner.store.conn(), name, d.relay_epoch - 1, d.seq, wire)?;
    }
    Ok(event)
}

fn is_commit(wire: &[u8]) -> bool {
    parse_protocol(wire).map(|p| p.content_type() == ContentType::Commit).unwrap_or(false)
}

/// Whether processing of the rest of a batch goes on after a failed item.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum After {
    /// Go on with the next item.
    Continue,
    /// Stop: the item waits for a missing commit (nothing after it is processed).
    Stop,
}

/// Records what a failed delivered item means (inside the batch's transaction, after its
/// savepoint was rolled back): a consumed slot, fork evidence or garbage advance the
/// channel's position as appropriate; an item that is behind stops the batch.
pub(super) fn after_failure(conn: &Connection, name: &str, wire: &[u8], d: &Delivery, e: &Error) -> Result<After> {
    let resynced_at = kv_u64(conn, &heal_key(name))?;
    if d.seq <= resynced_at {
        // From before this member resynced: it belongs to epochs it no longer holds.
        record_position(conn, name, *d)?;
        count_skipped(conn, name, d.seq)?;
        return Ok(After::Continue);
    }
    match failure_kind(e) {
        Failure::Behind => Ok(After::Stop),
        Failure::Fork => {
            record_position(conn, name, *d)?;
            count_skipped(conn, name, d.seq)?;
            Ok(After::Continue)
        }
        Failure::EmptySlot => {
            record_position(conn, name, *d)?;
            if is_commit(wire) {
                record_slot(conn, name, d.relay_epoch.saturating_sub(1), d.seq, wire)?;
            }
            Ok(After::Continue)
        }
        Failure::Garbage => {
            // A commit for the next slot that members cannot apply still took the slot for
            // everyone (all members fail it alike). Anything else is not recorded: a relay
            // could inject garbage under the seq of a real item, which must stay processable.
            let filled: Option<i64> = conn
                .prepare_cached("SELECT relay_epoch FROM skytale_channels WHERE name = ?1")?
                .query_row([name], |r| r.get(0))
                .optional()?
                .flatten();
            let next_slot = d.relay_epoch.saturating_sub(1) == filled.map(|f| f as u64).unwrap_or(0);
            if !matches!(e, Error::Replay) && next_slot && d.relay_epoch > 0 && is_commit(wire) {
                record_position(conn, name, *d)?;
                record_slot(conn, name, d.relay_epoch - 1, d.seq, wire)?;
            }
            count_skipped(conn, name, d.seq)?;
            Ok(After::Continue)
        }
    }
}

/// Counts one skipped item (once per seq: items re-fetched after a gap are not counted twice).
fn count_skipped(conn: &Connection, name: &str, seq: u64) -> Result<()> {
    let key = skipped_key(name);
    let (count, last) = match kv_get(conn, &key)? {
        Some(v) if v.len() == 16 => {
            let c = u64::from_be_bytes(v[..8].try_into().unwrap_or([0; 8]));
            let l = u64::from_be_bytes(v[8..].try_into().unwrap_or([0; 8]));
            (c, l)
        }
        _ => (0, 0),
    };
    if seq <= last {
        return Ok(());
    }
    let mut value = (count + 1).to_be_bytes().to_vec();
    value.extend_from_slice(&seq.to_be_bytes());
    kv_put(conn, &key, &value)
}

/// Checks the removes of an external commit: it may remove only leaves of the joiner's own
/// identity (a member resyncing replaces its old leaf); returns whether it is such a resync.
pub(super) fn check_external_removes(
    group: &MlsGroup,
    staged: &StagedCommit,
    joiner: &str,
    external: bool,
) -> Result<bool> {
    if !external {
        return Ok(false);
    }
    let mut resync = false;
    for p in staged.remove_proposals() {
        let removed = group.member(p.remove_proposal().removed()).map(super::credential_identity);
        match removed {
            Some(id) if id == joiner => resync = true,
            _ => {
                return Err(Error::CredentialInvalid(
                    "an external commit may remove only the joiner's own old leaf".into(),
                ))
            }
        }
    }
    Ok(resync)
}

impl Agent {
    /// The channel's current epoch authenticator (RFC 9420 §8.7): equal for every member that
    /// holds the same state of the epoch, different across a fork. For comparison out of band.
    pub fn epoch_authenticator(&self, name: &str) -> Result<Vec<u8>> {
        let mut inner = self.lock()?;
        Ok(inner.group(name)?.epoch_authenticator().as_slice().to_vec())
    }

    /// Items of the channel skipped as unprocessable (garbage, replays, another branch's
    /// messages, items from before a resync).
    pub fn skipped(&self, name: &str) -> Result<u64> {
        let inner = self.lock()?;
        let v = inner.store.kv_get(&skipped_key(name))?;
        Ok(v.filter(|v| v.len() == 16).map(|v| u64::from_be_bytes(v[..8].try_into().unwrap_or([0; 8]))).unwrap_or(0))
    }

    /// Records that this agent's own commit, accepted by the relay under `seq`, filled relay
    /// slot `slot` (so a different commit delivered for that slot is recognized as a fork).
    pub fn note_own_commit(&self, name: &str, slot: u64, seq: u64, wire: &[u8]) -> Result<()> {
        let inner = self.lock()?;
        record_slot(inner.store.conn(), name, slot, seq, wire)
    }

    /// The commit slots this agent recorded for the channel, oldest first: `(slot, seq, hash)`.
    pub fn commit_slots(&self, name: &str) -> Result<Vec<(u64, u64, [u8; 32])>> {
        let inner = self.lock()?;
        let mut stmt = inner
            .store
            .conn()
            .prepare_cached("SELECT key, value FROM skytale_kv WHERE substr(key, 1, length(?1)) = ?1 ORDER BY key")?;
        let prefix = slot_prefix(name);
        let rows = stmt
            .query_map([&prefix], |r| Ok((r.get::<_, String>(0)?, r.get::<_, Vec<u8>>(1)?)))?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        let mut out = Vec::with_capacity(rows.len());
        for (key, value) in rows {
            let slot = u64::from_str_radix(&key[prefix.len()..], 16).ok();
            let seq = value.get(..8).and_then(|s| <[u8; 8]>::try_from(s).ok()).map(u64::from_be_bytes);
            let hash = value.get(8..).and_then(|h| <[u8; 32]>::try_from(h).ok());
            if let (Some(slot), Some(seq), Some(hash)) = (slot, seq, hash) {
                out.push((slot, seq, hash));
            }
        }
        Ok(out)
    }

    /// The seq of this agent's last resync commit in the channel (0 if it never resynced):
    /// items up to it belong to epochs it no longer holds.
    pub fn resynced_at(&self, name: &str) -> Result<u64> {
        let inner = self.lock()?;
        kv_u64(inner.store.conn(), &heal_key(name))
    }

    /// Records this agent's accepted resync commit (relay seq and the relay epoch after it).
    pub fn mark_resynced(&self, name: &str, seq: u64, relay_epoch: u64, wire: &[u8]) -> Result<()> {
        let mut inner = self.lock()?;
        inner.transaction(Some(name), |inner| {
            let conn = inner.store.conn();
            kv_put(conn, &heal_key(name), &seq.to_be_bytes())?;
            record_slot(conn, name, relay_epoch.saturating_sub(1), seq, wire)?;
            conn.prepare_cached(
                "UPDATE skytale_channels SET relay_epoch = MAX(COALESCE(relay_epoch, 0), ?2) WHERE name = ?1",
            )?
            .execute(params![name, relay_epoch as i64])?;
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests;
