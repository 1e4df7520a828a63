//! # skytale-client
//!
//! The IO driver around [`skytale_core::Agent`]: it gets relay tokens from the API server with
//! an API key (refreshing them before they expire), keeps one iroh QUIC connection to the relay
//! (reconnecting with backoff and jitter), subscribes to every channel of the agent resuming
//! from the last processed sequence number (kept in the keystore), and processes incoming
//! commits, messages and welcomes in the background, in relay order. Sends made while
//! disconnected wait in an outbox and are delivered exactly once (a client message id lets the
//! relay drop duplicates); commits are ordered by the relay (first wins) and a losing commit is
//! discarded, the missed items are applied, and the operation is retried.
//!
//! Delivered messages land in the channel's inbox in the keystore, in the same transaction
//! that advances the channel's sequence number, so neither a crash nor a restart loses or
//! repeats one; [`Client::next_event`] takes them in order.

mod client;
mod error;
mod registry;
mod tokens;

pub use client::{
    AcceptWelcomes, ChannelEvent, ChannelStats, Client, ClientConfig, ClientEvent, InviteInfo,
    MAX_SELF_UPDATE_INTERVAL, RATE_LIMIT_WAIT, SELF_UPDATE_INTERVAL,
};
pub use error::{ClientError, Result};
pub use skytale_core::invite::InviteToken;
/// Latency probes (a benchmark diagnostic, off unless `SKYTALE_PROBE_DIR` is set).
pub use skytale_proto::probe;
pub use tokens::{Token, TokenSource};
