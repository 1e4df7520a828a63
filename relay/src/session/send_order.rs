//! Keeps a connection's pipelined sends in order when the rate limit refuses one of them.
//!
//! A client writes many `Send`s before their acks come back. If the rate limit refuses send *k*
//! (`SKYTALE_RATE_LIMITED`), a token may refill while *k+1, k+2, …* are being read, and one of
//! them would be archived before *k*'s retry: the channel's order would no longer be the
//! sender's call order. So after refusing a send on a channel, the connection refuses its other
//! sends on that channel (without taking tokens) until *k* comes again (same `client_msg_id`)
//! or [`HOLD_FOR`] passes (a client that never retries cannot block itself for longer).

use std::time::Duration;

use tokio::time::Instant;

use crate::retry_hold::RetryHold;

/// Longest a refused send holds back the connection's later sends on its channel.
pub(super) const HOLD_FOR: Duration = Duration::from_secs(10);

/// Per connection: the first refused send of each channel whose retry is awaited.
pub(super) struct SendOrder(RetryHold);

impl Default for SendOrder {
    fn default() -> Self {
        SendOrder(RetryHold::new(HOLD_FOR))
    }
}

impl SendOrder {
    /// Whether a send may go on to the rate limit: `Err(retry_after_ms)` while an earlier
    /// refused send of the same channel has not come again.
    pub(super) fn admit(&mut self, channel: &str, client_msg_id: &str, now: Instant) -> Result<(), u64> {
        if self.0.admit(channel, client_msg_id, now.into_std()) {
            Ok(())
        } else {
            Err(10)
        }
    }

    /// The rate limit refused this send: hold the channel's later sends until it comes again.
    pub(super) fn refused(&mut self, channel: &str, client_msg_id: &str, now: Instant) {
        self.0.refused(channel, client_msg_id, now.into_std());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn later_sends_wait_for_the_refused_one_or_the_deadline() {
        let mut o = SendOrder::default();
        let t = Instant::now();
        assert_eq!(o.admit("c", "m1", t), Ok(()));
        o.refused("c", "m1", t);
        o.refused("c", "m2", t); // the first refused one stays the one awaited
        assert!(o.admit("c", "m2", t).is_err());
        assert_eq!(o.admit("other", "x", t), Ok(()));
        assert_eq!(o.admit("c", "m1", t), Ok(()));
        assert_eq!(o.admit("c", "m2", t), Ok(()));
        o.refused("c", "m3", t);
        assert!(o.admit("c", "m4", t + HOLD_FOR - Duration::from_millis(1)).is_err());
        assert_eq!(o.admit("c", "m4", t + HOLD_FOR), Ok(()));
    }
}
