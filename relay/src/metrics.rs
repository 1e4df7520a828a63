//! Relay counters and gauges, rendered as Prometheus text on `/metrics`, including
//! `skytale_relay_refusals_total{code, reason}`: every refused request or connection by why.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

use skytale_proto::ErrorCode;

use crate::error::RelayError;

/// Why the relay refused a request or a connection: the `reason` label of
/// `skytale_relay_refusals_total` (its `code` label is the wire code sent to the client).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The caller is not in the channel's roster.
    NotAMember,
    /// `CreateChannel` of a channel someone else created.
    ChannelExists,
    /// The org's channel quota.
    QuotaChannels,
    /// The org's invite quota.
    QuotaInvites,
    /// The org's key-package quota.
    QuotaKeyPackages,
    /// The org's archive-bytes quota.
    QuotaArchiveBytes,
    /// The relay-wide connection cap.
    ConnectionsRelay,
    /// The per-IP connection cap.
    ConnectionsPerIp,
    /// The per-org connection cap.
    ConnectionsPerOrg,
    /// The cap on connections that have not authenticated yet.
    ConnectionsUnauthenticated,
    /// The per-identity rate limit.
    RateLimited,
}

impl Refusal {
    /// Every reason, in the order of the counters.
    pub const ALL: [Refusal; 11] = [
        Refusal::NotAMember,
        Refusal::ChannelExists,
        Refusal::QuotaChannels,
        Refusal::QuotaInvites,
        Refusal::QuotaKeyPackages,
        Refusal::QuotaArchiveBytes,
        Refusal::ConnectionsRelay,
        Refusal::ConnectionsPerIp,
        Refusal::ConnectionsPerOrg,
        Refusal::ConnectionsUnauthenticated,
        Refusal::RateLimited,
    ];

    /// The wire code the client gets.
    pub fn code(self) -> ErrorCode {
        match self {
            Refusal::NotAMember => ErrorCode::NotAMember,
            Refusal::ChannelExists => ErrorCode::ChannelExists,
            Refusal::QuotaChannels | Refusal::QuotaInvites | Refusal::QuotaKeyPackages | Refusal::QuotaArchiveBytes => {
                ErrorCode::QuotaExceeded
            }
            Refusal::ConnectionsRelay
            | Refusal::ConnectionsPerIp
            | Refusal::ConnectionsPerOrg
            | Refusal::ConnectionsUnauthenticated => ErrorCode::TooManyConnections,
            Refusal::RateLimited => ErrorCode::RateLimited,
        }
    }

    /// The `reason` label.
    pub fn reason(self) -> &'static str {
        match self {
            Refusal::NotAMember => "not_a_member",
            Refusal::ChannelExists => "channel_exists",
            Refusal::QuotaChannels => "quota_channels",
            Refusal::QuotaInvites => "quota_invites",
            Refusal::QuotaKeyPackages => "quota_key_packages",
            Refusal::QuotaArchiveBytes => "quota_archive_bytes",
            Refusal::ConnectionsRelay => "connections_relay",
            Refusal::ConnectionsPerIp => "connections_per_ip",
            Refusal::ConnectionsPerOrg => "connections_per_org",
            Refusal::ConnectionsUnauthenticated => "connections_unauthenticated",
            Refusal::RateLimited => "rate_limited",
        }
    }

    fn index(self) -> usize {
        Refusal::ALL.iter().position(|r| *r == self).unwrap_or(0)
    }
}

