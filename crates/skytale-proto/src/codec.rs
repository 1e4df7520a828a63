//! Framing: every frame is a 4-byte big-endian length `N` followed by `N` bytes of a
//! protobuf-encoded [`Frame`]. `N` must not exceed the receiver's cap; a receiver that sees a
//! larger `N` answers `SKYTALE_FRAME_TOO_LARGE` and closes without reading the body.

use bytes::{BufMut, Bytes, BytesMut};
use prost::Message;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::{Frame, ProtoError, PROTOCOL_VERSION};

/// Encodes a frame with its length prefix, refusing frames larger than `max` bytes.
pub fn encode_frame(frame: &Frame, max: usize) -> Result<Bytes, ProtoError> {
    let len = frame.encoded_len();
    if len > max {
        return Err(ProtoError::FrameTooLarge { size: len, max });
    }
    let mut buf = BytesMut::with_capacity(4 + len);
    buf.put_u32(len as u32);
    frame.encode(&mut buf).map_err(|e| ProtoError::Malformed(e.to_string()))?;
    Ok(buf.freeze())
}

/// Decodes the body of one frame (without the length prefix) and checks its version and body.
pub fn decode_frame(buf: &[u8]) -> Result<Frame, ProtoError> {
    let frame = Frame::decode(buf).map_err(|e| ProtoError::Malformed(e.to_string()))?;
    if frame.version != PROTOCOL_VERSION {
        return Err(ProtoError::UnsupportedVersion(frame.version));
    }
    if frame.body.is_none() {
        return Err(ProtoError::Malformed("frame without body".to_string()));
    }
    Ok(frame)
}

/// Reads one length-prefixed frame's bytes. Returns `Ok(None)` on a clean end of stream before
/// a length prefix. A length above `max` is an error and the body is not read.
pub async fn read_frame_bytes<R: AsyncRead + Unpin>(reader: &mut R, max: usize) -> Result<Option<Vec<u8>>, ProtoError> {
    let mut len_buf = [0u8; 4];
    let mut got = 0;
    while got < 4 {
        let n = reader.read(&mut len_buf[got..]).await.map_err(|e| ProtoError::Transport(e.to_string()))?;
        if n == 0 {
            if got == 0 {
                return Ok(None);
            }
            return Err(ProtoError::Malformed("truncated length prefix".to_string()));
        }
        got += n;
    }
    let len = u32::from_be_bytes(len_buf) as usize;
    if len > max {
        return Err(ProtoError::FrameTooLarge { size: len, max });
    }
    let mut body = vec![0u8; len];
    reader.read_exact(&mut body).await.map_err(|e| ProtoError::Transport(e.to_string()))?;
    Ok(Some(body))
}

/// Reads and decodes one frame (see [`read_frame_bytes`] and [`decode_frame`]).
pub async fn read_frame<R: AsyncRead + Unpin>(reader: &mut R, max: usize) -> Result<Option<Frame>, ProtoError> {
    match read_frame_bytes(reader, max).await? {
        Some(b) => decode_frame(&b).map(Some),
        None => Ok(None),
    }
}

/// Encodes and writes one frame.
pub async fn write_frame<W: AsyncWrite + Unpin>(
    writer: &mut W,
    frame: &Frame,
    max: usize,
) -> Result<usize, ProtoError> {
    let bytes = encode_frame(frame, max)?;
    writer.write_all(&bytes).await.map_err(|e| ProtoError::Transport(e.to_string()))?;
    Ok(bytes.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frames::{Body, Ping};

    #[tokio::test]
    async fn roundtrip_and_cap() {
        let f = Frame::new(7, Body::Ping(Ping {}));
        let bytes = encode_frame(&f, 1024).unwrap();
        let mut r = &bytes[..];
        let back = read_frame(&mut r, 1024).await.unwrap().unwrap();
        assert_eq!(back, f);
        let mut r = &bytes[..];
        assert!(matches!(read_frame(&mut r, 1).await, Err(ProtoError::FrameTooLarge { .. })));
        let mut empty: &[u8] = &[];
        assert!(read_frame(&mut empty, 1024).await.unwrap().is_none());
        let mut v = Frame::new(1, Body::Ping(Ping {}));
        v.version = 9;
        let b = encode_frame(&v, 1024).unwrap();
        assert!(matches!(decode_frame(&b[4..]), Err(ProtoError::UnsupportedVersion(9))));
    }
}
