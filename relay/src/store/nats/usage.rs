//! Per-org usage (for the quotas) in a KV bucket, one key per org. Each node adds what it did
//! (channels created, invites, key packages, archived bytes) to a local tally and writes it to
//! the org's key about once a second (revision-checked); reads use a copy at most a second old
//! plus the local tally. So the cluster-wide counts lag by about a second: the quotas are soft
//! by that much. Counts that expire are kept in time buckets and stop counting when their
//! bucket is past the TTL, without anyone deleting them.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::kv::{change, read, Step};
use super::record::{esc, Bucket, OrgUsageRec};
use super::Inner;
use crate::error::Result;
use crate::now_ms;
use crate::store::OrgUsage;

/// How often a node writes its tallies, and how old a read copy may be.
pub(super) const USAGE_EVERY: Duration = Duration::from_secs(1);
/// Buckets per TTL.
const BUCKETS: u64 = 64;

/// What a count is of.
#[derive(Clone, Copy, Debug)]
pub(super) enum Count {
    /// Channels (never expire).
    Channels,
    /// Invites, at the time they may be pruned (expiry + archive TTL).
    Invites,
    /// Key packages, at their store time.
    KeyPackages,
    /// Archived payload bytes, at their archive time.
    Archive,
}

/// Local tallies and read copies.
#[derive(Default)]
pub(super) struct Usage {
    pending: HashMap<String, OrgUsageRec>,
    seen: HashMap<String, (Instant, OrgUsageRec)>,
}

fn add_bucket(buckets: &mut Vec<Bucket>, start_ms: u64, n: i64) {
    match buckets.iter_mut().find(|b| b.start_ms == start_ms) {
        Some(b) => b.count += n,
        None => buckets.push(Bucket { start_ms, count: n }),
    }
}

fn merge(into: &mut OrgUsageRec, d: &OrgUsageRec) {
    into.channels += d.channels;
    for (to, from) in
        [(&mut into.invites, &d.invites), (&mut into.key_packages, &d.key_packages), (&mut into.archive, &d.archive)]
    {
        for b in from {
            add_bucket(to, b.start_ms, b.count);
        }
    }
}

fn live(buckets: &[Bucket], width: u64, cutoff: u64) -> u64 {
    let n: i64 = buckets.iter().filter(|b| b.start_ms + width > cutoff).map(|b| b.count).sum();
    u64::try_from(n).unwrap_or(0)
}

impl Inner {
    fn width(&self, ttl_ms: u64) -> u64 {
        (ttl_ms / BUCKETS).max(1000)
    }

    /// Adds `n` to a count of `org` at time `at_ms` (local; written within [`USAGE_EVERY`]).
    pub(super) fn usage_add(&self, org: &str, what: Count, at_ms: u64, n: i64) {
        let mut u = self.usage.lock().unwrap_or_else(|p| p.into_inner());
        let rec = u.pending.entry(org.to_string()).or_default();
        let (buckets, ttl) = match what {
            Count::Channels => {
                rec.channels += u64::try_from(n).unwrap_or(0);
                return;
            }
            Count::Invites => (&mut rec.invites, self.ttl_ms),
            Count::KeyPackages => (&mut rec.key_packages, self.kp_ttl_ms),
            Count::Archive => (&mut rec.archive, self.ttl_ms),
        };
        let w = (ttl / BUCKETS).max(1000);
        add_bucket(buckets, at_ms / w * w, n);
    }

    /// An org's usage: the cluster's counts (at most [`USAGE_EVERY`] old) plus this node's
    /// tally not written yet.
    pub(super) async fn org_usage(&self, org: &str) -> Result<OrgUsage> {
        let cached = {
            let u = self.usage.lock().unwrap_or_else(|p| p.into_inner());
            u.seen.get(org).filter(|(at, _)| at.elapsed() < USAGE_EVERY).map(|(_, v)| v.clone())
        };
        let mut v = match cached {
            Some(v) => v,
            None => {
                let (v, _) = read::<OrgUsageRec>(&self.usage_kv.kv, &esc(org)).await?;
                let v = v.unwrap_or_default();
                let mut u = self.usage.lock().unwrap_or_else(|p| p.into_inner());
                u.seen.insert(org.to_string(), (Instant::now(), v.clone()));
                v
            }
        };
        if let Some(d) = self.usage.lock().unwrap_or_else(|p| p.into_inner()).pending.get(org) {
            merge(&mut v, d);
        }
        let now = now_ms();
        Ok(OrgUsage {
            channels: v.channels,
            invites: live(&v.invites, self.width(self.ttl_ms), now),
            key_packages: live(&v.key_packages, self.width(self.kp_ttl_ms), now.saturating_sub(self.kp_ttl_ms)),
            archive_bytes: live(&v.archive, self.width(self.ttl_ms), now.saturating_sub(self.ttl_ms)),
        })
    }

    /// Writes this node's tallies into the orgs' keys (a tally that could not be written is
    /// kept for the next round), dropping buckets past their TTL.
    pub(super) async fn flush_usage(&self) {
        let pending = std::mem::take(&mut self.usage.lock().unwrap_or_else(|p| p.into_inner()).pending);
        for (org, d) in pending {
            let now = now_ms();
            let (w, kw) = (self.width(self.ttl_ms), self.width(self.kp_ttl_ms));
            let res = change(&self.usage_kv, &self.js, &esc(&org), |v: &mut OrgUsageRec, _| {
                merge(v, &d);
                v.invites.retain(|b| b.start_ms + w > now);
                v.key_packages.retain(|b| b.start_ms + kw > now.saturating_sub(self.kp_ttl_ms));
                v.archive.retain(|b| b.start_ms + w > now.saturating_sub(self.ttl_ms));
                Ok(Step::Write(()))
            })
            .await;
            let mut u = self.usage.lock().unwrap_or_else(|p| p.into_inner());
            match res {
                Ok(()) => {
                    u.seen.remove(&org);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "could not write usage counts; kept for the next round");
                    merge(u.pending.entry(org).or_default(), &d);
                }
            }
        }
    }
}
