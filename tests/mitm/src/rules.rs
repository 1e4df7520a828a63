//! Fault rules: which frames a rule matches and what it does to them. A rule is a JSON object;
//! every filter is optional (absent = any):
//!
//! ```json
//! {"action": "drop", "dir": "to_client", "frame": "deliver", "kind": "commit",
//!  "channel": "acme/x/y", "to": ["bob"], "from": ["alice"], "via": "push",
//!  "count": 1, "every": 2, "prob": 0.3, "delay_ms": 200}
//! ```
//!
//! - `action`: `drop` (never forwarded; `withhold` is the same), `duplicate` (forwarded twice),
//!   `delay` (forwarded `delay_ms` later, so later frames overtake it), `reorder` (held until
//!   the next frame of the same direction has passed), `replay` (forwarded, then an earlier
//!   delivery of the channel is sent to the client again), `fake_ack` (a `Commit` request is
//!   answered with an `Ack` by the proxy and never reaches the relay), `substitute` (a
//!   delivered commit's payload is replaced by a commit of the same epoch that the relay
//!   refused), `spoof` (the sender a `deliver` or `welcome` frame names is replaced by `as`:
//!   what the relay claims, never what MLS authenticates).
//! - `dir`: `to_client` (default: relay → client frames) or `to_relay`.
//! - `frame`: the body (`deliver`, `commit`, `send`, `ack`, `nack`, `fetch`, …); default
//!   `deliver` for `to_client` and any for `to_relay`.
//! - `kind`: the item kind of a `deliver` or `send` (`application`, `commit`, `proposal`,
//!   `join_request`). `to`: identities of the client connection. `from`: the item's sender.
//! - `via`: `push` (request id 0), `reply` (e.g. deliveries of a `Fetch`), `any` (default).
//! - `count`: fire at most this often; `every`: fire on every n-th match; `prob`: fire with
//!   this probability.

use serde::Deserialize;
use skytale_proto::frames::{Body, Frame, Kind};

/// Which way a frame goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Dir {
    /// Relay → client.
    ToClient,
    /// Client → relay.
    ToRelay,
}

fn to_client() -> Dir {
    Dir::ToClient
}

/// What a rule does to a frame it fires on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Never forwarded.
    #[serde(alias = "withhold")]
    Drop,
    /// Forwarded twice.
    Duplicate,
    /// Forwarded after `delay_ms`.
    Delay,
    /// Held until the next frame of the same direction has passed.
    Reorder,
    /// Forwarded, then an earlier delivery of the channel is sent again.
    Replay,
    /// A `Commit` request answered with a made-up `Ack`; the relay never sees it.
    FakeAck,
    /// A delivered commit's payload replaced by a refused commit of the same epoch.
    Substitute,
    /// The sender named by a `deliver` or `welcome` frame replaced by the rule's `as`.
    Spoof,
}

/// One scripted fault.
#[derive(Debug, Clone, Deserialize)]
pub struct Rule {
    /// What to do.
    pub action: Action,
    /// Which direction.
    #[serde(default = "to_client")]
    pub dir: Dir,
    /// Body name filter.
    #[serde(default)]
    pub frame: Option<String>,
    /// Item kind filter.
    #[serde(default)]
    pub kind: Option<String>,
    /// Channel filter.
    #[serde(default)]
    pub channel: Option<String>,
    /// Connection identities.
    #[serde(default)]
    pub to: Option<Vec<String>>,
    /// Item senders.
    #[serde(default)]
    pub from: Option<Vec<String>>,
    /// `push`, `reply` or `any`.
    #[serde(default)]
    pub via: Option<String>,
    /// Fire at most this often.
    #[serde(default)]
    pub count: Option<u64>,
    /// Fire on every n-th match.
    #[serde(default)]
    pub every: Option<u64>,
    /// Fire with this probability.
    #[serde(default)]
    pub prob: Option<f64>,
    /// Delay of `delay`.
    #[serde(default)]
    pub delay_ms: Option<u64>,
    /// The sender `spoof` claims.
    #[serde(default, rename = "as")]
    pub as_sender: Option<String>,
    /// Frames that matched the filters.
    #[serde(skip)]
    pub matched: u64,
    /// Times the rule fired.
    #[serde(skip)]
    pub fired: u64,
}

