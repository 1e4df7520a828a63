//! Small helpers of the state shared by a client's tasks: epochs, the outbox queue,
//! follow-up scheduling, membership bookkeeping, events and the live connection.

use super::*;

impl Shared {
    /// The relay epoch to send and commit at: the relay's commit slot count as this agent has
    /// followed it (it differs from the MLS epoch once a commit was rejected by the members).
    pub(super) fn send_epoch(&self, channel: &str) -> Result<u64> {
        match self.agent.relay_epoch(channel)? {
            Some(e) => Ok(e),
            None => Ok(self.agent.epoch(channel)?),
        }
    }

    /// The channel's GroupInfo prefixed with the relay epoch it belongs to (what invites seal,
    /// so an external joiner can tell a stale one and commit at the right relay epoch).
    pub(super) fn group_info_with_epoch(&self, channel: &str) -> Result<Vec<u8>> {
        let mut out = self.send_epoch(channel)?.to_be_bytes().to_vec();
        out.extend_from_slice(&self.agent.export_group_info(channel)?);
        Ok(out)
    }

    /// Queues enveloped plaintext for the channel and waits for the relay's ack.
    pub(super) async fn enqueue(&self, channel: &str, framed: Vec<u8>) -> Result<u64> {
        self.push_outbox(channel, framed)?.await.map_err(|_| ClientError::Closed)?
    }

    /// Appends to the outbox (in call order) and returns the receiver of the relay's answer.
    pub(super) fn push_outbox(&self, channel: &str, framed: Vec<u8>) -> Result<oneshot::Receiver<Result<u64>>> {
        // Called on the caller's thread (the JS thread for the Node binding): a channel this
        // agent is a member of is known from memory; only another name costs a keystore lookup.
        let member = self.member_channels.lock().map(|set| set.contains(channel)).unwrap_or(false);
        if !member && !self.agent.has_channel(channel)? {
            return Err(CoreError::ChannelNotFound(channel.to_string()).into());
        }
        if *self.closed.borrow() {
            return Err(ClientError::Closed);
        }
        let (tx, rx) = oneshot::channel();
        {
            let mut outbox = self.outbox.lock().map_err(|_| ClientError::Closed)?;
            outbox.push_back(OutItem {
                channel: channel.to_string(),
                client_msg_id: random_id(),
                data: Zeroizing::new(framed),
                done: tx,
            });
        }
        self.outbox_notify.notify_one();
        Ok(rx)
    }

    pub(super) fn schedule(&self, f: FollowUp) {
        if let Ok(mut q) = self.followups.lock() {
            q.push_back(f);
        }
        self.followup_notify.notify_one();
    }

    /// Schedules a key-package top-up, unless one is queued already.
    pub(super) fn schedule_key_package_top_up(&self) {
        if let Ok(mut q) = self.followups.lock() {
            if q.iter().any(|f| matches!(f, FollowUp::TopUpKeyPackages)) {
                return;
            }
            q.push_back(FollowUp::TopUpKeyPackages);
        }
        self.followup_notify.notify_one();
    }

    /// Publishes [`ClientConfig::key_package_batch`] more key packages when the relay holds
    /// fewer than [`ClientConfig::key_package_low_water`] of this agent's, so that others can
    /// keep adding it.
    pub(super) async fn top_up_key_packages(&self, conn: &RelayConnection) -> Result<()> {
        let held = conn.count_key_packages().await?;
        if held < self.config.key_package_low_water {
            let kps = self.agent.generate_key_packages(self.config.key_package_batch)?;
            conn.publish_key_packages(kps).await?;
        }
        Ok(())
    }

    /// Live invites of a channel held in the keystore.
    pub(super) fn invites_of(&self, channel: &str) -> Vec<(InviteToken, StoredInvite)> {
        let now = now_secs();
        self.agent
            .kv_list(&format!("invite/{channel}/"))
            .unwrap_or_default()
            .into_iter()
            .filter_map(|(_, v)| serde_json::from_slice::<StoredInvite>(&v).ok())
            .filter(|s| s.expires_at == 0 || s.expires_at > now)
            .filter_map(|s| InviteToken::parse(&s.token).ok().map(|t| (t, s)))
            .collect()
    }

    /// Re-reads from the keystore whether this agent is a member of `channel` and updates the
    /// in-memory list behind [`Client::member_channels`].
    pub(super) fn note_membership(&self, channel: &str) {
        let member = self.agent.is_member(channel).unwrap_or(false);
        let mut set = match self.member_channels.lock() {
            Ok(s) => s,
            Err(p) => p.into_inner(),
        };
        if member {
            set.insert(channel.to_string());
        } else {
            set.remove(channel);
        }
    }

    /// Schedules the removal of the members whose leave requests were voided in `channel`.
    pub(super) fn schedule_voided_leaves(&self, channel: &str) {
        for identity in self.agent.voided_leaves(channel).unwrap_or_default() {
            self.schedule(FollowUp::RemoveVoidedLeave { channel: channel.to_string(), identity });
        }
    }

    /// A number stored under `key` (8 bytes, big endian); `None` if absent or unreadable.
    fn kv_u64(&self, key: &str) -> Option<u64> {
        let bytes = self.agent.kv_get(key).ok().flatten()?;
        <[u8; 8]>::try_from(bytes.as_slice()).ok().map(u64::from_be_bytes)
    }

