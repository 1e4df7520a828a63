//! The outbox: sends in call order, pipelined (encrypt a batch, each run of one channel in one
//! keystore transaction, write its frames in one stream write, and keep up to
//! `BATCHES_IN_FLIGHT` batches awaiting their Acks while the next is encrypted), settled in
//! order, with a careful one-by-one path for whatever the fast path could not send.

use super::*;
use skytale_proto::conn::PendingReply;
use skytale_proto::frames::Send as SendFrame;

impl Shared {
    /// Encrypts and sends one outbox item until the relay acks it.
    pub(super) async fn deliver_one(&self, item: &OutItem) -> Result<u64> {
        let slot = self.slot(&item.channel);
        let mut conn = self.live_conn().await?;
        let mut wrong_epochs = 0;
        let mut relay_failures: u32 = 0;
        let mut leave_deadline = None;
        loop {
            // While the channel resyncs (issue #10) its sends wait, then go out in the new epoch.
            self.fork.wait_healed(&item.channel).await;
            let encrypted = {
                let _guard = slot.lock.lock().await;
                let epoch = self.send_epoch(&item.channel)?;
                self.agent.encrypt(&item.channel, &item.data).map(|payload| (epoch, payload))
            };
            let (epoch, payload) = match encrypted {
                Ok(v) => v,
                // A member asked to leave: MLS allows no message in this epoch until its removal
                // is committed (by this member or another). Wait for that commit, then send.
                Err(CoreError::LeavePending(_)) if leave_deadline.is_none_or(|d| tokio::time::Instant::now() < d) => {
                    if leave_deadline.is_none() {
                        leave_deadline = Some(tokio::time::Instant::now() + LEAVE_COMMIT_WAIT);
                        self.schedule(FollowUp::CommitLeaves { channel: item.channel.clone() });
                    }
                    let applied = slot.notify.notified();
                    tokio::select! {
                        _ = applied => {}
                        _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                    }
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
            self.fork.begin_send(&item.channel);
            let res = conn.send(&item.channel, &item.client_msg_id, Kind::Application, epoch, payload).await;
            self.fork.end_send(&item.channel, res.as_ref().ok().map(|a| a.seq));
            match res {
                Ok(ack) => {
                    self.fork.note_sent(&item.channel, ack.epoch, &item.data);
                    return Ok(ack.seq);
                }
                Err(ProtoError::WrongEpoch { current_epoch, .. })
                    if wrong_epochs < 8 || self.fork.is_healing(&item.channel) =>
                {
                    wrong_epochs += 1;
                    self.check_nack(&item.channel, epoch, current_epoch);
                    if self.fork.is_healing(&item.channel) {
                        wrong_epochs = 0;
                        continue;
                    }
                    let _guard = slot.lock.lock().await;
                    self.catch_up_locked(&conn, &item.channel).await?;
                    if self.fork.is_healing(&item.channel) {
                        wrong_epochs = 0;
                    }
                }
                Err(e) if is_transport(&e) => conn = self.next_conn(&conn).await?,
                Err(ProtoError::Relay { ref code, retry_after_ms, .. }) if code == "SKYTALE_RATE_LIMITED" => {
                    tokio::time::sleep(Duration::from_millis(retry_after_ms.clamp(10, 5_000))).await;
                }
                // The relay could not store it this time (e.g. a cluster store electing a new
                // leader): the same client_msg_id again, so a send that did land is not doubled.
                Err(ProtoError::Relay { ref code, .. })
                    if code == "SKYTALE_INTERNAL" && relay_failures < MAX_RELAY_FAILURES =>
                {
                    tokio::time::sleep(super::connection::backoff(relay_failures)).await;
                    relay_failures += 1;
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Fast path, first half: encrypts the items, each channel's in their order and in one
    /// keystore transaction (channels in the order they first appear; the relay orders each
    /// channel on its own, and the frames still go out in call order, so each channel's frames
    /// follow its encryption order). `None` for items to send one by one (the careful path
    /// reports each item's own error).
    async fn encrypt_batch(&self, batch: &[OutItem]) -> Vec<Option<(u64, Vec<u8>)>> {
        skytale_proto::probe::mark_n("send.encrypt", batch.len());
        let mut prepared: Vec<Option<(u64, Vec<u8>)>> = batch.iter().map(|_| None).collect();
        for (channel, positions) in positions_by_channel(batch) {
            let slot = self.slot(channel);
            let _guard = slot.lock.lock().await;
            let plaintexts: Vec<&[u8]> = positions.iter().map(|&i| batch[i].data.as_slice()).collect();
            let encrypted = if self.fork.is_healing(channel) {
                Err(CoreError::InvalidState("the channel is resyncing".into()).into())
            } else {
                self.send_epoch(channel).and_then(|epoch| Ok((epoch, self.agent.encrypt_batch(channel, &plaintexts)?)))
            };
            // A reply short of items leaves the rest to the careful path.
            if let Ok((epoch, wires)) = encrypted {
                for (&i, wire) in positions.iter().zip(wires) {
                    prepared[i] = Some((epoch, wire));
                }
            }
        }
        skytale_proto::probe::mark_n("send.encrypted", batch.len());
        prepared
    }

    /// Fast path, second half: writes the Sends of the encrypted items in one stream write
    /// (in order) and returns the batch with its pending acks.
    async fn write_batch(&self, items: Vec<OutItem>, prepared: Vec<Option<(u64, Vec<u8>)>>) -> InFlight {
        let epochs: Vec<Option<u64>> = prepared.iter().map(|p| p.as_ref().map(|(e, _)| *e)).collect();
        let conn = self.conn.borrow().clone();
        let mut replies: Vec<Option<PendingReply>> = items.iter().map(|_| None).collect();
        let Some(conn) = conn else { return InFlight { items, epochs, replies, conn: None } };
        let mut bodies = Vec::new();
        let mut positions = Vec::new();
        for (i, (item, p)) in items.iter().zip(prepared).enumerate() {
            if let Some((epoch, payload)) = p {
                bodies.push(Body::Send(SendFrame {
                    channel: item.channel.clone(),
                    client_msg_id: item.client_msg_id.clone(),
                    kind: Kind::Application as i32,
                    epoch,
                    payload,
                    invite_id: String::new(),
                    invite_auth: Vec::new(),
                }));
                positions.push(i);
            }
        }
        if bodies.is_empty() {
            return InFlight { items, epochs, replies, conn: Some(conn) };
        }
        for &i in &positions {
            self.fork.begin_send(&items[i].channel);
        }
        let sent = bodies.len();
        match conn.start_requests(bodies).await {
            Ok(pending) => {
                skytale_proto::probe::mark_n("send.written", sent);
                for (i, p) in positions.into_iter().zip(pending) {
                    replies[i] = Some(p);
                }
            }
            Err(e) => {
                tracing::debug!(code = e.code(), "writing a batch of sends failed; sending one by one");
                for &i in &positions {
                    self.fork.end_send(&items[i].channel, None);
                }
            }
        }
        InFlight { items, epochs, replies, conn: Some(conn) }
    }

    /// Settles a batch in order: an acked item resolves; anything else goes through the
    /// careful one-by-one path (same client_msg_id: the relay drops duplicates). Returns
    /// whether any item needed that path.
    async fn settle(&self, batch: InFlight) -> bool {
        let InFlight { items, replies, .. } = batch;
        let mut careful = false;
        for (item, reply) in items.into_iter().zip(replies) {
            careful |= reply.is_none();
            let res = match reply {
                Some(pending) => match pending.ack().await {
                    Ok(ack) => {
                        self.fork.end_send(&item.channel, Some(ack.seq));
                        self.fork.note_sent(&item.channel, ack.epoch, &item.data);
                        Ok(ack.seq)
                    }
                    Err(_) => {
                        careful = true;
                        self.fork.end_send(&item.channel, None);
                        self.deliver_one(&item).await
                    }
                },
                None => self.deliver_one(&item).await,
            };
            let _ = item.done.send(res);
        }
        careful
    }
}

/// The positions of `batch`'s items by channel: channels in the order they first appear, each
/// channel's positions in call order.
fn positions_by_channel(batch: &[OutItem]) -> Vec<(&str, Vec<usize>)> {
    let mut runs: Vec<(&str, Vec<usize>)> = Vec::new();
    let mut index: HashMap<&str, usize> = HashMap::new();
    for (i, item) in batch.iter().enumerate() {
        match index.get(item.channel.as_str()) {
            Some(&r) => runs[r].1.push(i),
            None => {
                index.insert(item.channel.as_str(), runs.len());
                runs.push((item.channel.as_str(), vec![i]));
            }
        }
    }
    runs
}

/// A batch of sends written to the relay whose acks are awaited.
struct InFlight {
    items: Vec<OutItem>,
    /// The relay epoch each item was encrypted at (`None`: not sent on the fast path).
    epochs: Vec<Option<u64>>,
    replies: Vec<Option<PendingReply>>,
    /// The connection its sends were written on.
    conn: Option<Arc<RelayConnection>>,
}

impl InFlight {
    /// Whether its sends were written on `conn`.
    fn on(&self, conn: &Option<Arc<RelayConnection>>) -> bool {
        match (&self.conn, conn) {
            (Some(a), Some(b)) => Arc::ptr_eq(a, b) && !b.is_closed(),
            _ => false,
        }
    }

    /// Waits until every reply of the batch is in (or will not come in time). Cancel-safe.
    async fn arrived(&mut self) {
        for reply in self.replies.iter_mut().flatten() {
            reply.arrived().await;
        }
    }

    /// Without waiting: whether a reply that came so far refuses its send.
    fn refused_so_far(&mut self) -> bool {
        self.replies.iter_mut().flatten().any(|r| r.refused_so_far())
    }

    /// Whether this batch sent an item of `channel` at another epoch than `epoch`.
    fn other_epoch(&self, channel: &str, epoch: u64) -> bool {
        self.items.iter().zip(&self.epochs).any(|(i, e)| i.channel == channel && e.is_some_and(|e| e != epoch))
    }
}

/// Times one send is retried after the relay failed to store it (`SKYTALE_INTERNAL`), with
/// backoff (8–15 s in all) before the error reaches the caller.
const MAX_RELAY_FAILURES: u32 = 8;

/// Most sends written to the relay before waiting for their acks.
pub(super) const SEND_WINDOW: usize = 64;

/// How long a send waits for the commit of a member's leave request before it fails with
/// `SKYTALE_INVALID_STATE` (any member commits it; normally within a round trip).
const LEAVE_COMMIT_WAIT: Duration = Duration::from_secs(60);

/// Most batches whose acks are awaited while the next one is encrypted and written.
const BATCHES_IN_FLIGHT: usize = 4;

pub(super) async fn outbox_loop(shared: Arc<Shared>) {
    let mut closed = shared.closed.subscribe();
    let mut in_flight: VecDeque<InFlight> = VecDeque::new();
    loop {
        if *closed.borrow() {
            // Settle what was written (acks that came resolve their sends; the rest fail with
            // the closed client's error).
            while let Some(f) = in_flight.pop_front() {
                let _ = shared.settle(f).await;
            }
            return;
        }
        if in_flight.len() < BATCHES_IN_FLIGHT {
            let batch: Vec<OutItem> = match shared.outbox.lock() {
                Ok(mut o) => {
                    let n = o.len().min(SEND_WINDOW);
                    o.drain(..n).collect()
                }
                Err(_) => Vec::new(),
            };
            if !batch.is_empty() {
                let mut prepared = shared.encrypt_batch(&batch).await;
                // Sends of one channel at two epochs must not be in flight together: if the
                // older ones are refused (a commit came first), the newer could be archived
                // before their retries. Settle what is in flight first.
                let moved_on = batch.iter().zip(&prepared).any(|(item, p)| {
                    p.as_ref().is_some_and(|(epoch, _)| in_flight.iter().any(|f| f.other_epoch(&item.channel, *epoch)))
                });
                // A batch written on another connection than the one in flight (a reconnect
                // in between) could overtake their refused items the same way.
                let current = shared.conn.borrow().clone();
                let moved_on = moved_on || in_flight.iter().any(|f| !f.on(&current));
                // A send already refused is sent again before anything new goes out.
                let moved_on = moved_on || in_flight.iter_mut().any(|f| f.refused_so_far());
                if moved_on {
                    while let Some(f) = in_flight.pop_front() {
                        let _ = shared.settle(f).await;
                    }
                    // The refused sends just went again, encrypted anew after this batch was:
                    // encrypt it again too, so that the channel's order stays its encryption
                    // order (a receiver keeps only a few past generations' keys; the
                    // generations skipped here are in the tolerated forward gap).
                    prepared = shared.encrypt_batch(&batch).await;
                }
                in_flight.push_back(shared.write_batch(batch, prepared).await);
                continue;
            }
        }
        if in_flight.len() < BATCHES_IN_FLIGHT {
            if let Some(front) = in_flight.front_mut() {
                // Nothing to write now: wait for the oldest batch's acks, but write sends queued
                // meanwhile at once (at a steady rate a send would otherwise wait for the acks
                // of the one before it; measured: a limit of 2 batches here instead was slower
                // both paced and flooded).
                tokio::select! {
                    _ = front.arrived() => {}
                    _ = shared.outbox_notify.notified() => continue,
                    _ = closed.changed() => continue,
                }
            }
        }
        if let Some(f) = in_flight.pop_front() {
            if shared.settle(f).await {
                // An item was refused (rate limit, epoch, transport) and sent again one by one:
                // the batches written after it may hold refused items too. They are settled
                // (and their refused items resent, in order) before anything new is written,
                // so no later message overtakes them.
                while let Some(f) = in_flight.pop_front() {
                    shared.settle(f).await;
                }
            }
            continue;
        }
        tokio::select! {
            _ = shared.outbox_notify.notified() => {}
            _ = closed.changed() => {}
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(channel: &str) -> OutItem {
        let (done, _) = oneshot::channel();
        OutItem { channel: channel.into(), client_msg_id: String::new(), data: Zeroizing::new(Vec::new()), done }
    }

    #[test]
    fn a_batch_is_encrypted_by_channel_each_in_call_order() {
        let batch: Vec<OutItem> = ["a", "b", "a", "c", "b", "a"].into_iter().map(item).collect();
        assert_eq!(positions_by_channel(&batch), vec![("a", vec![0, 2, 5]), ("b", vec![1, 4]), ("c", vec![3])]);
    }
}
