//! Pipelined requests: several frames written to the relay in one stream write, their replies
//! awaited later. The client's outbox keeps a few batches of sends in flight this way while it
//! encrypts the next one.

use super::*;

/// A request written to the relay whose reply has not been read yet. Dropping it forgets the
/// reply.
pub struct PendingReply {
    conn: RelayConnection,
    id: u64,
    rx: mpsc::UnboundedReceiver<Frame>,
    deadline: tokio::time::Instant,
    /// The reply's first frame, once [`PendingReply::arrived`] saw it.
    first: Option<Frame>,
    /// [`PendingReply::arrived`] has returned: a frame is in, or none will come in time.
    waited: bool,
}

impl Drop for PendingReply {
    fn drop(&mut self) {
        lock(&self.conn.inner.pending).remove(&self.id);
    }
}

impl RelayConnection {
    /// Writes `bodies` as requests, in this order, in one stream write, and returns a pending
    /// reply for each. When this returns the frames are written, so requests started later
    /// reach the relay after them. Fails as a whole if the write fails.
    pub async fn start_requests(&self, bodies: Vec<Body>) -> Result<Vec<PendingReply>, ProtoError> {
        let deadline = tokio::time::Instant::now() + self.inner.timeout;
        let mut bytes = Vec::new();
        let mut pending = Vec::with_capacity(bodies.len());
        for body in bodies {
            let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
            let (tx, rx) = mpsc::unbounded_channel();
            lock(&self.inner.pending).insert(id, tx);
            pending.push(PendingReply { conn: self.clone(), id, rx, deadline, first: None, waited: false });
            bytes.extend_from_slice(&encode_frame(&Frame::new(id, body), self.inner.max_frame)?);
        }
        let write = async {
            let mut s = self.inner.send.lock().await;
            s.write_all(&bytes).await.map_err(|e| ProtoError::Transport(e.to_string()))
        };
        match tokio::time::timeout_at(deadline, write).await {
            Ok(Ok(())) => Ok(pending),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(ProtoError::Timeout),
        }
    }
}

impl PendingReply {
    /// Waits for the reply, within the connection's request timeout counted from the write.
    /// An `Error` reply becomes [`ProtoError::Relay`], a `Nack` [`ProtoError::WrongEpoch`].
    pub async fn reply(mut self) -> Result<Reply, ProtoError> {
        let conn = self.conn.clone();
        let first = self.first.take();
        match tokio::time::timeout_at(self.deadline, collect_reply(&conn, first, &mut self.rx)).await {
            Ok(r) => r,
            Err(_) => Err(ProtoError::Timeout),
        }
    }

    /// Waits until the reply's first frame is in (for a `Send`, its whole reply), the
    /// connection is gone or the request timed out; [`PendingReply::reply`] then returns at
    /// once. Cancel-safe: call it again to go on waiting.
    pub async fn arrived(&mut self) {
        if self.waited {
            return;
        }
        if let Ok(frame) = tokio::time::timeout_at(self.deadline, self.rx.recv()).await {
            self.first = frame;
        }
        self.waited = true;
    }

    /// Without waiting: whether what came so far says the request failed (an `Error` or a
    /// `Nack`, or the connection is gone). `false` while nothing came.
    pub fn refused_so_far(&mut self) -> bool {
        if !self.waited {
            match self.rx.try_recv() {
                Ok(frame) => {
                    self.first = Some(frame);
                    self.waited = true;
                }
                Err(mpsc::error::TryRecvError::Empty) => return false,
                Err(mpsc::error::TryRecvError::Disconnected) => self.waited = true,
            }
        }
        match &self.first {
            Some(f) => matches!(f.body, Some(Body::Error(_)) | Some(Body::Nack(_)) | None),
            None => true, // gone, or timed out while waited for
        }
    }

    /// Waits for the `Ack` of a `Send` (see [`PendingReply::reply`]).
    pub async fn ack(self) -> Result<Ack, ProtoError> {
        match self.reply().await?.last {
            Some(Body::Ack(a)) => Ok(a),
            _ => Err(ProtoError::Unexpected("expected Ack")),
        }
    }
}
