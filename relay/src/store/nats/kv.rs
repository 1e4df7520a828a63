//! Key packages, invites and welcome queues in JetStream KV buckets. Every change reads the
//! key's value and writes it back only if nothing was written to the bucket meanwhile
//! (retrying on a concurrent change), so a key package is handed out once cluster-wide and an
//! invite's use limit holds across nodes.
//!
//! The check is the bucket stream's *last sequence* (`Nats-Expected-Last-Sequence`), not the
//! key's revision: the per-subject check is not serialized in clustered streams by nats-server
//! before 2.9.21 (two writers expecting the same revision can both succeed), while the
//! stream-wide one is. These buckets see few writes, so serializing them per bucket is cheap.
//! Welcome queues are the exception (one key per recipient, a commit may write a thousand at
//! once): they use the key's revision; every node re-queues each commit's pointers, so a write
//! lost to that server bug is repaired, and the worst case is a welcome delivered twice.

use async_nats::jetstream::context::PublishErrorKind;
use async_nats::jetstream::kv::{Operation, Store as Kv};
use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::stream;
use prost::Message;
use skytale_proto::frames::{Kind, Welcome};
use skytale_proto::ErrorCode;

use super::record::{esc, InviteRec, KeyPackages, RecItem, WelcomePtr, WelcomeQueue};
use super::usage::Count;
use super::{nats_err, Inner};
use crate::error::{RelayError, Result};
use crate::now_ms;
use crate::store::InviteRow;
use async_nats::jetstream::Context;

/// Attempts of one revision-checked change before giving up.
const CAS_ATTEMPTS: u32 = 64;
/// Welcome queues written at once.
const WELCOME_FANOUT: usize = 64;

/// A KV bucket and its stream.
pub(crate) struct Bucket {
    /// Reads.
    pub kv: Kv,
    /// The bucket's stream (its last sequence guards every write).
    pub stream: stream::Stream,
    /// `$KV.<bucket>.`
    pub subject_prefix: String,
    /// Guard writes by the key's revision instead of the bucket's last sequence (for buckets
    /// of many independent keys written at once, where a lost race only costs a repair).
    pub per_key: bool,
}

/// Where a commit's welcome is archived.
struct Ptr<'a> {
    stream_seq: u64,
    channel: &'a str,
    org: &'a str,
    commit_epoch: u64,
    item: &'a RecItem,
}

/// What a change does after looking at the current value.
pub(super) enum Step<R> {
    /// Nothing to write; return this.
    Done(R),
    /// Write the (modified) value, then return this.
    Write(R),
}

/// The value of `key` (`None` if absent or deleted) and the revision to expect when writing.
pub(super) async fn read<T: Message + Default>(kv: &Kv, key: &str) -> Result<(Option<T>, u64)> {
    match kv.entry(key).await.map_err(|e| nats_err("kv get", e))? {
        None => Ok((None, 0)),
        Some(e) if e.operation != Operation::Put => Ok((None, e.revision)),
        Some(e) => {
            let v = T::decode(e.value).map_err(|e| RelayError::Storage(format!("nats: malformed kv value: {e}")))?;
            Ok((Some(v), e.revision))
        }
    }
}

