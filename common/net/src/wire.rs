//! Frames on the wire: `[length: u32 LE][version: u8][body: codec bytes]`, where `length`
//! counts the version byte and the body. The length is checked against the caller's named
//! limit **before** anything is allocated for the body; a frame of another version is refused.

use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use ordo_common::codec::{self, DecodeError};

/// The wire format version this build speaks.
pub const WIRE_VERSION: u8 = 15;

/// ALPN of the coordinator-to-coordinator protocol. Only node certificates may speak it.
pub const PEER_ALPN: &[u8] = b"ordo-peer/1";
/// ALPN of the client protocol (participants, the CLI).
pub const CLIENT_ALPN: &[u8] = b"ordo-client/1";

/// Why a frame could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("frame of {length} bytes exceeds the limit of {limit} bytes")]
    TooLarge { length: u64, limit: u64 },
    #[error("empty frame (no version byte)")]
    Empty,
    #[error("frame version {found}, this build speaks version {WIRE_VERSION}")]
    Version { found: u8 },
    #[error("malformed frame body: {0}")]
    Decode(#[from] DecodeError),
    #[error("stream ended inside a frame")]
    Truncated,
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
}

/// Encodes one frame.
pub fn encode_frame<T: Serialize>(value: &T) -> Vec<u8> {
    let body = codec::encode(value);
    let length = (body.len() + 1) as u32;
    let mut frame = Vec::with_capacity(body.len() + 5);
    frame.extend_from_slice(&length.to_le_bytes());
    frame.push(WIRE_VERSION);
    frame.extend_from_slice(&body);
    frame
}

/// Writes one frame.
pub async fn write_frame<T: Serialize, W: AsyncWrite + Unpin>(
    writer: &mut W,
    value: &T,
) -> Result<(), FrameError> {
    writer.write_all(&encode_frame(value)).await?;
    Ok(())
}

/// Reads one frame of at most `limit` bytes. `Ok(None)` means the stream ended cleanly
/// between frames.
pub async fn read_frame<T: DeserializeOwned, R: AsyncRead + Unpin>(
    reader: &mut R,
    limit: u64,
) -> Result<Option<T>, FrameError> {
    let Some(length) = read_frame_length(reader, limit).await? else {
        return Ok(None);
    };
    let body = read_frame_body(reader, length).await?;
    decode_frame_body(&body, limit).map(Some)
}

/// Reads a frame's header: the length of what follows, checked against `limit` before anything
/// is allocated. `Ok(None)` means the stream ended cleanly between frames. A caller that
/// budgets memory reserves the length, then reads the body with [`read_frame_body`].
pub async fn read_frame_length<R: AsyncRead + Unpin>(
    reader: &mut R,
    limit: u64,
) -> Result<Option<u64>, FrameError> {
    let mut header = [0u8; 4];
    let mut filled = 0;
    while filled < header.len() {
        let read = reader.read(&mut header[filled..]).await?;
        if read == 0 {
            return if filled == 0 {
                Ok(None)
            } else {
                Err(FrameError::Truncated)
            };
        }
        filled += read;
    }
    let length = u32::from_le_bytes(header) as u64;
    if length > limit {
        return Err(FrameError::TooLarge { length, limit });
    }
    if length == 0 {
        return Err(FrameError::Empty);
    }
    Ok(Some(length))
}

/// What a frame's body buffer starts with; it grows as bytes arrive, never ahead of them.
pub const FRAME_BODY_INITIAL_BYTES: u64 = 64 << 10;

/// Reads the `length` bytes of a frame's body (version byte included). The buffer grows with
/// what arrives, not with what the header declares: a sender that declares a large frame and
/// then stalls or stops makes the reader hold only what it sent.
pub async fn read_frame_body<R: AsyncRead + Unpin>(
    reader: &mut R,
    length: u64,
) -> Result<Vec<u8>, FrameError> {
    let mut body = Vec::with_capacity(length.min(FRAME_BODY_INITIAL_BYTES) as usize);
    let read = reader
        .take(length)
        .read_to_end(&mut body)
        .await
        .map_err(FrameError::Io)?;
    if (read as u64) < length {
        return Err(FrameError::Truncated);
    }
    Ok(body)
}

/// Checks a body's version byte and decodes the rest.
pub fn decode_frame_body<T: DeserializeOwned>(body: &[u8], limit: u64) -> Result<T, FrameError> {
    let (&version, rest) = body.split_first().ok_or(FrameError::Empty)?;
    if version != WIRE_VERSION {
        return Err(FrameError::Version { found: version });
    }
    Ok(codec::decode(rest, limit)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn frames_round_trip_and_end_cleanly() {
        let mut bytes = encode_frame(&("hello".to_string(), 7u64));
        bytes.extend(encode_frame(&("again".to_string(), 8u64)));
        let mut reader = bytes.as_slice();
        let first: Option<(String, u64)> = read_frame(&mut reader, 1024).await.unwrap();
        assert_eq!(first, Some(("hello".into(), 7)));
        let second: Option<(String, u64)> = read_frame(&mut reader, 1024).await.unwrap();
        assert_eq!(second, Some(("again".into(), 8)));
        assert!(
            read_frame::<(String, u64), _>(&mut reader, 1024)
                .await
                .unwrap()
                .is_none()
        );
    }

    #[tokio::test]
    async fn an_oversized_length_is_refused_before_allocating() {
        let bytes = [0xFF, 0xFF, 0xFF, 0xFF, WIRE_VERSION];
        let error = read_frame::<u64, _>(&mut bytes.as_slice(), 1 << 20)
            .await
            .unwrap_err();
        assert!(
            matches!(
                error,
                FrameError::TooLarge {
                    length: 0xFFFF_FFFF,
                    ..
                }
            ),
            "{error}"
        );
    }

    #[tokio::test]
    async fn wrong_version_truncation_and_garbage_are_errors() {
        let mut frame = encode_frame(&5u64);
        let other = WIRE_VERSION.wrapping_add(1);
        frame[4] = other;
        let error = read_frame::<u64, _>(&mut frame.as_slice(), 1024)
            .await
            .unwrap_err();
        assert!(matches!(error, FrameError::Version { found } if found == other));
        let frame = encode_frame(&5u64);
        let error = read_frame::<u64, _>(&mut &frame[..7], 1024)
            .await
            .unwrap_err();
        assert!(matches!(error, FrameError::Truncated));
        let garbage = [3, 0, 0, 0, WIRE_VERSION, 0xAB, 0xCD];
        let error = read_frame::<String, _>(&mut garbage.as_slice(), 1024)
            .await
            .unwrap_err();
        assert!(matches!(error, FrameError::Decode(_)), "{error}");
    }
}
