//! The byte layout of every stored value, shared by both stores.
//!
//! A record is `[format: u8][crc32: u32 big-endian][body]`. The CRC-32 (IEEE, via `crc32fast`)
//! covers the format byte, the record's key (for an entry, its index) and the body, so a record
//! that is damaged, truncated, or found under the wrong key fails the check.
//!
//! An entry's body is `[term: u64 big-endian][payload in the Ordo codec]`: the term sits outside
//! the codec so that `term_at` does not have to decode (copy) the payload, while the payload
//! keeps the one encoding that the rest of Ordo uses. Other records' bodies are a value in the
//! Ordo codec.

use ordo_common::limits::{ENTRY_PAYLOAD_BYTES_MAX, OUTCOME_BYTES_MAX, TOPIC_NAME_BYTES_MAX};
use ordo_common::{Entry, EntryPayload, LogIndex, Term, codec};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::StorageError;

/// The record layout version. Part of the storage format: changing it means bumping
/// `STORAGE_FORMAT_VERSION`.
pub const RECORD_FORMAT: u8 = 1;

const CRC_BYTES: usize = 4;
const HEADER_BYTES: usize = 1 + CRC_BYTES;
const TERM_BYTES: usize = 8;

/// Largest encoded payload: the payload limit plus the codec's variant tag and length prefix.
const PAYLOAD_ENCODED_BYTES_MAX: u64 = ENTRY_PAYLOAD_BYTES_MAX + 64;

/// Largest encoded state record body: outcomes are the biggest.
const STATE_BODY_BYTES_MAX: u64 = 1024 * 1024;

const _: () = assert!(OUTCOME_BYTES_MAX <= STATE_BODY_BYTES_MAX);
const _: () = assert!(TOPIC_NAME_BYTES_MAX <= STATE_BODY_BYTES_MAX);

/// The key under which an entry's checksum is computed: its index, big-endian.
pub fn entry_key(index: LogIndex) -> [u8; 8] {
    index.to_be_bytes()
}

/// Encodes `entry` as a stored record.
pub fn encode_entry(entry: &Entry) -> Vec<u8> {
    let mut record = Vec::new();
    encode_entry_into(entry, &mut record);
    record
}

/// Appends the record of `entry` to `out` and returns its length: the payload is encoded in
/// place, so its bytes are copied once.
pub fn encode_entry_into(entry: &Entry, out: &mut Vec<u8>) -> usize {
    seal_into(&entry_key(entry.index), out, |body| {
        body.extend_from_slice(&entry.term.to_be_bytes());
        codec::encode_into(&entry.payload, body);
    })
}

/// Decodes the record stored for `index`, checking it first.
pub fn decode_entry(index: LogIndex, record: &[u8]) -> Result<Entry, StorageError> {
    let (term, payload) = entry_parts(index, record)?;
    let payload: EntryPayload =
        codec::decode(payload, PAYLOAD_ENCODED_BYTES_MAX).map_err(|error| {
            StorageError::Corrupt {
                index,
                detail: format!("payload does not decode: {error}"),
            }
        })?;
    Ok(Entry {
        term,
        index,
        payload,
    })
}

/// The term of the record stored for `index`, checking the whole record first.
pub fn entry_term(index: LogIndex, record: &[u8]) -> Result<Term, StorageError> {
    entry_parts(index, record).map(|(term, _)| term)
}

/// What compaction needs of the record stored for `index`, checking it first: its size, and the
/// leader stamp of the batch it carries, if it carries one.
pub fn entry_facts(index: LogIndex, record: &[u8]) -> Result<(u64, Option<u64>), StorageError> {
    let (_, payload) = entry_parts(index, record)?;
    // The payload's encoding: a u32 variant (1 = Normal), then the bytes' u64 length.
    const NORMAL: [u8; 4] = [1, 0, 0, 0];
    let stamp = match payload.split_at_checked(4) {
        Some((variant, rest)) if variant == NORMAL => {
            rest.get(8..).and_then(ordo_core::state::Command::stamp_of)
        }
        _ => None,
    };
    Ok((record.len() as u64, stamp))
}

/// Checks the record stored for `index` and splits its body into the term and the encoded payload.
fn entry_parts(index: LogIndex, record: &[u8]) -> Result<(Term, &[u8]), StorageError> {
    let corrupt = |detail: String| StorageError::Corrupt { index, detail };
    let body = unseal(&entry_key(index), record).map_err(corrupt)?;
    let (term, payload) = body
        .split_first_chunk::<TERM_BYTES>()
        .ok_or_else(|| corrupt(format!("body of {} bytes has no term", body.len())))?;
    Ok((Term::from_be_bytes(*term), payload))
}

/// Encodes a state record (hard state, progress, table value) stored under `key`.
pub fn encode_value<T: Serialize>(key: &[u8], value: &T) -> Vec<u8> {
    let mut record = Vec::new();
    seal_into(key, &mut record, |body| codec::encode_into(value, body));
    record
}