/// All relay metrics (lock-free counters).
#[derive(Default)]
pub struct Metrics {
    /// Currently open connections.
    pub connections: AtomicU64,
    /// Connections accepted since start.
    pub connections_total: AtomicU64,
    /// Connections refused by the connection limit.
    pub connections_refused: AtomicU64,
    /// Frames received.
    pub frames_in: AtomicU64,
    /// Frames sent.
    pub frames_out: AtomicU64,
    /// Bytes received (frames incl. prefix).
    pub bytes_in: AtomicU64,
    /// Bytes sent (frames incl. prefix).
    pub bytes_out: AtomicU64,
    /// Failed authentications.
    pub auth_failures: AtomicU64,
    /// Commits accepted.
    pub commits_acked: AtomicU64,
    /// Commits refused for their epoch.
    pub commits_nacked: AtomicU64,
    /// Items archived since start.
    pub messages_archived: AtomicU64,
    /// Requests refused by the rate limiter.
    pub rate_limited: AtomicU64,
    /// Archived items currently stored.
    pub archive_items: AtomicU64,
    /// Payload bytes currently archived.
    pub archive_bytes: AtomicU64,
    /// Invites created.
    pub invites_created: AtomicU64,
    /// Invite uses counted (a new identity used an invite).
    pub invite_uses: AtomicU64,
    /// Invite validations refused (`SKYTALE_INVITE_INVALID`/`_EXPIRED`/`_USED_UP`).
    pub invite_refusals: AtomicU64,
    /// Refusals by [`Refusal`] (indexed like [`Refusal::ALL`]).
    refusals: [AtomicU64; 11],
}

impl Metrics {
    /// Adds `n` to a counter.
    pub fn add(c: &AtomicU64, n: u64) {
        c.fetch_add(n, Ordering::Relaxed);
    }

    /// Counts a refusal and returns the error to send (its code is [`Refusal::code`]).
    pub fn refuse(&self, why: Refusal, message: impl Into<String>) -> RelayError {
        self.count_refusal(why);
        RelayError::wire(why.code(), message)
    }

    /// Counts a refusal.
    pub fn count_refusal(&self, why: Refusal) {
        if let Some(c) = self.refusals.get(why.index()) {
            c.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Refusals counted so far for one reason.
    pub fn refusals(&self, why: Refusal) -> u64 {
        self.refusals.get(why.index()).map(|c| c.load(Ordering::Relaxed)).unwrap_or(0)
    }

    /// Renders the Prometheus text exposition.
    pub fn render(&self) -> String {
        let rows: [(&str, &str, &str, &AtomicU64); 17] = [
            ("skytale_relay_connections", "gauge", "Open connections.", &self.connections),
            ("skytale_relay_connections_total", "counter", "Accepted connections.", &self.connections_total),
            (
                "skytale_relay_connections_refused_total",
                "counter",
                "Connections refused by the limit.",
                &self.connections_refused,
            ),
            ("skytale_relay_frames_in_total", "counter", "Frames received.", &self.frames_in),
            ("skytale_relay_frames_out_total", "counter", "Frames sent.", &self.frames_out),
            ("skytale_relay_bytes_in_total", "counter", "Bytes received.", &self.bytes_in),
            ("skytale_relay_bytes_out_total", "counter", "Bytes sent.", &self.bytes_out),
            ("skytale_relay_auth_failures_total", "counter", "Failed authentications.", &self.auth_failures),
            ("skytale_relay_commits_acked_total", "counter", "Commits accepted.", &self.commits_acked),
            ("skytale_relay_commits_nacked_total", "counter", "Commits refused (wrong epoch).", &self.commits_nacked),
            ("skytale_relay_messages_archived_total", "counter", "Items archived.", &self.messages_archived),
            (
                "skytale_relay_rate_limited_total",
                "counter",
                "Requests refused by the rate limiter.",
                &self.rate_limited,
            ),
            ("skytale_relay_archive_items", "gauge", "Archived items stored.", &self.archive_items),
            ("skytale_relay_archive_bytes", "gauge", "Archived payload bytes stored.", &self.archive_bytes),
            ("skytale_relay_invites_created_total", "counter", "Invites created.", &self.invites_created),
            ("skytale_relay_invite_uses_total", "counter", "Invite uses by a new identity.", &self.invite_uses),
            (
                "skytale_relay_invite_refusals_total",
                "counter",
                "Invite uses refused (invalid, expired, used up).",
                &self.invite_refusals,
            ),
        ];
        let mut out = String::new();
        for (name, kind, help, v) in rows {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {}", v.load(Ordering::Relaxed));
        }
        let name = "skytale_relay_refusals_total";
        let _ =
            writeln!(out, "# HELP {name} Requests and connections refused, by code and reason.\n# TYPE {name} counter");
        for why in Refusal::ALL {
            let _ = writeln!(
                out,
                "{name}{{code=\"{}\",reason=\"{}\"}} {}",
                why.code().as_str(),
                why.reason(),
                self.refusals(why)
            );
        }
        out
    }
}
