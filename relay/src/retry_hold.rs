//! A hold on later requests until a refused one is retried: the rule both order-keeping holds
//! of the relay share (a connection's sends refused by the rate limit, `session/send_order.rs`;
//! a sender's sends whose append failed, `channel/failed_sends.rs`). Per key, the first refused
//! request's id is awaited; other requests of that key are held until it comes again or the
//! hold's time is up.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Per key: the id of the first refused request and when its hold ends.
pub(crate) struct RetryHold {
    held: HashMap<String, (String, Instant)>,
    hold_for: Duration,
}

impl RetryHold {
    /// A hold that lasts at most `hold_for` per refusal.
    pub(crate) fn new(hold_for: Duration) -> RetryHold {
        RetryHold { held: HashMap::new(), hold_for }
    }

    /// Whether request `id` of `key` may go on: `false` while an earlier refused request of
    /// `key` has not come again (its retry, or the end of the hold, lifts it).
    pub(crate) fn admit(&mut self, key: &str, id: &str, now: Instant) -> bool {
        let Some((first, until)) = self.held.get(key) else { return true };
        if first == id || now >= *until {
            self.held.remove(key);
            return true;
        }
        false
    }

    /// Request `id` of `key` was refused: hold the key's later requests until it comes again
    /// (the first refused one stays the one awaited).
    pub(crate) fn refused(&mut self, key: &str, id: &str, now: Instant) {
        let hold_for = self.hold_for;
        self.held.entry(key.to_string()).or_insert_with(|| (id.to_string(), now + hold_for));
    }
}