    /// Whether `channel`'s live invites may hold a GroupInfo older than `relay_epoch` (the
    /// channel's epoch at the relay, from `Subscribe`): this agent is at that epoch and did not
    /// record a refresh at it. Behind the relay, the commits still to come refresh anyway.
    pub(super) fn invites_refresh_owed(&self, channel: &str, relay_epoch: u64) -> bool {
        if self.send_epoch(channel).ok() != Some(relay_epoch) || self.invites_of(channel).is_empty() {
            return false;
        }
        self.kv_u64(&invites_refreshed_key(channel)) != Some(relay_epoch)
    }

    /// Records that every live invite of `channel` holds the GroupInfo of `epoch`.
    pub(super) fn invites_refreshed(&self, channel: &str, epoch: u64) {
        if let Err(e) = self.agent.kv_put(&invites_refreshed_key(channel), &epoch.to_be_bytes()) {
            // Left behind, it only makes the next connect refresh again.
            tracing::debug!(code = e.code(), "recording an invite refresh failed");
        }
    }

    /// Records that this agent's leaf in `channel` was just refreshed (created, joined, rotated).
    pub(super) fn mark_self_updated(&self, channel: &str) {
        if let Err(e) = self.agent.kv_put(&self_update_key(channel), &now_secs().to_be_bytes()) {
            tracing::debug!(code = e.code(), "recording the self-update time failed");
        }
    }

    /// After an add of this agent (no update path): records, in the keystore, that the
    /// self-update check is owed, then schedules it. The record outlives a crash: the next
    /// connect schedules the check again ([`Shared::self_update_owed`]).
    pub(super) fn owe_self_update(&self, channel: &str) {
        if let Err(e) = self.agent.kv_put(&self_update_owed_key(channel), &[1]) {
            self.emit_error(Some(channel), e.code(), format!("recording a due key update failed: {e}"));
        }
        self.schedule(FollowUp::SelfUpdate { channel: channel.to_string() });
    }

    /// Whether an add of this agent in `channel` still owes its self-update check.
    pub(super) fn self_update_owed(&self, channel: &str) -> bool {
        matches!(self.agent.kv_get(&self_update_owed_key(channel)), Ok(Some(_)))
    }

    /// The owed self-update check of `channel` is done (rotated, not due, or not a member).
    pub(super) fn self_update_settled(&self, channel: &str) {
        if let Err(e) = self.agent.kv_delete(&self_update_owed_key(channel)) {
            // Left behind, it only makes the next connect check again.
            tracing::debug!(code = e.code(), "clearing an owed key update failed");
        }
    }

    /// Whether this agent's leaf in `channel` is older than the configured self-update interval.
    pub(super) fn self_update_due(&self, channel: &str) -> bool {
        let last = self.kv_u64(&self_update_key(channel)).unwrap_or(0);
        now_secs().saturating_sub(last) >= self.config.self_update_interval.as_secs()
    }

    pub(super) fn slot(&self, channel: &str) -> Arc<ChannelSlot> {
        let mut map = match self.channels.lock() {
            Ok(m) => m,
            Err(p) => p.into_inner(),
        };
        map.entry(channel.to_string())
            .or_insert_with(|| Arc::new(ChannelSlot { lock: Mutex::new(()), notify: Notify::new() }))
            .clone()
    }

    pub(super) fn emit(&self, event: ClientEvent) {
        let _ = self.events.send(event);
    }

    pub(super) fn emit_error(&self, channel: Option<&str>, code: &str, message: String) {
        tracing::warn!(channel = channel.unwrap_or(""), code, "background error");
        self.emit(ClientEvent::Error { channel: channel.map(str::to_string), code: code.to_string(), message });
    }

    /// The live connection, waiting for one while reconnecting.
    pub(super) async fn live_conn(&self) -> Result<Arc<RelayConnection>> {
        let mut rx = self.conn.subscribe();
        let mut closed = self.closed.subscribe();
        loop {
            if *closed.borrow() {
                return Err(ClientError::Closed);
            }
            if let Some(c) = rx.borrow_and_update().clone() {
                return Ok(c);
            }
            tokio::select! {
                r = rx.changed() => { if r.is_err() { return Err(ClientError::Closed); } }
                _ = closed.changed() => {}
            }
        }
    }

    /// Waits until the connection differs from `old` (after a transport failure).
    pub(super) async fn next_conn(&self, old: &Arc<RelayConnection>) -> Result<Arc<RelayConnection>> {
        loop {
            let c = self.live_conn().await?;
            if !Arc::ptr_eq(&c, old) {
                return Ok(c);
            }
            let mut rx = self.conn.subscribe();
            let mut closed = self.closed.subscribe();
            tokio::select! {
                r = rx.changed() => { if r.is_err() { return Err(ClientError::Closed); } }
                _ = closed.changed() => {}
                _ = tokio::time::sleep(Duration::from_millis(250)) => {}
            }
        }
    }

    /// The relay no longer counts this agent as a member of `channel` (removed while it was
    /// offline): says so, and stops treating the channel as joined (its state stays in the
    /// keystore, inactive, until the agent leaves or is added again).
    pub(super) fn removed_at_relay(&self, channel: &str) {
        self.emit_error(
            Some(channel),
            "SKYTALE_NOT_A_MEMBER",
            format!("the relay says this agent is no longer a member of {channel}"),
        );
        if let Ok(mut set) = self.member_channels.lock() {
            set.remove(channel);
        }
    }
}
