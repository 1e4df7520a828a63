//! Invite checks: id syntax, authenticator hashing and constant-time comparison, and the
//! validate-and-count step of a join request or `FetchInvite` (run on the storage thread, so
//! checking and counting a use are atomic).

use skytale_proto::ErrorCode;

use crate::error::{RelayError, Result};
use crate::metrics::Metrics;
use crate::now_ms;
use crate::store::{ChannelRow, InviteRow, Store};

/// Max length of an invite id (`[A-Za-z0-9_-]`).
pub const MAX_INVITE_ID_LEN: usize = 64;
/// Max length of an invite authenticator.
pub const MAX_INVITE_AUTH_LEN: usize = 256;

/// Checks an invite id: 1..=64 chars of `[A-Za-z0-9_-]`.
pub fn validate_invite_id(id: &str) -> Result<()> {
    if id.is_empty()
        || id.len() > MAX_INVITE_ID_LEN
        || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        return Err(RelayError::wire(
            ErrorCode::InvalidRequest,
            format!("invite_id must be 1..={MAX_INVITE_ID_LEN} chars of [A-Za-z0-9_-]"),
        ));
    }
    Ok(())
}

/// SHA-256 of an invite authenticator (the relay stores only this).
pub fn auth_hash(auth: &[u8]) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(auth).into()
}

/// Constant-time equality of two byte strings (the length is not secret: both are hashes).
fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

/// Validates an invite for `channel` (whose org the caller already checked) and counts a use by
/// `identity` (once per distinct identity). Returns the invite, its use count and the channel's
/// state. Runs on the storage thread.
pub fn use_invite(
    metrics: &Metrics,
    store: &mut dyn Store,
    channel: &str,
    invite_id: &str,
    invite_auth: &[u8],
    identity: &str,
) -> Result<(InviteRow, u32, ChannelRow)> {
    let refuse = |code: ErrorCode, msg: &str| {
        Metrics::add(&metrics.invite_refusals, 1);
        RelayError::wire(code, msg)
    };
    let presented = auth_hash(invite_auth);
    let inv = match store.invite(invite_id)? {
        Some(inv) => {
            // compare first, always, so timing does not depend on which check fails
            let auth_ok = ct_eq(&presented, &inv.auth_hash);
            if auth_ok && !inv.revoked && inv.channel == channel {
                inv
            } else {
                return Err(refuse(ErrorCode::InviteInvalid, "invalid invite"));
            }
        }
        None => return Err(refuse(ErrorCode::InviteInvalid, "invalid invite")),
    };
    if now_ms() / 1000 >= inv.expires_at {
        return Err(refuse(ErrorCode::InviteExpired, "the invite has expired"));
    }
    let Some(row) = store.channel(channel)? else {
        return Err(refuse(ErrorCode::InviteInvalid, "invalid invite"));
    };
    let uses = store.invite_uses(&inv.id)?;
    if store.invite_used_by(&inv.id, identity)? {
        return Ok((inv, uses, row));
    }
    if uses >= inv.max_uses {
        return Err(refuse(ErrorCode::InviteUsedUp, "the invite has been used up"));
    }
    store.add_invite_use(&inv.id, identity, now_ms())?;
    Metrics::add(&metrics.invite_uses, 1);
    Ok((inv, uses + 1, row))
}
