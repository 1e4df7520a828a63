//! Reads of channel items: `Subscribe` (replay, then live) and `Fetch`. Both are for members
//! only and start after the member's `since_seq` (a member added by a commit reads only what
//! comes after that commit). Reads go to the storage thread in bounded chunks (items and
//! bytes), so a large read never holds the storage thread for long and other channels and orgs
//! are served in between; nothing global is held while the items are written out.

use skytale_proto::frames::*;
use skytale_proto::ErrorCode;
use tokio::sync::oneshot;

use super::{wire, Session};
use crate::channel::{require_member, Cmd};
use crate::error::{RelayError, Result};
use crate::hub::Subscriber;

/// Items read per storage round.
const CHUNK_ITEMS: usize = 256;
/// Payload bytes read per storage round (a larger single item is read alone).
const CHUNK_BYTES: usize = 1024 * 1024;

impl Session {
    pub(super) async fn subscribe(&mut self, rid: u64, s: Subscribe) -> Result<bool> {
        self.check_channel(&s.channel)?;
        let (_, me) = self.me();
        let relay = self.relay.clone();
        // The actor checks the roster, registers us between batches and answers with the
        // high-water mark: live items (> hw) queue up in the push queue while we replay
        // (max(after_seq, since_seq), hw] directly.
        let sub = Subscriber {
            identity: me.clone(),
            tx: self.push_tx.clone(),
            ctl: self.ctl.clone(),
            akid: self.peer.as_ref().and_then(|p| p.akid.clone()),
            iat: self.peer.as_ref().map(|p| p.iat).unwrap_or(0),
        };
        let (tx, rx) = oneshot::channel();
        let cmd = Cmd::Subscribe { conn_id: self.conn_id, sub, reply: tx };
        // Remembered first, so the subscription is dropped with the session even if the
        // session ends while waiting for the actor.
        self.subscribed.insert(s.channel.clone());
        relay.channels.send(&relay, &s.channel, cmd);
        let (row, since) = match rx.await.map_err(|_| RelayError::Storage("channel actor stopped".to_string()))? {
            Ok(x) => x,
            Err(e) => {
                self.subscribed.remove(&s.channel);
                return Err(e);
            }
        };
        let info = ChannelInfo { channel: s.channel.clone(), epoch: row.epoch, last_seq: row.last_seq, created: false };
        if !self.reply(rid, Body::ChannelInfo(info)).await {
            return Ok(false);
        }
        let mut after = s.after_seq.max(since);
        while after < row.last_seq {
            let (name, me, hw) = (s.channel.clone(), me.clone(), row.last_seq);
            let page =
                relay.storage.call(move |st| st.read_range(&name, after, hw, &me, CHUNK_ITEMS, CHUNK_BYTES)).await?;
            if page.is_empty() {
                break;
            }
            for d in page {
                after = d.seq;
                if !self.reply(0, Body::Deliver(d)).await {
                    return Ok(false);
                }
            }
        }
        Ok(true)
    }

    /// `Fetch`: items `max(after_seq, since_seq) < seq <= last_seq` (as of the request), at
    /// most `limit` (≤ `max_fetch`) items and `max_fetch_bytes` of payload (one larger item is
    /// sent alone). `Done{more: true, last_seq}` when the reply was cut: resume from `last_seq`.
    pub(super) async fn fetch(&mut self, rid: u64, f: Fetch) -> Result<bool> {
        self.check_channel(&f.channel)?;
        let (_, me) = self.me();
        let limits = &self.relay.config.limits;
        let limit = if f.limit == 0 { limits.max_fetch } else { f.limit.min(limits.max_fetch) } as usize;
        let max_bytes = limits.max_fetch_bytes;
        let relay = self.relay.clone();
        let (name, who) = (f.channel.clone(), me.clone());
        let (row, since) = self
            .relay
            .storage
            .call(move |s| {
                let row = s.channel(&name)?.ok_or_else(|| wire(ErrorCode::ChannelNotFound, "no such channel"))?;
                let since = require_member(&relay, s, &name, &who)?;
                Ok((row, since))
            })
            .await?;
        let hw = row.last_seq;
        let mut after = f.after_seq.max(since);
        let (mut count, mut bytes, mut more) = (0usize, 0usize, false);
        'read: while after < hw {
            if count >= limit || bytes >= max_bytes {
                // Cut by the limits: is anything left for this reader?
                let (name, me) = (f.channel.clone(), me.clone());
                let next = self.relay.storage.call(move |s| s.read_range(&name, after, hw, &me, 1, 0)).await?;
                more = !next.is_empty();
                break;
            }
            let want = (limit - count).min(CHUNK_ITEMS);
            let budget = (max_bytes - bytes).min(CHUNK_BYTES);
            let (name, me) = (f.channel.clone(), me.clone());
            let page = self.relay.storage.call(move |s| s.read_range(&name, after, hw, &me, want, budget)).await?;
            if page.is_empty() {
                break;
            }
            for d in page {
                let len = d.payload.len();
                if count > 0 && bytes.saturating_add(len) > max_bytes {
                    more = true;
                    break 'read;
                }
                count += 1;
                bytes = bytes.saturating_add(len);
                after = d.seq;
                if !self.reply(rid, Body::Deliver(d)).await {
                    return Ok(false);
                }
            }
        }
        let last_seq = if more { after } else { hw.max(f.after_seq) };
        Ok(self.reply(rid, Body::Done(Done { count: count as u64, last_seq, more })).await)
    }
}
