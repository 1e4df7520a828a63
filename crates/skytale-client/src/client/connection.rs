//! The connection loop: enroll with the API server, connect and authenticate to the relay,
//! resubscribe, dispatch pushed frames, refresh the token, heartbeat, reconnect with backoff.

use super::*;

/// How long dialing one relay may take when there are others to try.
const DIAL_TIMEOUT: Duration = Duration::from_secs(5);

/// Most deliveries taken off the push queue at once.
const MAX_BURST: usize = 256;

/// Deliveries that arrived together, by channel: each channel's in arrival order (the relay's
/// order for that channel), channels in the order they first appear. The relay orders each
/// channel on its own, so applying one channel's run before another's changes nothing a member
/// can observe, and each run is applied in one keystore transaction even when the relay
/// interleaved the channels.
#[derive(Default)]
struct DeliveryBurst {
    runs: Vec<(String, Vec<Deliver>)>,
    index: HashMap<String, usize>,
    len: usize,
}

impl DeliveryBurst {
    fn push(&mut self, d: Deliver) {
        self.len += 1;
        match self.index.get(&d.channel) {
            Some(&i) => self.runs[i].1.push(d),
            None => {
                self.index.insert(d.channel.clone(), self.runs.len());
                self.runs.push((d.channel.clone(), vec![d]));
            }
        }
    }

    fn len(&self) -> usize {
        self.len
    }

    fn into_channels(self) -> Vec<(String, Vec<Deliver>)> {
        self.runs
    }
}

/// Dials the relays in turn, starting at `turn` (configured addresses first, else the ones the
/// API server published, starting at a per-identity offset so agents spread over the nodes);
/// leaves `turn` at the one that answered.
async fn dial(
    shared: &Arc<Shared>,
    token: &crate::tokens::Token,
    turn: &mut usize,
) -> Result<(String, RelayConnection, PushReceiver)> {
    let configured = shared.config.relay_list();
    let (list, offset) = if configured.is_empty() {
        let offset =
            shared.agent.identity().bytes().fold(0usize, |h, b| h.wrapping_mul(31).wrapping_add(usize::from(b)));
        (token.relays.clone(), offset)
    } else {
        (configured, 0)
    };
    if list.is_empty() {
        return Err(ClientError::NoRelay);
    }
    let mut last_err = None;
    for i in 0..list.len() {
        let at = turn.wrapping_add(i);
        let addr_str = &list[offset.wrapping_add(at) % list.len()];
        let addr: RelayAddr = addr_str.parse()?;
        let dialed = if list.len() > 1 {
            tokio::time::timeout(DIAL_TIMEOUT, RelayConnection::connect(&shared.endpoint, &addr))
                .await
                .unwrap_or(Err(skytale_proto::ProtoError::Timeout))
        } else {
            RelayConnection::connect(&shared.endpoint, &addr).await
        };
        match dialed {
            Ok((conn, pushes)) => {
                *turn = at;
                return Ok((addr_str.clone(), conn, pushes));
            }
            Err(e) => {
                tracing::debug!(relay = %addr_str, error = %e, "relay did not answer; trying the next");
                last_err = Some(e);
            }
        }
    }
    Err(last_err.map(ClientError::from).unwrap_or(ClientError::NoRelay))
}