/// Applies `f` to the value of `key` (default if absent) and writes it back if the bucket did
/// not change meanwhile; retries on a concurrent change.
pub(super) async fn change<T, R>(
    b: &Bucket,
    js: &Context,
    key: &str,
    mut f: impl FnMut(&mut T, bool) -> Result<Step<R>>,
) -> Result<R>
where
    T: Message + Default,
{
    for attempt in 0..CAS_ATTEMPTS {
        let last = if b.per_key {
            0
        } else {
            b.stream.get_info().await.map_err(|e| nats_err("bucket info", e))?.state.last_sequence
        };
        let (cur, rev) = read::<T>(&b.kv, key).await?;
        if !b.per_key && rev > last {
            continue;
        }
        let exists = cur.is_some();
        let mut v = cur.unwrap_or_default();
        match f(&mut v, exists)? {
            Step::Done(r) => return Ok(r),
            Step::Write(r) => {
                let msg = PublishMessage::build().payload(v.encode_to_vec().into());
                let msg =
                    if b.per_key { msg.expected_last_subject_sequence(rev) } else { msg.expected_last_sequence(last) };
                let ack = js.send_publish(format!("{}{key}", b.subject_prefix), msg).await;
                let res = match ack {
                    Ok(ack) => ack.await.map(|_| ()).map_err(|e| e.kind()),
                    Err(e) => Err(e.kind()),
                };
                match res {
                    Ok(()) => return Ok(r),
                    Err(PublishErrorKind::WrongLastSequence) => {
                        let backoff = 1 + u64::from(attempt) + u64::from(rand::random::<u8>() % 4);
                        tokio::time::sleep(std::time::Duration::from_millis(backoff.min(50))).await;
                    }
                    Err(e) => return Err(nats_err("kv write", e)),
                }
            }
        }
    }
    Err(RelayError::Storage(format!("nats: key {key} kept changing; gave up")))
}

fn person(org: &str, identity: &str) -> String {
    format!("{}.{}", esc(org), esc(identity))
}

fn row_of(id: &str, r: InviteRec) -> InviteRow {
    InviteRow {
        id: id.to_string(),
        org: r.org,
        channel: r.channel,
        auth_hash: r.auth_hash,
        max_uses: r.max_uses,
        expires_at: r.expires_at,
        group_info: r.group_info,
        revoked: r.revoked,
    }
}

impl Inner {
    /// Drops key packages past their TTL (they stop counting at once; see [`Inner::usage_add`]).
    fn drop_expired(&self, v: &mut KeyPackages) -> bool {
        let cutoff = now_ms().saturating_sub(self.kp_ttl_ms);
        v.created_ms.resize(v.packages.len(), 0);
        let before = v.packages.len();
        let keep: Vec<bool> = v.created_ms.iter().map(|t| *t >= cutoff).collect();
        let mut it = keep.iter();
        v.packages.retain(|_| *it.next().unwrap_or(&true));
        v.created_ms.retain(|t| *t >= cutoff);
        v.packages.len() != before
    }

    pub(super) async fn count_key_packages(&self, org: &str, identity: &str) -> Result<u64> {
        let (v, _) = read::<KeyPackages>(&self.kp.kv, &person(org, identity)).await?;
        let cutoff = now_ms().saturating_sub(self.kp_ttl_ms);
        Ok(v.map_or(0, |k| k.created_ms.iter().filter(|t| **t >= cutoff).count() as u64))
    }

    pub(super) async fn add_key_packages(&self, org: &str, identity: &str, kps: &[Vec<u8>], now: u64) -> Result<()> {
        change(&self.kp, &self.js, &person(org, identity), |v: &mut KeyPackages, _| {
            self.drop_expired(v);
            for kp in kps {
                v.packages.push(kp.clone());
                v.created_ms.push(now);
            }
            Ok(Step::Write(()))
        })
        .await?;
        self.usage_add(org, Count::KeyPackages, now, kps.len() as i64);
        Ok(())
    }

    pub(super) async fn claim_key_package(&self, org: &str, identity: &str) -> Result<Option<Vec<u8>>> {
        let claimed = change(&self.kp, &self.js, &person(org, identity), |v: &mut KeyPackages, _| {
            let dropped = self.drop_expired(v);
            if v.packages.is_empty() {
                return Ok(if dropped { Step::Write(None) } else { Step::Done(None) });
            }
            let kp = v.packages.remove(0);
            let at = v.created_ms.remove(0);
            Ok(Step::Write(Some((kp, at))))
        })
        .await?;
        Ok(claimed.map(|(kp, at)| {
            self.usage_add(org, Count::KeyPackages, at, -1);
            kp
        }))
    }

