//! Admission limits that hold no channel state: connection caps and the per-identity rate limit.
//!
//! - **Connections** are counted relay-wide (`max_connections`), per remote IP address
//!   (`max_connections_per_ip`; IPv6 per /64), per org once authenticated
//!   (`max_connections_per_org`), and, until `AuthOk`, as *unauthenticated*
//!   (`max_unauthenticated`, each with `auth_timeout_ms` to authenticate). A refused connection
//!   gets a fatal `SKYTALE_TOO_MANY_CONNECTIONS`. Counts are released by [`ConnSlot`]'s `Drop`.
//! - **Rate**: a token bucket per authenticated `(org, identity)` (the token's identity, never a
//!   declared one). Buckets that have refilled completely are equivalent to no bucket and are
//!   dropped by [`RateLimiter::prune`] (called by the relay's prune pass), so the map holds only
//!   identities active within the last `burst / frames_per_second` seconds.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use crate::config::Limits;
use crate::metrics::Refusal;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The key a remote address is counted under: the IP (IPv6: its /64 prefix).
pub fn ip_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let s = v6.segments();
            IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
        }
        v4 => v4,
    }
}

#[derive(Default)]
struct Counts {
    per_ip: HashMap<IpAddr, usize>,
    per_org: HashMap<String, usize>,
    unauthenticated: usize,
}

fn dec<K: std::hash::Hash + Eq>(map: &mut HashMap<K, usize>, key: &K) {
    if let Some(n) = map.get_mut(key) {
        *n = n.saturating_sub(1);
        if *n == 0 {
            map.remove(key);
        }
    }
}

/// Connection counts per IP, per org and unauthenticated.
#[derive(Default)]
pub struct Connections {
    counts: Mutex<Counts>,
}

impl Connections {
    /// Admits a new (not yet authenticated) connection from `ip` (`None`: not an IP path),
    /// returning its slot, or the cap it hit.
    pub fn open(self: &Arc<Self>, ip: Option<IpAddr>, limits: &Limits) -> Result<ConnSlot, Refusal> {
        let mut c = lock(&self.counts);
        if c.unauthenticated >= limits.max_unauthenticated {
            return Err(Refusal::ConnectionsUnauthenticated);
        }
        let ip = ip.map(ip_key);
        if let Some(ip) = ip {
            let n = c.per_ip.entry(ip).or_default();
            if *n >= limits.max_connections_per_ip {
                if *n == 0 {
                    c.per_ip.remove(&ip);
                }
                return Err(Refusal::ConnectionsPerIp);
            }
            *n += 1;
        }
        c.unauthenticated += 1;
        Ok(ConnSlot { conns: self.clone(), ip, org: None })
    }

    /// Number of connections that have not authenticated yet.
    pub fn unauthenticated(&self) -> usize {
        lock(&self.counts).unauthenticated
    }
}

/// A connection's place in the counts; released on drop.
pub struct ConnSlot {
    conns: Arc<Connections>,
    ip: Option<IpAddr>,
    /// `Some` once authenticated.
    org: Option<String>,
}

impl ConnSlot {
    /// Moves the connection from unauthenticated to its org (first `Auth` only; a re-auth keeps
    /// the org). Refused when the org is at its cap; the connection then stays unauthenticated
    /// until it is closed.
    pub fn authenticate(&mut self, org: &str, limits: &Limits) -> Result<(), Refusal> {
        if self.org.is_some() {
            return Ok(());
        }
        let mut c = lock(&self.conns.counts);
        let n = c.per_org.get(org).copied().unwrap_or(0);
        if n >= limits.max_connections_per_org {
            return Err(Refusal::ConnectionsPerOrg);
        }
        c.per_org.insert(org.to_string(), n + 1);
        c.unauthenticated = c.unauthenticated.saturating_sub(1);
        self.org = Some(org.to_string());
        Ok(())
    }
}