pub(super) async fn connect_once(
    shared: &Arc<Shared>,
    turn: &mut usize,
) -> Result<(Arc<RelayConnection>, PushReceiver, u64)> {
    // The API server vouches for this agent: register its key (renews the credential), pin the
    // org's issuer keys, read revocations. Then a token bound to this identity.
    if let Err(e) = shared.tokens.enroll(&shared.agent).await {
        // An API server outage, or its rate limit (many agents reconnecting from one address at
        // once), must not keep an enrolled agent off the relay: its credential and pinned issuer
        // keys are in the keystore, and a cached token may still be valid.
        let enrolled = shared.agent.credential()?.is_some() && shared.agent.trust_anchors()?.is_some();
        if !(enrolled && matches!(e.code(), "SKYTALE_API_UNREACHABLE" | "SKYTALE_RATE_LIMITED")) {
            return Err(e);
        }
        tracing::warn!(code = e.code(), "API server unavailable; reconnecting with the stored credential");
    }
    let token = shared.tokens.get().await?;
    let (addr_str, conn, pushes) = dial(shared, &token, turn).await?;
    if let Ok(mut r) = shared.relay_addr.lock() {
        *r = addr_str;
    }
    let conn = Arc::new(conn);
    let ok = conn.auth(&token.jwt, shared.agent.identity()).await?;
    // Keep enough key packages on the relay for others to add this agent (and again after
    // each Welcome, which used one: `incoming.rs`).
    shared.top_up_key_packages(&conn).await?;
    for name in shared.agent.channel_names()? {
        if shared.agent.has_pending_commit(&name).unwrap_or(false) {
            match recover_pending_commit(shared, &conn, &name).await {
                Err(e) if e.code() == "SKYTALE_NOT_A_MEMBER" => {
                    shared.removed_at_relay(&name);
                    continue;
                }
                other => other?,
            }
        }
        shared.note_membership(&name);
        if shared.agent.is_member(&name).unwrap_or(false) {
            shared.slot(&name);
            if shared.self_update_owed(&name) {
                // An add's self-update check that a restart (or a failed rotation) left undone.
                shared.schedule(FollowUp::SelfUpdate { channel: name.clone() });
            }
            for (invite_id, identity) in shared.agent.owed_invite_uses(&name).unwrap_or_default() {
                // An external join whose invite use a restart left unrecorded; the joiner still
                // goes first.
                shared.schedule(FollowUp::RecordUse {
                    channel: name.clone(),
                    invite_id,
                    identity,
                    not_before: tokio::time::Instant::now() + incoming::RECORD_USE_GRACE,
                });
            }
            shared.schedule_voided_leaves(&name);
            if shared.agent.has_leave_requests(&name).unwrap_or(false) {
                // Leave requests seen before a restart, still waiting for a commit.
                shared.schedule(FollowUp::CommitLeaves { channel: name.clone() });
            }
            let after = shared.agent.last_seq(&name)?;
            match conn.subscribe(&name, after).await {
                Ok(info) => {
                    if shared.invites_refresh_owed(&name, info.epoch) {
                        // A refresh of the channel's invites that a restart (or a lost request)
                        // left undone: offline joiners need the current GroupInfo.
                        shared.schedule(FollowUp::RefreshInvites { channel: name.clone() });
                    }
                }
                // Removed while this agent was offline (the relay's roster says so): the other
                // channels must still work; the removal commit itself is not readable any more.
                Err(e) if e.code() == "SKYTALE_NOT_A_MEMBER" => shared.removed_at_relay(&name),
                Err(e) => return Err(e.into()),
            }
        }
    }
    Ok((conn, pushes, ok.expires_at))
}

/// Pings the relay every [`HEARTBEAT_EVERY`]; a missing answer closes the connection so the
/// client reconnects (a relay that died without closing is noticed within seconds).
pub(super) async fn heartbeat(conn: Arc<RelayConnection>) {
    loop {
        tokio::time::sleep(HEARTBEAT_EVERY).await;
        match tokio::time::timeout(HEARTBEAT_TIMEOUT, conn.ping()).await {
            Ok(Ok(())) => {}
            _ => {
                conn.close();
                return;
            }
        }
    }
}

/// Interval of liveness pings.
pub(super) const HEARTBEAT_EVERY: Duration = Duration::from_secs(2);

/// How long a ping may take before the connection is considered dead.
pub(super) const HEARTBEAT_TIMEOUT: Duration = Duration::from_secs(3);

pub(super) fn backoff(attempt: u32) -> Duration {
    let base = 100u64.saturating_mul(1u64 << attempt.min(6)).min(5_000);
    let jitter = rand::thread_rng().gen_range(0..=base / 2);
    Duration::from_millis(base / 2 + jitter)
}

/// The pause before the next connect attempt: the backoff, or what the API server asked for if
/// that is longer, plus up to a second of jitter then (agents refused together must not all
/// come back in the same instant).
fn reconnect_wait(attempt: u32, asked: Option<Duration>) -> Duration {
    let base = backoff(attempt);
    match asked {
        Some(asked) if asked >= base => asked + Duration::from_millis(rand::thread_rng().gen_range(0..=1000)),
        _ => base,
    }
}

