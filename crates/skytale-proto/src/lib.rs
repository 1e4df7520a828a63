//! Skytale wire protocol.