/// Decodes a state record stored under `key`; the error is a description for `CorruptState`.
pub fn decode_value<T: DeserializeOwned>(key: &[u8], record: &[u8]) -> Result<T, String> {
    let body = unseal(key, record)?;
    codec::decode(body, STATE_BODY_BYTES_MAX).map_err(|error| format!("does not decode: {error}"))
}

/// Encodes raw bytes as a state record stored under `key`.
pub fn encode_bytes(key: &[u8], bytes: &[u8]) -> Vec<u8> {
    let mut record = Vec::with_capacity(HEADER_BYTES + bytes.len());
    seal_into(key, &mut record, |body| body.extend_from_slice(bytes));
    record
}

/// Checks a raw-bytes state record stored under `key` and returns its bytes.
pub fn decode_bytes<'r>(key: &[u8], record: &'r [u8]) -> Result<&'r [u8], String> {
    unseal(key, record)
}

fn checksum(format: u8, key: &[u8], body: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&[format]);
    hasher.update(key);
    hasher.update(body);
    hasher.finalize()
}

/// Appends to `out` a record whose body `write_body` appends, and returns the record's length.
/// The header goes first with room for the checksum, written over the body once it is there.
fn seal_into(key: &[u8], out: &mut Vec<u8>, write_body: impl FnOnce(&mut Vec<u8>)) -> usize {
    let start = out.len();
    out.push(RECORD_FORMAT);
    out.extend_from_slice(&[0; CRC_BYTES]);
    write_body(out);
    let crc = checksum(RECORD_FORMAT, key, &out[start + HEADER_BYTES..]);
    out[start + 1..start + HEADER_BYTES].copy_from_slice(&crc.to_be_bytes());
    out.len() - start
}

fn unseal<'r>(key: &[u8], record: &'r [u8]) -> Result<&'r [u8], String> {
    let (header, body) = record.split_first_chunk::<HEADER_BYTES>().ok_or_else(|| {
        format!(
            "record of {} bytes is shorter than its header",
            record.len()
        )
    })?;
    let [format, crc @ ..] = *header;
    if format != RECORD_FORMAT {
        return Err(format!(
            "record format byte is {format}, expected {RECORD_FORMAT}"
        ));
    }
    let stored = u32::from_be_bytes(crc);
    let computed = checksum(format, key, body);
    if stored != computed {
        return Err(format!(
            "checksum mismatch: stored {stored:#010x}, computed {computed:#010x}"
        ));
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(index: LogIndex, payload: &[u8]) -> Entry {
        Entry {
            term: 7,
            index,
            payload: EntryPayload::Normal(payload.to_vec().into()),
        }
    }

    #[test]
    fn entry_round_trips_and_term_reads_without_decoding() {
        let original = entry(42, b"hello");
        let record = encode_entry(&original);
        assert_eq!(decode_entry(42, &record).unwrap(), original);
        assert_eq!(entry_term(42, &record).unwrap(), 7);
    }

    #[test]
    fn facts_read_a_batch_entrys_stamp_and_nothing_else_has_one() {
        use ordo_common::batch::{Batch, BatchId, Message};
        use ordo_core::state::Command;
        let batch = Command::Batch {
            batch: Batch {
                id: BatchId::v7(5, [1; 10]),
                messages: vec![Message::new("t", "x")],
                preconditions: Vec::new(),
            },
            stamp_ms: 1_700_000_000_321,
        };
        let stamped = entry(3, &batch.encode());
        let record = encode_entry(&stamped);
        assert_eq!(
            entry_facts(3, &record).unwrap(),
            (record.len() as u64, Some(1_700_000_000_321))
        );
        let raw = entry(4, &Command::Raw(vec![0; 12].into()).encode());
        assert_eq!(entry_facts(4, &encode_entry(&raw)).unwrap().1, None);
        let noop = Entry {
            term: 1,
            index: 5,
            payload: EntryPayload::Noop,
        };
        assert_eq!(entry_facts(5, &encode_entry(&noop)).unwrap().1, None);
    }

    #[test]
    fn every_single_bit_flip_is_detected() {
        let record = encode_entry(&entry(5, b"payload bytes"));
        for byte in 0..record.len() {
            for bit in 0..8 {
                let mut damaged = record.clone();
                damaged[byte] ^= 1 << bit;
                let error = decode_entry(5, &damaged).unwrap_err();
                assert!(
                    matches!(error, StorageError::Corrupt { index: 5, .. }),
                    "{error}"
                );
            }
        }
    }

    #[test]
    fn a_record_under_the_wrong_key_is_detected() {
        let record = encode_entry(&entry(5, b"x"));
        assert!(decode_entry(6, &record).is_err());
    }

    #[test]
    fn truncated_records_are_errors_not_panics() {
        let record = encode_entry(&entry(9, b"some payload"));
        for len in 0..record.len() {
            assert!(decode_entry(9, &record[..len]).is_err());
        }
    }
}