impl Drop for ConnSlot {
    fn drop(&mut self) {
        let mut c = lock(&self.conns.counts);
        if let Some(ip) = self.ip {
            dec(&mut c.per_ip, &ip);
        }
        match &self.org {
            Some(org) => dec(&mut c.per_org, org),
            None => c.unauthenticated = c.unauthenticated.saturating_sub(1),
        }
    }
}

struct Bucket {
    tokens: f64,
    last: Instant,
}

/// Token buckets per authenticated `(org, identity)`.
#[derive(Default)]
pub struct RateLimiter {
    buckets: Mutex<HashMap<(String, String), Bucket>>,
}

impl RateLimiter {
    /// Takes one token from the identity's bucket; `Err(retry_after_ms)` if empty.
    pub fn check(&self, org: &str, identity: &str, limits: &Limits) -> Result<(), u64> {
        let mut map = lock(&self.buckets);
        let now = Instant::now();
        let key = (org.to_string(), identity.to_string());
        let b = map.entry(key).or_insert(Bucket { tokens: limits.burst, last: now });
        let elapsed = now.duration_since(b.last).as_secs_f64();
        b.tokens = (b.tokens + elapsed * limits.frames_per_second).min(limits.burst);
        b.last = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(())
        } else {
            let wait = ((1.0 - b.tokens) / limits.frames_per_second * 1000.0).ceil() as u64;
            Err(wait.max(1))
        }
    }

    /// Drops buckets that have refilled completely (the same as no bucket); returns how many
    /// are left.
    pub fn prune(&self, limits: &Limits) -> usize {
        let mut map = lock(&self.buckets);
        let now = Instant::now();
        map.retain(|_, b| {
            b.tokens + now.duration_since(b.last).as_secs_f64() * limits.frames_per_second < limits.burst
        });
        map.len()
    }

    /// Number of buckets held.
    pub fn len(&self) -> usize {
        lock(&self.buckets).len()
    }

    /// Whether no bucket is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_per_ip_org_and_unauthenticated_are_released_on_drop() {
        let limits = Limits {
            max_connections_per_ip: 2,
            max_connections_per_org: 1,
            max_unauthenticated: 3,
            ..Limits::default()
        };
        let conns = Arc::new(Connections::default());
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let mut s1 = conns.open(Some(a), &limits).unwrap();
        let s2 = conns.open(Some(a), &limits).unwrap();
        assert_eq!(conns.open(Some(a), &limits).err(), Some(Refusal::ConnectionsPerIp));
        let s3 = conns.open(Some(b), &limits).unwrap();
        assert_eq!(conns.open(None, &limits).err(), Some(Refusal::ConnectionsUnauthenticated));
        s1.authenticate("acme", &limits).unwrap();
        assert_eq!(conns.unauthenticated(), 2);
        let mut s4 = conns.open(None, &limits).unwrap();
        assert_eq!(s4.authenticate("acme", &limits), Err(Refusal::ConnectionsPerOrg));
        s4.authenticate("globex", &limits).unwrap();
        drop((s1, s2, s3, s4));
        assert_eq!(conns.unauthenticated(), 0);
        let c = lock(&conns.counts);
        assert!(c.per_ip.is_empty() && c.per_org.is_empty());
    }

    #[test]
    fn ipv6_is_counted_per_64() {
        let x: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let y: IpAddr = "2001:db8:1:2:bbbb::2".parse().unwrap();
        assert_eq!(ip_key(x), ip_key(y));
        let m: IpAddr = "::ffff:10.0.0.1".parse().unwrap();
        assert_eq!(ip_key(m), "10.0.0.1".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn idle_buckets_are_pruned() {
        let limits = Limits { frames_per_second: 1000.0, burst: 1.0, ..Limits::default() };
        let r = RateLimiter::default();
        r.check("acme", "a", &limits).unwrap();
        assert_eq!(r.len(), 1);
        std::thread::sleep(std::time::Duration::from_millis(5));
        assert_eq!(r.prune(&limits), 0);
        assert!(r.is_empty());
    }
}
