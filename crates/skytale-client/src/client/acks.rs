//! Deferred acknowledgements of received events ([`Client::ack_events_later`]): the app notes
//! what it is done with at once, without a keystore write; the deletion rides along with the
//! channel's next processing transaction (see `skytale_core`'s `inbox_ack_later`), and this
//! loop writes whatever is still noted [`ACK_FLUSH_AFTER`] later (one transaction for all
//! channels), and again on close. At a steady rate that is one write per received message
//! fewer.

use std::sync::atomic::Ordering;

use super::*;

/// How long a noted acknowledgement waits for a processing transaction to ride along with
/// before it is written on its own. A crash in that window brings the noted items back after a
/// restart (never loses one).
pub(super) const ACK_FLUSH_AFTER: Duration = Duration::from_millis(20);

impl Client {
    /// Notes that the app is done with the events of `channel` up to and including `seq`,
    /// without waiting for a keystore write: they are deleted from the inbox with the channel's
    /// next processing transaction, within [`ACK_FLUSH_AFTER`] otherwise, and on
    /// [`Client::close`]. After a crash before that write they are delivered again (their `seq`
    /// tells them apart). [`Client::ack_events`] writes at once.
    pub fn ack_events_later(&self, channel: &str, seq: u64) -> Result<()> {
        self.shared.agent.inbox_ack_later(channel, seq)?;
        if !self.shared.ack_armed.swap(true, Ordering::AcqRel) {
            self.shared.ack_notify.notify_one();
        }
        Ok(())
    }
}

impl Shared {
    /// Writes the noted acknowledgements; a failure is reported (they stay noted and are
    /// tried again with the next one).
    pub(super) fn flush_acks(&self) {
        if let Err(e) = self.agent.flush_acks() {
            self.emit_error(None, e.code(), format!("writing acknowledgements failed: {e}"));
        }
    }
}

/// Writes noted acknowledgements that no processing transaction took along.
pub(super) async fn ack_loop(shared: Arc<Shared>) {
    let mut closed = shared.closed.subscribe();
    loop {
        if *closed.borrow() {
            return;
        }
        tokio::select! {
            _ = shared.ack_notify.notified() => {}
            _ = closed.changed() => continue,
        }
        tokio::select! {
            _ = tokio::time::sleep(ACK_FLUSH_AFTER) => {}
            _ = closed.changed() => {}
        }
        // Disarm before looking: a note made from here on arms the loop again.
        shared.ack_armed.store(false, Ordering::Release);
        if shared.agent.has_pending_acks() {
            shared.flush_acks();
        }
    }
}
