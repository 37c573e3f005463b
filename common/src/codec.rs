//! The one place that knows the byte encoding (bincode 2, serde mode, fixed-width integers).
//!
//! Every encode/decode in Ordo goes through here, with an explicit size limit on decode, so
//! that swapping the codec is a one-file change.

use serde::Serialize;
use serde::de::DeserializeOwned;

/// Why bytes could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// The input is larger than the caller's limit; nothing was allocated for it.
    #[error("encoded value is {len} bytes, over the limit of {limit} bytes")]
    TooLarge { len: u64, limit: u64 },
    /// The bytes are not a valid encoding of the expected type.
    #[error("malformed encoding: {0}")]
    Malformed(String),
    /// The value decoded but left bytes unread, which means a version or type mismatch.
    #[error("{trailing} trailing bytes after the encoded value")]
    TrailingBytes { trailing: usize },
}

/// Decoding never claims more than this many bytes of memory for one value, whatever a
/// (possibly hostile) length prefix says.
const DECODE_CLAIM_BYTES_MAX: usize = crate::limits::FRAME_BYTES_MAX as usize;

fn config() -> impl bincode::config::Config {
    bincode::config::standard()
        .with_fixed_int_encoding()
        .with_little_endian()
        .with_limit::<DECODE_CLAIM_BYTES_MAX>()
}

/// Encodes `value`. Encoding an in-memory value cannot fail for Ordo's types (no maps with
/// non-string keys, no unsupported serde attributes); a failure is a programmer error.
pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    bincode::serde::encode_to_vec(value, config()).expect("ordo types always encode")
}

/// What decoding a whole snapshot may claim: a snapshot's body is checksummed and bounded by
/// its own limit before it is decoded, and its tables (the registry above all) decode to more
/// than one frame's worth of memory.
const SNAPSHOT_DECODE_CLAIM_BYTES_MAX: usize = 1 << 34;

fn snapshot_config() -> impl bincode::config::Config {
    bincode::config::standard()
        .with_fixed_int_encoding()
        .with_little_endian()
        .with_limit::<SNAPSHOT_DECODE_CLAIM_BYTES_MAX>()
}

/// Decodes a `T` from all of `bytes`, refusing input over `limit` bytes before decoding.
pub fn decode<T: DeserializeOwned>(bytes: &[u8], limit: u64) -> Result<T, DecodeError> {
    decode_with(bytes, limit, config())
}

/// [`decode`] for a snapshot's body, whose decoded tables may claim more memory than a frame
/// (up to 16 GiB); the bytes themselves are still refused over `limit`.
pub fn decode_snapshot_body<T: DeserializeOwned>(
    bytes: &[u8],
    limit: u64,
) -> Result<T, DecodeError> {
    decode_with(bytes, limit, snapshot_config())
}

fn decode_with<T: DeserializeOwned>(
    bytes: &[u8],
    limit: u64,
    config: impl bincode::config::Config,
) -> Result<T, DecodeError> {
    if bytes.len() as u64 > limit {
        return Err(DecodeError::TooLarge {
            len: bytes.len() as u64,
            limit,
        });
    }
    let (value, read) = bincode::serde::decode_from_slice(bytes, config)
        .map_err(|error| DecodeError::Malformed(error.to_string()))?;
    if read != bytes.len() {
        return Err(DecodeError::TrailingBytes {
            trailing: bytes.len() - read,
        });
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Entry, EntryPayload};

    #[test]
    fn entry_round_trips() {
        let entry = Entry {
            term: 3,
            index: 9,
            payload: EntryPayload::Normal(vec![1, 2, 3].into()),
        };
        let bytes = encode(&entry);
        let back: Entry = decode(&bytes, 1024).unwrap();
        assert_eq!(back, entry);
    }

    #[test]
    fn over_limit_is_refused_before_decoding() {
        let bytes = encode(&Entry {
            term: 1,
            index: 1,
            payload: EntryPayload::Noop,
        });
        let error = decode::<Entry>(&bytes, 4).unwrap_err();
        assert!(
            matches!(error, DecodeError::TooLarge { limit: 4, .. }),
            "{error}"
        );
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for len in 0..64 {
            let garbage: Vec<u8> = (0..len).map(|i| (i * 37 + 11) as u8).collect();
            let _ = decode::<Entry>(&garbage, 1 << 20);
        }
        let mut bytes = encode(&Entry {
            term: 1,
            index: 1,
            payload: EntryPayload::Noop,
        });
        bytes.push(0);
        assert!(matches!(
            decode::<Entry>(&bytes, 1024),
            Err(DecodeError::TrailingBytes { .. })
        ));
    }
}
