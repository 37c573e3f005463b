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

/// How much more memory than input bytes a frame or record may claim while it decodes: its
/// strings and byte buffers claim what they hold, and its vectors their elements' in-memory
/// size, which is at most about 4.5 times their smallest encoding (a message with a one-byte
/// topic and nothing else: 26 bytes encoded, 112 in memory); twice that, for margin.
const DECODE_CLAIM_FACTOR: usize = 8;
/// The same for a snapshot's body, whose tables hold many small rows.
const SNAPSHOT_CLAIM_FACTOR: usize = 16;
/// What any input may claim, however short: room for the fixed parts of every value.
const CLAIM_FLOOR_BYTES: usize = 1 << 20;

/// The claim tiers a decode is given (bincode takes its limit as a constant): the smallest one
/// at or above what the input may claim, so a short input with a huge length prefix is refused
/// before anything is allocated for it.
const CLAIM_TIERS: [usize; 5] = [1 << 20, 16 << 20, 256 << 20, 4 << 30, 16 << 30];

/// What decoding `input` bytes may claim: in proportion to the input, within the decoder's
/// ceiling (one frame for frames and records, 16 GiB for a snapshot's body).
pub fn claim_limit(input: usize, snapshot: bool) -> u64 {
    let (factor, ceiling) = if snapshot {
        (SNAPSHOT_CLAIM_FACTOR, SNAPSHOT_DECODE_CLAIM_BYTES_MAX)
    } else {
        (DECODE_CLAIM_FACTOR, DECODE_CLAIM_BYTES_MAX)
    };
    let wanted = input.saturating_mul(factor).max(CLAIM_FLOOR_BYTES);
    let tier = CLAIM_TIERS
        .into_iter()
        .find(|tier| *tier >= wanted)
        .unwrap_or(ceiling);
    tier.min(ceiling) as u64
}

fn config() -> impl bincode::config::Config {
    bincode::config::standard()
        .with_fixed_int_encoding()
        .with_little_endian()
        .with_limit::<DECODE_CLAIM_BYTES_MAX>()
}

fn claiming<const LIMIT: usize>() -> impl bincode::config::Config {
    bincode::config::standard()
        .with_fixed_int_encoding()
        .with_little_endian()
        .with_limit::<LIMIT>()
}

/// Encodes `value`. Encoding an in-memory value cannot fail for Ordo's types (no maps with
/// non-string keys, no unsupported serde attributes); a failure is a programmer error.
pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    bincode::serde::encode_to_vec(value, config()).expect("ordo types always encode")
}

/// [`encode`] appended to `out`, for a caller that builds a larger value around it: the same
/// bytes, without a buffer of their own.
pub fn encode_into<T: Serialize>(value: &T, out: &mut Vec<u8>) {
    bincode::serde::encode_into_std_write(value, out, config()).expect("ordo types always encode");
}

/// What decoding a whole snapshot may claim at most: a snapshot's body is checksummed and
/// bounded by its own limit before it is decoded, and its tables (the registry above all)
/// decode to more than one frame's worth of memory.
const SNAPSHOT_DECODE_CLAIM_BYTES_MAX: usize = 1 << 34;

/// Decodes a `T` from all of `bytes`, refusing input over `limit` bytes before decoding.
pub fn decode<T: DeserializeOwned>(bytes: &[u8], limit: u64) -> Result<T, DecodeError> {
    decode_claiming(bytes, limit, claim_limit(bytes.len(), false))
}

/// [`decode`] for a snapshot's body, whose decoded tables may claim more memory than a frame
/// (up to 16 GiB, in proportion to the body); the bytes themselves are still refused over
/// `limit`.
pub fn decode_snapshot_body<T: DeserializeOwned>(
    bytes: &[u8],
    limit: u64,
) -> Result<T, DecodeError> {
    decode_claiming(bytes, limit, claim_limit(bytes.len(), true))
}

/// Decodes with the claim tier `claim` (one of [`CLAIM_TIERS`], or a ceiling).
fn decode_claiming<T: DeserializeOwned>(
    bytes: &[u8],
    limit: u64,
    claim: u64,
) -> Result<T, DecodeError> {
    const TIER_0: usize = CLAIM_TIERS[0];
    const TIER_1: usize = CLAIM_TIERS[1];
    const TIER_2: usize = CLAIM_TIERS[2];
    const TIER_3: usize = CLAIM_TIERS[3];
    match claim as usize {
        TIER_0 => decode_with(bytes, limit, claiming::<TIER_0>()),
        TIER_1 => decode_with(bytes, limit, claiming::<TIER_1>()),
        TIER_2 => decode_with(bytes, limit, claiming::<TIER_2>()),
        TIER_3 => decode_with(bytes, limit, claiming::<TIER_3>()),
        DECODE_CLAIM_BYTES_MAX => decode_with(bytes, limit, config()),
        _ => decode_with(bytes, limit, claiming::<SNAPSHOT_DECODE_CLAIM_BYTES_MAX>()),
    }
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
    fn a_short_input_cannot_claim_a_large_allocation() {
        // A string whose length prefix says 48 MiB, in 12 bytes: refused by the claim limit
        // (1 MiB for so short an input) before anything is allocated for it.
        let mut bytes = (48u64 << 20).to_le_bytes().to_vec();
        bytes.extend_from_slice(b"abcd");
        let error = decode::<String>(&bytes, 1 << 30).unwrap_err();
        assert!(error.to_string().contains("Limit"), "{error}");
        let error = decode_snapshot_body::<String>(&bytes, 1 << 30).unwrap_err();
        assert!(error.to_string().contains("Limit"), "{error}");
        assert_eq!(claim_limit(12, false), 1 << 20);
        assert_eq!(claim_limit(80, true), 1 << 20);
        assert_eq!(claim_limit(1 << 20, false), 16 << 20);
        assert_eq!(claim_limit(64 << 20, false), DECODE_CLAIM_BYTES_MAX as u64);
        assert_eq!(claim_limit(1 << 30, true), 1 << 34);
        // A value as long as its input still decodes.
        let text = "x".repeat(3 << 20);
        let back: String = decode(&encode(&text), 8 << 20).unwrap();
        assert_eq!(back, text);
    }

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
