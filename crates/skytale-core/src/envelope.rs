//! Padding of application plaintext to size buckets, so the relay (and anyone watching) learns a
//! bucket, not a length: 256 B, 1 KiB, 4 KiB, 16 KiB, 32 KiB, then 32 KiB steps (capped below the
//! relay's frame limit). Format inside MLS: `0x02 ‖ u32 BE length ‖ plaintext ‖ zero padding`.
//! Plaintext that does not start with the marker (written before padding existed) passes as is.

use crate::error::{Error, Result};

/// First byte of a padded plaintext.
const PADDED: u8 = 0x02;
/// Header: marker + u32 length.
const HEADER: usize = 5;
/// Largest padded size (the relay refuses frames over 256 KiB; MLS adds its own overhead).
const MAX_PADDED: usize = 255 * 1024;

/// The bucket a padded plaintext of `len` bytes (header included) is rounded up to.
pub fn bucket(len: usize) -> usize {
    const SMALL: [usize; 5] = [256, 1024, 4096, 16 * 1024, 32 * 1024];
    let b = SMALL.iter().copied().find(|b| len <= *b).unwrap_or_else(|| len.div_ceil(32 * 1024) * (32 * 1024));
    b.min(MAX_PADDED.max(len))
}

/// Pads `plaintext` to its bucket.
pub fn pad(plaintext: &[u8]) -> Result<Vec<u8>> {
    let len = u32::try_from(plaintext.len()).map_err(|_| Error::InvalidArgument("message too large".into()))?;
    let total = bucket(plaintext.len() + HEADER);
    let mut out = Vec::with_capacity(total);
    out.push(PADDED);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(plaintext);
    out.resize(total, 0);
    Ok(out)
}

/// Removes the padding (plaintext without the marker is returned unchanged).
pub fn unpad(data: Vec<u8>) -> Result<Vec<u8>> {
    if data.first() != Some(&PADDED) {
        return Ok(data);
    }
    let bad = || Error::InvalidMessage("malformed padding".into());
    let len_bytes: [u8; 4] = data.get(1..HEADER).and_then(|b| b.try_into().ok()).ok_or_else(bad)?;
    let len = u32::from_be_bytes(len_bytes) as usize;
    let end = HEADER.checked_add(len).filter(|e| *e <= data.len()).ok_or_else(bad)?;
    if data[end..].iter().any(|b| *b != 0) {
        return Err(bad());
    }
    Ok(data[HEADER..end].to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_round_trip_and_garbage_is_refused() {
        for n in [0usize, 1, 250, 251, 252, 1000, 5000, 40_000, 100_000, 250_000] {
            let msg = vec![7u8; n];
            let p = pad(&msg).unwrap();
            assert!(p.len() >= n + HEADER);
            assert!(
                [256, 1024, 4096, 16384, 32768].contains(&p.len())
                    || p.len().is_multiple_of(32768)
                    || p.len() == MAX_PADDED.max(n + HEADER)
            );
            assert_eq!(unpad(p).unwrap(), msg);
        }
        assert_eq!(pad(b"a").unwrap().len(), 256);
        assert_eq!(pad(&[0u8; 300]).unwrap().len(), 1024);
        assert_eq!(unpad(b"\x00plain".to_vec()).unwrap(), b"\x00plain");
        for g in [&b"\x02"[..], b"\x02\x00\x00\x00\x09abc", b"\x02\x00\x00\x00\x01a\x01"] {
            assert_eq!(unpad(g.to_vec()).unwrap_err().code(), "SKYTALE_INVALID_MESSAGE");
        }
    }
}