    pub(super) async fn create_invite(&self, inv: &InviteRow, created_by: &str, now: u64) -> Result<bool> {
        let rec = InviteRec {
            org: inv.org.clone(),
            channel: inv.channel.clone(),
            auth_hash: inv.auth_hash.clone(),
            max_uses: inv.max_uses,
            expires_at: inv.expires_at,
            group_info: inv.group_info.clone(),
            revoked: false,
            created_by: created_by.to_string(),
            created_ms: now,
            uses: Vec::new(),
        };
        // The id must be free: absent, or held by an invite that expired before the archive
        // TTL (pruned, as the SQLite store deletes it). A revoked invite keeps its id taken.
        let created = change(&self.inv, &self.js, &esc(&inv.id), |cur: &mut InviteRec, exists| {
            if exists && !self.invite_pruned(cur) {
                return Ok(Step::Done(false));
            }
            *cur = rec.clone();
            Ok(Step::Write(true))
        })
        .await?;
        if created {
            let prunable = inv.expires_at.saturating_mul(1000).saturating_add(self.ttl_ms);
            self.usage_add(&inv.org, Count::Invites, prunable, 1);
        }
        Ok(created)
    }

    /// An invite that expired longer than the archive TTL ago counts as deleted (the bucket
    /// drops it later by age).
    fn invite_pruned(&self, r: &InviteRec) -> bool {
        r.expires_at.saturating_mul(1000) < now_ms().saturating_sub(self.ttl_ms)
    }

    async fn live_invite(&self, id: &str) -> Result<Option<InviteRec>> {
        let (v, _) = read::<InviteRec>(&self.inv.kv, &esc(id)).await?;
        Ok(v.filter(|r| !self.invite_pruned(r)))
    }

    pub(super) async fn invite(&self, id: &str) -> Result<Option<InviteRow>> {
        Ok(self.live_invite(id).await?.map(|r| row_of(id, r)))
    }

    pub(super) async fn change_invite(&self, id: &str, f: impl Fn(&mut InviteRec)) -> Result<()> {
        change(&self.inv, &self.js, &esc(id), |v: &mut InviteRec, exists| {
            if !exists || self.invite_pruned(v) {
                return Ok(Step::Done(()));
            }
            f(v);
            Ok(Step::Write(()))
        })
        .await
    }

    pub(super) async fn invite_uses(&self, id: &str) -> Result<u32> {
        let v = self.live_invite(id).await?;
        Ok(v.map_or(0, |r| u32::try_from(r.uses.len()).unwrap_or(u32::MAX)))
    }

    pub(super) async fn invite_used_by(&self, id: &str, identity: &str) -> Result<bool> {
        let v = self.live_invite(id).await?;
        Ok(v.is_some_and(|r| r.uses.iter().any(|u| u == identity)))
    }

    /// Records a use; checks revocation and the use limit in the same revision-checked write,
    /// so two nodes cannot both take the last use.
    pub(super) async fn add_invite_use(&self, id: &str, identity: &str, _now: u64) -> Result<()> {
        change(&self.inv, &self.js, &esc(id), |v: &mut InviteRec, exists| {
            if !exists || v.revoked || self.invite_pruned(v) {
                return Err(RelayError::wire(ErrorCode::InviteInvalid, "invalid invite"));
            }
            if v.uses.iter().any(|u| u == identity) {
                return Ok(Step::Done(()));
            }
            if v.uses.len() >= v.max_uses as usize {
                return Err(RelayError::wire(ErrorCode::InviteUsedUp, "the invite has been used up"));
            }
            v.uses.push(identity.to_string());
            Ok(Step::Write(()))
        })
        .await
    }

    /// Queues pointers to the welcomes of a commit item archived in record `stream_seq` (once
    /// per recipient: a pointer already queued or acknowledged is not queued again).
    pub(super) async fn queue_welcomes(
        &self,
        stream_seq: u64,
        channel: &str,
        org: &str,
        commit_epoch: u64,
        item: &RecItem,
    ) -> Result<()> {
        // Recipients' queues are independent keys: written concurrently.
        for batch in item.welcome_recipients.chunks(WELCOME_FANOUT) {
            let at = Ptr { stream_seq, channel, org, commit_epoch, item };
            for r in futures_util::future::join_all(batch.iter().map(|r| self.queue_one(r, &at))).await {
                r?;
            }
        }
        Ok(())
    }