pub(super) async fn connection_loop(shared: Arc<Shared>, first: oneshot::Sender<Result<()>>) {
    let mut first = Some(first);
    let mut attempt: u32 = 0;
    // Which relay to dial first: moves on after every failure or lost connection, so a client
    // of a relay cluster leaves a dead node at once.
    let mut turn: usize = 0;
    let mut closed = shared.closed.subscribe();
    // What the API server last asked to wait (its rate limit), and how long the first connect
    // has waited for it in all.
    let mut asked: Option<Duration> = None;
    let mut rate_limited_for = Duration::ZERO;
    loop {
        if *closed.borrow() {
            break;
        }
        match connect_once(&shared, &mut turn).await {
            Ok((conn, mut pushes, expires_at)) => {
                attempt = 0;
                let _ = shared.conn.send_replace(Some(conn.clone()));
                shared.emit(ClientEvent::Connected);
                if let Some(f) = first.take() {
                    let _ = f.send(Ok(()));
                }
                let heartbeat = tokio::spawn(heartbeat(conn.clone()));
                let refresh_in =
                    Duration::from_secs(expires_at.saturating_sub(now_secs())).saturating_sub(REFRESH_MARGIN);
                let mut refresh = Box::pin(tokio::time::sleep(refresh_in.max(Duration::from_secs(5))));
                loop {
                    tokio::select! {
                        frame = pushes.recv() => match frame {
                            Some(f) => match f.body {
                                Some(Body::Deliver(d)) => {
                                    // Take the rest of the burst (up to the next frame that is
                                    // not a delivery): each channel's deliveries in it are
                                    // applied in one keystore transaction, however the
                                    // channels interleave.
                                    let mut burst = DeliveryBurst::default();
                                    burst.push(d);
                                    let mut held = None;
                                    while burst.len() < MAX_BURST {
                                        match pushes.try_recv() {
                                            Some(Frame { body: Some(Body::Deliver(n)), .. }) => burst.push(n),
                                            Some(other) => { held = Some(other); break; }
                                            None => break,
                                        }
                                    }
                                    for (channel, ds) in burst.into_channels() {
                                        shared.handle_delivers(&channel, &ds).await;
                                    }
                                    if let Some(f) = held {
                                        shared.handle_push(&conn, f).await;
                                    }
                                }
                                Some(Body::Welcome(w)) => shared.handle_welcome(&conn, w).await,
                                Some(Body::Error(e)) => shared.emit_error(None, &e.code, e.message),
                                _ => {}
                            },
                            None => break,
                        },
                        _ = &mut refresh => {
                            match shared.tokens.get().await {
                                Ok(t) => match conn.auth(&t.jwt, shared.agent.identity()).await {
                                    Ok(ok) => {
                                        let next = Duration::from_secs(ok.expires_at.saturating_sub(now_secs())).saturating_sub(REFRESH_MARGIN);
                                        refresh = Box::pin(tokio::time::sleep(next.max(Duration::from_secs(5))));
                                    }
                                    Err(e) => { shared.emit_error(None, e.code(), format!("token refresh: {e}")); break; }
                                },
                                Err(e) => {
                                    shared.emit_error(None, e.code(), format!("token refresh: {e}"));
                                    // Again in 10 s, or as late as the API server's rate limit asks.
                                    let again = e.retry_after().map_or(Duration::from_secs(10), |a| a.max(Duration::from_secs(10)));
                                    refresh = Box::pin(tokio::time::sleep(again));
                                }
                            }
                        }
                        _ = closed.changed() => { conn.close(); break; }
                    }
                }
                heartbeat.abort();
                turn = turn.wrapping_add(1);
                let _ = shared.conn.send_replace(None);
                let code = conn.close_code();
                if *closed.borrow() {
                    break;
                }
                shared.emit(ClientEvent::Disconnected { code });
            }
            Err(e) => {
                asked = e.retry_after();
                if first.is_some() {
                    // The API server's rate limit (many agents starting from one address at
                    // once): wait as long as it asks, within the configured budget, and try
                    // again, instead of failing the connect.
                    match asked {
                        Some(wait) if rate_limited_for + wait <= shared.config.rate_limit_wait => {
                            tracing::warn!(
                                wait_ms = wait.as_millis() as u64,
                                "the API server rate-limits this connect; waiting as it asks"
                            );
                            rate_limited_for += wait;
                        }
                        _ => {
                            if let Some(f) = first.take() {
                                let _ = f.send(Err(e));
                            }
                            return;
                        }
                    }
                } else {
                    if e.is_permanent() {
                        shared.emit_error(None, e.code(), format!("giving up reconnecting: {e}"));
                        let _ = shared.closed.send_replace(true);
                        break;
                    }
                    tracing::debug!(code = e.code(), attempt, "reconnect failed");
                    turn = turn.wrapping_add(1);
                }
            }
        }
        let wait = reconnect_wait(attempt, asked.take());
        attempt = attempt.saturating_add(1);
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = closed.changed() => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deliver(channel: &str, seq: u64) -> Deliver {
        Deliver { channel: channel.into(), seq, ..Default::default() }
    }

    #[test]
    fn a_reconnect_waits_at_least_what_the_api_server_asked() {
        for attempt in 0..8 {
            assert!(reconnect_wait(attempt, None) <= Duration::from_secs(5));
            let w = reconnect_wait(attempt, Some(Duration::from_secs(30)));
            assert!(w >= Duration::from_secs(30) && w <= Duration::from_secs(31), "{w:?}");
            assert!(reconnect_wait(attempt, Some(Duration::from_millis(1))) <= Duration::from_secs(5));
        }
    }

    #[test]
    fn a_burst_groups_interleaved_channels_and_keeps_each_channels_order() {
        let mut burst = DeliveryBurst::default();
        for (c, s) in [("a", 1), ("b", 7), ("a", 2), ("c", 1), ("b", 8), ("a", 3)] {
            burst.push(deliver(c, s));
        }
        assert_eq!(burst.len(), 6);
        let runs: Vec<(String, Vec<u64>)> =
            burst.into_channels().into_iter().map(|(c, ds)| (c, ds.iter().map(|d| d.seq).collect())).collect();
        assert_eq!(
            runs,
            vec![("a".to_string(), vec![1, 2, 3]), ("b".to_string(), vec![7, 8]), ("c".to_string(), vec![1])]
        );
    }
}
