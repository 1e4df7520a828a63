//! Keeps a sender's sends in order when the store failed to archive one of them.
//!
//! A client has many `Send`s in flight. If the append of a batch holding send *k* fails
//! (`SKYTALE_INTERNAL`: a cluster store electing a leader, a full disk), the sender's later sends
//! *k+1, k+2, …* may already be queued in this actor, and the next append may well succeed:
//! they would be archived before *k*'s retry, and the channel's order would no longer be the
//! sender's. So after a failed append the actor refuses the sender's other sends on the
//! channel with the same retryable error until *k* comes again (same `client_msg_id`) or
//! [`HOLD_FOR`] passes (a client that gave up on *k* cannot block itself for longer). Sends
//! without a `client_msg_id` cannot be recognised when they come again and hold nothing.
//! (The rate-limit refusal, which happens before the actor, has its twin in
//! `session/send_order.rs`.)

use std::time::{Duration, Instant};

use crate::retry_hold::RetryHold;

/// Longest a failed send holds back its sender's later sends on the channel (the client
/// retries a failed send for 8–15 s).
pub(super) const HOLD_FOR: Duration = Duration::from_secs(20);

/// Per sender: the first send whose append failed and whose retry is awaited.
pub(super) struct FailedSends(RetryHold);

impl Default for FailedSends {
    fn default() -> Self {
        FailedSends(RetryHold::new(HOLD_FOR))
    }
}

impl FailedSends {
    /// Whether a send may be ordered now: `false` while an earlier failed send of the same
    /// sender has not come again.
    pub(super) fn admit(&mut self, sender: &str, client_msg_id: &str, now: Instant) -> bool {
        self.0.admit(sender, client_msg_id, now)
    }

    /// The append of this send failed: hold the sender's later sends until it comes again.
    pub(super) fn failed(&mut self, sender: &str, client_msg_id: &str, now: Instant) {
        if !client_msg_id.is_empty() {
            self.0.refused(sender, client_msg_id, now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn later_sends_wait_for_the_failed_one_or_the_deadline() {
        let mut f = FailedSends::default();
        let t = Instant::now();
        assert!(f.admit("alice", "m1", t));
        f.failed("alice", "m1", t);
        f.failed("alice", "m2", t); // the first failed one stays the one awaited
        assert!(!f.admit("alice", "m2", t));
        assert!(!f.admit("alice", "m3", t));
        assert!(f.admit("bob", "x", t), "other senders are not held");
        assert!(f.admit("alice", "m1", t));
        assert!(f.admit("alice", "m2", t));
        f.failed("alice", "m3", t);
        assert!(!f.admit("alice", "m4", t + HOLD_FOR - Duration::from_millis(1)));
        assert!(f.admit("alice", "m4", t + HOLD_FOR));
        f.failed("alice", "", t);
        assert!(f.admit("alice", "m5", t), "a send without an id holds nothing");
    }
}
