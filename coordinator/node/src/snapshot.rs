//! The snapshot format: the state machine as of an applied entry ([`SnapshotState`]), in bytes
//! that are the same on every node for the same index, checked end to end.
//!
//! ```text
//! [magic "ORDOSNAP": 8][format version: u32 LE][body length: u64 LE][body][crc32 of all before: u32 LE]
//! ```
//!
//! The body is the codec's encoding of the [`SnapshotState`] (tables in key order). A snapshot
//! travels between nodes in chunks, each checked on its own, and lands in a file before it is
//! installed; this whole-file checksum is what the receiver verifies before installing, and what
//! `ordo snapshot restore` verifies before seeding a node.

use ordo_common::codec;

use crate::storage::SnapshotState;

/// The snapshot layout this build writes and reads. Part of the storage format.
pub const SNAPSHOT_FORMAT_VERSION: u32 = 2;

const MAGIC: &[u8; 8] = b"ORDOSNAP";
const HEADER_BYTES: usize = 8 + 4 + 8;
const TRAILER_BYTES: usize = 4;

/// Largest snapshot body accepted: the registry's and the offsets' bounds with room to spare.
pub const SNAPSHOT_BYTES_MAX: u64 = 4 * 1024 * 1024 * 1024;

/// Why bytes are not a snapshot this build can install.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum SnapshotError {
    #[error("not an ordo snapshot (no ORDOSNAP header)")]
    NotASnapshot,
    #[error("snapshot format {found}; this build reads format {SNAPSHOT_FORMAT_VERSION}")]
    Version { found: u32 },
    #[error("the snapshot is truncated or has trailing bytes ({detail})")]
    Length { detail: String },
    #[error("the snapshot's checksum does not match: it is damaged")]
    Checksum,
    #[error("the snapshot of {length} bytes is over SNAPSHOT_BYTES_MAX ({SNAPSHOT_BYTES_MAX})")]
    TooLarge { length: u64 },
    #[error("the snapshot's body does not decode: {0}")]
    Body(String),
}

/// Encodes `state` as a snapshot file.
pub fn encode_snapshot(state: &SnapshotState) -> Vec<u8> {
    let body = codec::encode(state);
    let mut bytes = Vec::with_capacity(HEADER_BYTES + body.len() + TRAILER_BYTES);
    bytes.extend_from_slice(MAGIC);
    bytes.extend_from_slice(&SNAPSHOT_FORMAT_VERSION.to_le_bytes());
    bytes.extend_from_slice(&(body.len() as u64).to_le_bytes());
    bytes.extend_from_slice(&body);
    let crc = crc32fast::hash(&bytes);
    bytes.extend_from_slice(&crc.to_le_bytes());
    bytes
}

/// Checks and decodes a snapshot file.
pub fn decode_snapshot(bytes: &[u8]) -> Result<SnapshotState, SnapshotError> {
    let header = bytes
        .get(..HEADER_BYTES)
        .ok_or(SnapshotError::NotASnapshot)?;
    if &header[..8] != MAGIC {
        return Err(SnapshotError::NotASnapshot);
    }
    let found = u32::from_le_bytes(header[8..12].try_into().expect("4 bytes"));
    if found != SNAPSHOT_FORMAT_VERSION {
        return Err(SnapshotError::Version { found });
    }
    let length = u64::from_le_bytes(header[12..20].try_into().expect("8 bytes"));
    if length > SNAPSHOT_BYTES_MAX {
        return Err(SnapshotError::TooLarge { length });
    }
    let expected = HEADER_BYTES as u64 + length + TRAILER_BYTES as u64;
    if bytes.len() as u64 != expected {
        return Err(SnapshotError::Length {
            detail: format!("{} bytes, the header says {expected}", bytes.len()),
        });
    }
    let (checked, trailer) = bytes.split_at(bytes.len() - TRAILER_BYTES);
    let crc = u32::from_le_bytes(trailer.try_into().expect("4 bytes"));
    if crc32fast::hash(checked) != crc {
        return Err(SnapshotError::Checksum);
    }
    codec::decode_snapshot_body(&checked[HEADER_BYTES..], length)
        .map_err(|error| SnapshotError::Body(error.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ordo_common::LogId;

    fn state() -> SnapshotState {
        SnapshotState {
            applied: LogId::new(3, 40),
            last_seq: 19,
            log_time_ms: 1_700_000_000_000,
            registry_floor_ms: 1_699_000_000_000,
            offsets: vec![("a".into(), 2), ("b".into(), 9)],
            registry: vec![([1; 16], vec![1, 2, 3])],
            coord: vec![],
        }
    }

    #[test]
    fn a_snapshot_round_trips_and_encodes_the_same_every_time() {
        let bytes = encode_snapshot(&state());
        assert_eq!(bytes, encode_snapshot(&state()));
        assert_eq!(decode_snapshot(&bytes).unwrap(), state());
    }

    /// The snapshot of a cluster whose registry is full is larger than a frame (67 MiB), the
    /// codec's usual decode limit: it must still decode (it did not, once, and a follower
    /// could never install it).
    #[test]
    fn a_snapshot_larger_in_memory_than_a_frame_decodes() {
        let mut big = state();
        big.registry = (0..3_000_000u32)
            .map(|n| {
                let mut id = [0; 16];
                id[..4].copy_from_slice(&n.to_be_bytes());
                (id, vec![0, 1, 2, 3, 4, 5, 6, 7])
            })
            .collect();
        let bytes = encode_snapshot(&big);
        let decoded = decode_snapshot(&bytes).expect("a large snapshot decodes");
        assert_eq!(decoded.registry.len(), 3_000_000);
        assert_eq!(decoded, big);
    }

    #[test]
    fn every_damage_is_refused_with_its_reason() {
        let bytes = encode_snapshot(&state());
        for byte in 0..bytes.len() {
            let mut damaged = bytes.clone();
            damaged[byte] ^= 0x10;
            assert!(decode_snapshot(&damaged).is_err(), "a flip at byte {byte}");
        }
        assert_eq!(
            decode_snapshot(&bytes[..bytes.len() - 1]).unwrap_err(),
            SnapshotError::Length {
                detail: format!("{} bytes, the header says {}", bytes.len() - 1, bytes.len())
            }
        );
        assert_eq!(
            decode_snapshot(b"hello").unwrap_err(),
            SnapshotError::NotASnapshot
        );
        let mut other = bytes.clone();
        other[8] = 9;
        assert_eq!(
            decode_snapshot(&other).unwrap_err(),
            SnapshotError::Version { found: 9 }
        );
    }
}
