//! The plaintext envelope of channel messages inside MLS: one byte saying whether the rest is
//! user data or a control message between members' SDKs, and the control messages themselves.
//! Every binding (the TypeScript SDK's client, the SLIM bridge) frames messages this way.

use zeroize::Zeroizing;

use crate::error::{Error, Result};

/// Envelope byte of user data.
pub const ENVELOPE_DATA: u8 = 0;
/// Envelope byte of a control message.
pub const ENVELOPE_CONTROL: u8 = 1;

/// A control message between members.
#[derive(serde::Serialize, serde::Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(tag = "t", rename_all = "camelCase")]
pub enum Control {
    /// A member shares an invite token with the other members so any of them can admit the
    /// joiner (the invite's authority is its entry in the channel policy, not this message).
    #[serde(rename_all = "camelCase")]
    Invite {
        /// The token (`skt_inv_…`).
        token: String,
        /// Max uses.
        max_uses: u32,
        /// Expiry, unix seconds.
        expires_at: u64,
    },
}

/// Frames user data: `ENVELOPE_DATA ‖ data`.
pub fn frame_data(data: &[u8]) -> Vec<u8> {
    let mut framed = Vec::with_capacity(data.len() + 1);
    framed.push(ENVELOPE_DATA);
    framed.extend_from_slice(data);
    framed
}

/// Frames a control message: `ENVELOPE_CONTROL ‖ JSON` (zeroized on drop: it may hold a token).
pub fn frame_control(control: &Control) -> Result<Zeroizing<Vec<u8>>> {
    let json = Zeroizing::new(serde_json::to_vec(control).map_err(|e| Error::Internal(format!("control: {e}")))?);
    let mut framed = Zeroizing::new(Vec::with_capacity(json.len() + 1));
    framed.push(ENVELOPE_CONTROL);
    framed.extend_from_slice(&json);
    Ok(framed)
}

/// Parses the body of a control message (after the envelope byte).
pub fn parse_control(body: &[u8]) -> Result<Control> {
    serde_json::from_slice(body).map_err(|_| Error::InvalidMessage("unreadable control message".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_round_trip_and_garbage() {
        let c = Control::Invite { token: "skt_inv_x".into(), max_uses: 2, expires_at: 9 };
        let framed = frame_control(&c).unwrap();
        assert_eq!(framed[0], ENVELOPE_CONTROL);
        assert_eq!(parse_control(&framed[1..]).unwrap(), c);
        // The wire form is what earlier clients wrote.
        assert_eq!(&framed[1..], br#"{"t":"invite","token":"skt_inv_x","maxUses":2,"expiresAt":9}"#);
        assert_eq!(parse_control(b"{\"t\":\"leave\"}").unwrap_err().code(), "SKYTALE_INVALID_MESSAGE");
        assert_eq!(frame_data(b"hi"), vec![ENVELOPE_DATA, b'h', b'i']);
    }
}