    /// Queues one recipient's pointer unless it is queued or acknowledged already.
    async fn queue_one(&self, recipient: &str, at: &Ptr<'_>) -> Result<()> {
        let cutoff = now_ms().saturating_sub(self.welcome_ttl_ms);
        let id = at.stream_seq;
        // Usually queued already (by the writer, or another node's feed): one read.
        let (q, _) = read::<WelcomeQueue>(&self.wel.kv, &person(at.org, recipient)).await?;
        if q.is_some_and(|q| q.pending.iter().chain(&q.acked).any(|p| p.id == id)) {
            return Ok(());
        }
        change(&self.wel, &self.js, &person(at.org, recipient), |q: &mut WelcomeQueue, _| {
            if q.pending.iter().chain(&q.acked).any(|p| p.id == id) {
                return Ok(Step::Done(()));
            }
            q.pending.retain(|p| p.created_ms >= cutoff);
            q.acked.retain(|p| p.created_ms >= cutoff);
            q.pending.push(WelcomePtr {
                id,
                channel: at.channel.to_string(),
                commit_seq: at.item.seq,
                commit_epoch: at.commit_epoch,
                sender: at.item.sender.clone(),
                created_ms: at.item.now_ms,
            });
            Ok(Step::Write(()))
        })
        .await
    }

    async fn queue(&self, org: &str, recipient: &str) -> Result<Vec<WelcomePtr>> {
        let cutoff = now_ms().saturating_sub(self.welcome_ttl_ms);
        let (q, _) = read::<WelcomeQueue>(&self.wel.kv, &person(org, recipient)).await?;
        Ok(q.map(|q| q.pending.into_iter().filter(|p| p.created_ms >= cutoff).collect()).unwrap_or_default())
    }

    pub(super) async fn pending_welcomes(&self, org: &str, recipient: &str) -> Result<u64> {
        Ok(self.queue(org, recipient).await?.len() as u64)
    }

    /// Queued welcomes of a recipient, with their payloads read from the commits' records.
    pub(super) async fn welcomes_for(&self, org: &str, recipient: &str) -> Result<Vec<Welcome>> {
        let mut out = Vec::new();
        for p in self.queue(org, recipient).await? {
            let m = match self.archive.get_raw_message(p.id).await {
                Ok(m) => m,
                Err(e) if e.kind() == async_nats::jetstream::stream::LastRawMessageErrorKind::NoMessageFound => {
                    continue
                }
                Err(e) => return Err(nats_err("get record", e)),
            };
            let rec = super::record::Record::decode(m.payload)
                .map_err(|e| RelayError::Storage(format!("nats: malformed archive record: {e}")))?;
            let payload = rec
                .items
                .iter()
                .find(|i| {
                    i.seq == p.commit_seq
                        && i.kind == Kind::Commit as i32
                        && i.welcome_recipients.iter().any(|r| r == recipient)
                })
                .map(|i| i.welcome.to_vec());
            if let Some(payload) = payload {
                out.push(Welcome {
                    welcome_id: p.id,
                    channel: p.channel,
                    sender: p.sender,
                    payload,
                    commit_seq: p.commit_seq,
                    commit_epoch: p.commit_epoch,
                });
            }
        }
        Ok(out)
    }

    /// Moves a welcome from the queue to the acknowledged list; returns whether it was queued.
    pub(super) async fn delete_welcome(&self, org: &str, recipient: &str, id: u64) -> Result<bool> {
        change(&self.wel, &self.js, &person(org, recipient), |q: &mut WelcomeQueue, _| {
            let Some(i) = q.pending.iter().position(|p| p.id == id) else {
                return Ok(Step::Done(false));
            };
            let p = q.pending.remove(i);
            q.acked.push(WelcomePtr { id: p.id, created_ms: p.created_ms, ..Default::default() });
            Ok(Step::Write(true))
        })
        .await
    }
}
