//! # skytale-node
//!
//! `#[napi]` glue only: exposes `skytale-core`'s [`Agent`](skytale_core::Agent) and its
//! channels to Node.js as the `Agent` and `Channel` classes of `@skytale/sdk`. Every call that
//! touches disk or crypto runs on libuv's thread pool and returns a `Promise`; failures reject
//! with an `Error` whose `code` is the core's stable code (`SKYTALE_…`).

#![deny(clippy::unwrap_used, clippy::expect_used)]

mod agent;
mod channel;
mod client;
mod errors;
mod policy;
mod task;
mod types;
