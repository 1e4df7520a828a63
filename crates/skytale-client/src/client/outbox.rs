//! The outbox: sends in call order, pipelined (encrypt a run in one keystore transaction,
//! write all frames, then collect the Acks), with a careful one-by-one path for the rest.

use super::*;

impl Shared {
    /// Encrypts and sends one outbox item until the relay acks it.
    pub(super) async fn deliver_one(&self, item: &OutItem) -> Result<u64> {
        let slot = self.slot(&item.channel);
        let mut conn = self.live_conn().await?;
        let mut wrong_epochs = 0;
        let mut relay_failures: u32 = 0;
        loop {
            // While the channel resyncs (issue #10) its sends wait, then go out in the new epoch.
            self.fork.wait_healed(&item.channel).await;
            let (epoch, payload) = {
                let _guard = slot.lock.lock().await;
                let epoch = self.send_epoch(&item.channel)?;
                (epoch, self.agent.encrypt(&item.channel, &item.data)?)
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

    /// Fast path: encrypts the items in order, writes all their Sends, then collects the Acks
    /// (frames go out in order: the writes are polled in order and the stream lock is FIFO).
    /// Returns `Some(result)` for items settled here, `None` for those to retry one by one.
    pub(super) async fn send_pipelined(&self, batch: &[OutItem]) -> Vec<Option<Result<u64>>> {
        let Some(conn) = self.conn.borrow().clone() else {
            return batch.iter().map(|_| None).collect();
        };
        // Encrypt each run of same-channel items in one keystore transaction.
        let mut prepared: Vec<Option<(u64, Vec<u8>)>> = Vec::with_capacity(batch.len());
        let mut start = 0;
        while start < batch.len() {
            let channel = &batch[start].channel;
            let end = start + batch[start..].iter().take_while(|i| &i.channel == channel).count();
            let slot = self.slot(channel);
            let _guard = slot.lock.lock().await;
            let plaintexts: Vec<&[u8]> = batch[start..end].iter().map(|i| i.data.as_slice()).collect();
            let encrypted = if self.fork.is_healing(channel) {
                Err(CoreError::InvalidState("the channel is resyncing".into()).into())
            // careful path waits
            } else {
                self.send_epoch(channel).and_then(|epoch| Ok((epoch, self.agent.encrypt_batch(channel, &plaintexts)?)))
            };
            match encrypted {
                Ok((epoch, wires)) => prepared.extend(wires.into_iter().map(|w| Some((epoch, w)))),
                // Settle these one by one: the careful path reports each item's own error.
                Err(_) => prepared.extend((start..end).map(|_| None)),
            }
            start = end;
        }
        let sends = batch.iter().zip(prepared.iter()).map(|(item, enc)| {
            let conn = conn.clone();
            async move {
                match enc {
                    Some((epoch, payload)) => {
                        self.fork.begin_send(&item.channel);
                        let r = conn
                            .send(&item.channel, &item.client_msg_id, Kind::Application, *epoch, payload.clone())
                            .await;
                        self.fork.end_send(&item.channel, r.as_ref().ok().map(|a| a.seq));
                        Some(r)
                    }
                    None => None,
                }
            }
        });
        let replies = futures::future::join_all(sends).await;
        replies
            .into_iter()
            .zip(batch)
            .map(|(reply, item)| match reply {
                Some(Ok(ack)) => {
                    self.fork.note_sent(&item.channel, ack.epoch, &item.data);
                    Some(Ok(ack.seq))
                }
                _ => None,
            })
            .collect()
    }
}

/// Times one send is retried after the relay failed to store it (`SKYTALE_INTERNAL`), with
/// backoff (8–15 s in all) before the error reaches the caller.
const MAX_RELAY_FAILURES: u32 = 8;

/// Most sends written to the relay before waiting for their acks.
pub(super) const SEND_WINDOW: usize = 64;

pub(super) async fn outbox_loop(shared: Arc<Shared>) {
    let mut closed = shared.closed.subscribe();
    loop {
        if *closed.borrow() {
            return;
        }
        let batch: Vec<OutItem> = match shared.outbox.lock() {
            Ok(mut o) => {
                let n = o.len().min(SEND_WINDOW);
                o.drain(..n).collect()
            }
            Err(_) => Vec::new(),
        };
        if batch.is_empty() {
            tokio::select! {
                _ = shared.outbox_notify.notified() => {}
                _ = closed.changed() => {}
                _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            }
            continue;
        }
        let results = shared.send_pipelined(&batch).await;
        for (item, res) in batch.into_iter().zip(results) {
            // Anything the fast path could not settle goes through the careful one-by-one path
            // (same client_msg_id: the relay drops duplicates), in order.
            let res = match res {
                Some(r) => r,
                None => shared.deliver_one(&item).await,
            };
            let _ = item.done.send(res);
        }
    }
}