/// The name of a body, as rules filter on it.
pub fn body_name(b: &Body) -> &'static str {
    match b {
        Body::Auth(_) => "auth",
        Body::Ping(_) => "ping",
        Body::CreateChannel(_) => "create_channel",
        Body::Subscribe(_) => "subscribe",
        Body::Unsubscribe(_) => "unsubscribe",
        Body::Send(_) => "send",
        Body::Commit(_) => "commit",
        Body::Fetch(_) => "fetch",
        Body::PublishKeyPackages(_) => "publish_key_packages",
        Body::ClaimKeyPackage(_) => "claim_key_package",
        Body::FetchWelcomes(_) => "fetch_welcomes",
        Body::AckWelcome(_) => "ack_welcome",
        Body::CountKeyPackages(_) => "count_key_packages",
        Body::ChannelState(_) => "channel_state",
        Body::CreateInvite(_) => "create_invite",
        Body::UpdateInvite(_) => "update_invite",
        Body::RevokeInvite(_) => "revoke_invite",
        Body::FetchInvite(_) => "fetch_invite",
        Body::AuthOk(_) => "auth_ok",
        Body::Pong(_) => "pong",
        Body::Error(_) => "error",
        Body::Ack(_) => "ack",
        Body::Nack(_) => "nack",
        Body::Deliver(_) => "deliver",
        Body::ChannelInfo(_) => "channel_info",
        Body::KeyPackage(_) => "key_package",
        Body::Welcome(_) => "welcome",
        Body::Done(_) => "done",
        Body::InviteInfo(_) => "invite_info",
    }
}

/// The name of an item kind.
pub fn kind_name(k: i32) -> &'static str {
    match Kind::try_from(k) {
        Ok(Kind::Application) => "application",
        Ok(Kind::Proposal) => "proposal",
        Ok(Kind::Commit) => "commit",
        Ok(Kind::JoinRequest) => "join_request",
        _ => "unspecified",
    }
}

/// Channel, item kind and sender a frame is about (as far as it says).
pub fn about(frame: &Frame) -> (Option<&str>, Option<&'static str>, Option<&str>) {
    match &frame.body {
        Some(Body::Deliver(d)) => (Some(&d.channel), Some(kind_name(d.kind)), Some(&d.sender)),
        Some(Body::Welcome(w)) => (Some(&w.channel), None, Some(&w.sender)),
        Some(Body::Send(s)) => (Some(&s.channel), Some(kind_name(s.kind)), None),
        Some(Body::Commit(c)) => (Some(&c.channel), Some("commit"), None),
        Some(Body::Ack(a)) => (Some(&a.channel), None, None),
        Some(Body::Nack(n)) => (Some(&n.channel), None, None),
        Some(Body::Fetch(f)) => (Some(&f.channel), None, None),
        Some(Body::Subscribe(s)) => (Some(&s.channel), None, None),
        Some(Body::ChannelState(s)) => (Some(&s.channel), None, None),
        Some(Body::ChannelInfo(i)) => (Some(&i.channel), None, None),
        _ => (None, None, None),
    }
}

impl Rule {
    /// Whether the frame passes every filter of the rule.
    pub fn matches(&self, dir: Dir, identity: &str, frame: &Frame) -> bool {
        if dir != self.dir {
            return false;
        }
        let Some(body) = &frame.body else { return false };
        let name = body_name(body);
        match (&self.frame, dir) {
            (Some(f), _) if f != name => return false,
            (None, Dir::ToClient) if name != "deliver" => return false,
            _ => {}
        }
        let (channel, kind, sender) = about(frame);
        let pass = |filter: &Option<String>, value: Option<&str>| match filter {
            Some(f) => value == Some(f.as_str()),
            None => true,
        };
        if !pass(&self.channel, channel) || !pass(&self.kind, kind) {
            return false;
        }
        if let Some(to) = &self.to {
            if !to.iter().any(|t| t == identity) {
                return false;
            }
        }
        if let Some(from) = &self.from {
            if !sender.map(|s| from.iter().any(|f| f == s)).unwrap_or(false) {
                return false;
            }
        }
        match self.via.as_deref() {
            Some("push") => frame.request_id == 0,
            Some("reply") => frame.request_id != 0,
            _ => true,
        }
    }

    /// Counts a match and decides whether the rule fires on it.
    pub fn fire(&mut self) -> bool {
        self.matched += 1;
        if self.count.map(|c| self.fired >= c).unwrap_or(false) {
            return false;
        }
        if let Some(every) = self.every.filter(|e| *e > 1) {
            if !self.matched.is_multiple_of(every) {
                return false;
            }
        }
        if let Some(p) = self.prob {
            if rand::random::<f64>() >= p {
                return false;
            }
        }
        self.fired += 1;
        true
    }
}
