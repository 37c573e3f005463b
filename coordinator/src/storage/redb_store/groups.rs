//! Grouped records: the log and the seq index store one redb record per group of consecutive
//! items, so that a group commit costs one B-tree insert per table instead of one per entry.
//!
//! **Log groups.** A write's entries are stored as groups of at most [`LOG_GROUP_BYTES_MAX`]
//! bytes (an entry larger than that is a group alone), keyed by the group's first index. A
//! group's value is its entries' records one after another, each `[length: u32 big-endian]
//! [entry record]`, where the entry record is the checked record of `record.rs` whose checksum
//! covers the entry's index: an entry is found in the last group that starts at or before its
//! index, by walking the lengths, and a damaged length shows as a record that fails its check.
//!
//! **Seq groups.** A state write's newly committed batches are stored as groups of at most
//! [`SEQ_GROUP_ITEMS_MAX`] seqs, keyed by the first seq; the value is a checked record of the
//! log indexes of the consecutive seqs.
//!
//! The size bounds keep a single read cheap: reading one entry or one seq reads one group.

use ordo_common::{Entry, LogId, LogIndex};
use redb::{AccessGuard, ReadableTable, Table};

use ordo_node::storage::record::{decode_value, encode_entry_into, encode_value, entry_term};
use ordo_node::storage::{StorageError, missing};

/// A log group holds at most this many bytes, unless it is one entry larger than that. redb
/// gives a value that spans pages a power-of-two run of them, so the bound stays a little
/// under 64 KiB, leaving room for the leaf's own header.
pub const LOG_GROUP_BYTES_MAX: usize = 60 * 1024;

/// Seqs in one seq group, at most.
pub const SEQ_GROUP_ITEMS_MAX: usize = 1024;

const LENGTH_BYTES: usize = 4;

use super::{Fault, Result};

/// A log group being built: records appended in index order.
#[derive(Default)]
pub(super) struct LogGroup {
    first: Option<LogIndex>,
    bytes: Vec<u8>,
    /// Bytes of the entry records alone (what retention counts), without the lengths.
    record_bytes: u64,
}

impl LogGroup {
    fn push(&mut self, index: LogIndex, record: &[u8]) {
        self.first.get_or_insert(index);
        self.bytes
            .extend_from_slice(&(record.len() as u32).to_be_bytes());
        self.bytes.extend_from_slice(record);
        self.record_bytes += record.len() as u64;
    }

    /// Whether a record of `record_bytes` may join: an empty group takes any record.
    fn fits(&self, record_bytes: usize) -> bool {
        self.first.is_none()
            || self.bytes.len() + LENGTH_BYTES + record_bytes <= LOG_GROUP_BYTES_MAX
    }
}

/// The entries `(index, record)` of a group that starts at `first`, in order. A length that
/// runs past the value ends the walk with `Corrupt`.
pub(super) fn group_records(
    first: LogIndex,
    bytes: &[u8],
) -> impl Iterator<Item = std::result::Result<(LogIndex, &[u8]), StorageError>> {
    let mut rest = bytes;
    let mut index = first;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let parsed = rest
            .split_first_chunk::<LENGTH_BYTES>()
            .and_then(|(length, tail)| tail.split_at_checked(u32::from_be_bytes(*length) as usize));
        let Some((record, tail)) = parsed else {
            let left = rest.len();
            rest = &[];
            return Some(Err(StorageError::Corrupt {
                index,
                detail: format!(
                    "the log group at {first} ends inside this entry ({left} bytes left)"
                ),
            }));
        };
        rest = tail;
        index += 1;
        Some(Ok((index - 1, record)))
    })
}

/// The groups `entries` are stored as: `(first index, value, record bytes)`.
pub(super) fn encode_log_groups(entries: &[Entry]) -> Vec<(LogIndex, Vec<u8>, u64)> {
    // A new group reserves room for what is left, up to a group's worth (an estimate: payload
    // plus framing), so that it is not regrown as it fills.
    let estimate = |entry: &Entry| entry.payload_bytes() as usize + 32;
    let mut left: usize = entries.iter().map(estimate).sum();
    let mut groups = Vec::new();
    let mut group = LogGroup::default();
    group.bytes.reserve(left.min(LOG_GROUP_BYTES_MAX));
    for entry in entries {
        // Encoded straight into the group, behind a length written once it is known; a record
        // that makes the group too long moves to the next one (once per group).
        let start = group.bytes.len();
        group.bytes.extend_from_slice(&[0; LENGTH_BYTES]);
        let record_bytes = encode_entry_into(entry, &mut group.bytes);
        group.bytes[start..start + LENGTH_BYTES]
            .copy_from_slice(&(record_bytes as u32).to_be_bytes());
        if group.first.is_some() && group.bytes.len() > LOG_GROUP_BYTES_MAX {
            let moved = group.bytes.split_off(start);
            groups.push(std::mem::take(&mut group));
            group.bytes.reserve(left.min(LOG_GROUP_BYTES_MAX));
            group.bytes.extend_from_slice(&moved);
        }
        group.first.get_or_insert(entry.index);
        group.record_bytes += record_bytes as u64;
        left = left.saturating_sub(estimate(entry));
    }
    groups.push(group);
    groups
        .into_iter()
        .filter_map(|g| g.first.map(|first| (first, g.bytes, g.record_bytes)))
        .collect()
}

/// A log group read from the table: its first index and its value.
type StoredGroup<'t> = (LogIndex, AccessGuard<'t, &'static [u8]>);

/// The group that holds `index`, if one starts at or before it: its first index and value. The
/// group may end before `index`; its records say.
fn group_at_or_before<'t>(
    log: &'t impl ReadableTable<u64, &'static [u8]>,
    index: LogIndex,
) -> Result<Option<StoredGroup<'t>>> {
    match log.range(..=index)?.next_back() {
        Some(item) => {
            let (key, value) = item?;
            Ok(Some((key.value(), value)))
        }
        None => Ok(None),
    }
}

/// Runs `f` on the record of the entry at `index`; `None` if the log does not hold it.
pub(super) fn with_record<T>(
    log: &impl ReadableTable<u64, &'static [u8]>,
    index: LogIndex,
    f: impl FnOnce(&[u8]) -> std::result::Result<T, StorageError>,
) -> Result<Option<T>> {
    let Some((first, value)) = group_at_or_before(log, index)? else {
        return Ok(None);
    };
    for item in group_records(first, value.value()) {
        let (at, record) = item?;
        if at == index {
            return Ok(Some(f(record)?));
        }
    }
    Ok(None)
}

/// The first index the log holds.
pub(super) fn first_index(
    log: &impl ReadableTable<u64, &'static [u8]>,
) -> Result<Option<LogIndex>> {
    Ok(log.first()?.map(|(key, _)| key.value()))
}

/// Runs `f` on the index and record of the last entry the log holds.
fn with_last_record<T>(
    log: &impl ReadableTable<u64, &'static [u8]>,
    f: impl FnOnce(LogIndex, &[u8]) -> std::result::Result<T, StorageError>,
) -> Result<Option<T>> {
    let Some((key, value)) = log.last()? else {
        return Ok(None);
    };
    let mut last = None;
    for item in group_records(key.value(), value.value()) {
        last = Some(item?);
    }
    match last {
        Some((index, record)) => Ok(Some(f(index, record)?)),
        None => Err(StorageError::Corrupt {
            index: key.value(),
            detail: "the log group is empty".into(),
        }
        .into()),
    }
}

/// The index of the last entry the log holds, from the lengths alone (no record is checked).
pub(super) fn last_index(log: &impl ReadableTable<u64, &'static [u8]>) -> Result<Option<LogIndex>> {
    with_last_record(log, |index, _| Ok(index))
}

/// The id of the last entry the log holds.
pub(super) fn last_entry(log: &impl ReadableTable<u64, &'static [u8]>) -> Result<Option<LogId>> {
    with_last_record(log, |index, record| {
        Ok(LogId::new(entry_term(index, record)?, index))
    })
}

/// The entries from `lo` on, in order, each mapped by `map` from its index and record. The
/// entries must follow each other: a group that does not start where the one before it ended
/// is a hole, reported as the missing index.
pub(super) fn records_from<'t, T, F>(
    log: &'t impl ReadableTable<u64, &'static [u8]>,
    lo: LogIndex,
    map: F,
) -> Result<RecordsFrom<'t, F>>
where
    F: FnMut(LogIndex, &[u8]) -> std::result::Result<T, StorageError>,
{
    let start = match group_at_or_before(log, lo)? {
        Some((first, _)) => first,
        None => lo,
    };
    Ok(RecordsFrom {
        range: log.range(start..)?,
        group: None,
        expected: None,
        lo,
        map,
        done: false,
    })
}

/// The iterator of [`records_from`].
pub(super) struct RecordsFrom<'t, F> {
    range: redb::Range<'t, u64, &'static [u8]>,
    /// The group being walked: the index of its next record, its value, the offset of that record.
    group: Option<(LogIndex, AccessGuard<'t, &'static [u8]>, usize)>,
    /// Where the next group must start.
    expected: Option<LogIndex>,
    lo: LogIndex,
    map: F,
    /// Set after an error: the walk ends there.
    done: bool,
}

impl<T, F> Iterator for RecordsFrom<'_, F>
where
    F: FnMut(LogIndex, &[u8]) -> std::result::Result<T, StorageError>,
{
    type Item = Result<T>;

    fn next(&mut self) -> Option<Result<T>> {
        if self.done {
            return None;
        }
        loop {
            if let Some((index, value, offset)) = &mut self.group {
                let bytes = value.value();
                if *offset >= bytes.len() {
                    self.expected = Some(*index);
                    self.group = None;
                    continue;
                }
                let next = group_records(*index, &bytes[*offset..]).next();
                let (at, record) = match next {
                    Some(Ok(found)) => found,
                    // A non-empty rest always holds a record or an error; none ends the group.
                    None => {
                        self.expected = Some(*index);
                        self.group = None;
                        continue;
                    }
                    Some(Err(error)) => {
                        self.group = None;
                        self.done = true;
                        return Some(Err(error.into()));
                    }
                };
                *offset += LENGTH_BYTES + record.len();
                *index += 1;
                if at < self.lo {
                    continue;
                }
                return Some((self.map)(at, record).map_err(Fault::from));
            }
            let (key, value) = match self.range.next()? {
                Ok(item) => item,
                Err(error) => {
                    self.done = true;
                    return Some(Err(error.into()));
                }
            };
            let first = key.value();
            if let Some(expected) = self.expected
                && first != expected
            {
                self.done = true;
                return Some(Err(missing(expected).into()));
            }
            self.group = Some((first, value, 0));
        }
    }
}

/// Stores `entries` (consecutive, after the log's last entry) and returns their record bytes.
pub(super) fn append(log: &mut Table<u64, &'static [u8]>, entries: &[Entry]) -> Result<u64> {
    let mut bytes = 0;
    for (first, value, record_bytes) in encode_log_groups(entries) {
        log.insert(first, value.as_slice())?;
        bytes += record_bytes;
    }
    Ok(bytes)
}

/// Deletes every entry `>= start` and returns the record bytes deleted. A group that starts
/// before `start` keeps its entries below it.
pub(super) fn truncate_from(log: &mut Table<u64, &'static [u8]>, start: LogIndex) -> Result<u64> {
    let mut removed = 0;
    let mut kept = LogGroup::default();
    let mut split = false;
    if let Some((first, value)) = group_at_or_before(log, start.saturating_sub(1))? {
        for item in group_records(first, value.value()) {
            let (index, record) = item?;
            if index < start {
                kept.push(index, record);
            } else {
                split = true;
                removed += record.len() as u64;
            }
        }
    }
    let mut extracted = log.extract_from_if(start.., |_, _| true)?;
    for item in extracted.by_ref() {
        let (key, value) = item?;
        for record in group_records(key.value(), value.value()) {
            removed += record?.1.len() as u64;
        }
    }
    drop(extracted);
    if let Some(first) = kept.first
        && split
    {
        log.insert(first, kept.bytes.as_slice())?;
    }
    Ok(removed)
}

/// Deletes every entry below `new_first` and returns the id of the last one deleted. A group
/// that holds `new_first` and entries below it is stored again from `new_first` on.
pub(super) fn remove_before(
    log: &mut Table<u64, &'static [u8]>,
    new_first: LogIndex,
) -> Result<LogId> {
    let purged_index = new_first - 1;
    let term = with_record(log, purged_index, |record| entry_term(purged_index, record))?
        .ok_or_else(|| Fault::from(missing(purged_index)))?;
    drop_below(log, new_first)?;
    Ok(LogId::new(term, purged_index))
}

/// Deletes every entry below `new_first`, which need not be stored. A group that holds
/// `new_first` and entries below it is stored again from `new_first` on.
pub(super) fn drop_below(log: &mut Table<u64, &'static [u8]>, new_first: LogIndex) -> Result<()> {
    let mut suffix = LogGroup::default();
    if let Some((first, value)) = group_at_or_before(log, new_first.saturating_sub(1))? {
        for item in group_records(first, value.value()) {
            let (index, record) = item?;
            if index >= new_first {
                suffix.push(index, record);
            }
        }
    }
    log.retain_in(..new_first, |_, _| false)?;
    if let Some(first) = suffix.first {
        log.insert(first, suffix.bytes.as_slice())?;
    }
    Ok(())
}

/// The key under which a seq group's checksum is computed.
fn seq_key(first_seq: u64) -> [u8; 8] {
    first_seq.to_be_bytes()
}

fn decode_seq_group(first_seq: u64, record: &[u8]) -> Result<Vec<LogIndex>> {
    decode_value(&seq_key(first_seq), record).map_err(|detail| {
        StorageError::corrupt_state(format!("seq group at {first_seq}"), detail).into()
    })
}

/// Stores consecutive seqs `(seq, index)` as seq groups.
pub(super) fn put_seqs(
    batches: &mut Table<u64, &'static [u8]>,
    seqs: &[(u64, LogIndex)],
) -> Result<()> {
    for chunk in seqs.chunks(SEQ_GROUP_ITEMS_MAX) {
        let (first_seq, record) = encode_seq_group(chunk);
        batches.insert(first_seq, record.as_slice())?;
    }
    Ok(())
}

/// The key and value of one seq group holding `seqs` (consecutive, at least one).
pub(super) fn encode_seq_group(seqs: &[(u64, LogIndex)]) -> (u64, Vec<u8>) {
    let first_seq = seqs.first().map_or(0, |&(seq, _)| seq);
    let indexes: Vec<LogIndex> = seqs.iter().map(|&(_, index)| index).collect();
    (first_seq, encode_value(&seq_key(first_seq), &indexes))
}

/// The log index of the batch given `seq`, if the seq groups hold it.
pub(super) fn seq_index(
    batches: &impl ReadableTable<u64, &'static [u8]>,
    seq: u64,
) -> Result<Option<LogIndex>> {
    let Some(item) = batches.range(..=seq)?.next_back() else {
        return Ok(None);
    };
    let (key, value) = item?;
    let first_seq = key.value();
    let indexes = decode_seq_group(first_seq, value.value())?;
    Ok(usize::try_from(seq - first_seq)
        .ok()
        .and_then(|position| indexes.get(position).copied()))
}

/// The log indexes of the batches at seqs `from ..= to`, consecutive from `from`: they end at
/// the first seq the seq groups do not hold (none when they do not hold `from`).
pub(super) fn seq_indexes(
    batches: &impl ReadableTable<u64, &'static [u8]>,
    from: u64,
    to: u64,
) -> Result<Vec<LogIndex>> {
    let mut indexes = Vec::new();
    let Some(item) = batches.range(..=from)?.next_back() else {
        return Ok(indexes);
    };
    let start = item?.0.value();
    let mut next = from;
    for item in batches.range(start..)? {
        let (key, value) = item?;
        let first_seq = key.value();
        if first_seq > next {
            break;
        }
        let group = decode_seq_group(first_seq, value.value())?;
        let skip = usize::try_from(next - first_seq).unwrap_or(usize::MAX);
        for &index in group.iter().skip(skip) {
            indexes.push(index);
            if next == to {
                return Ok(indexes);
            }
            next += 1;
        }
    }
    Ok(indexes)
}

/// The first seq the seq groups hold.
pub(super) fn first_seq(batches: &impl ReadableTable<u64, &'static [u8]>) -> Result<Option<u64>> {
    Ok(batches.first()?.map(|(key, _)| key.value()))
}

/// Forgets the seqs of batches carried by entries below `new_first`. A group that holds some
/// of them and later ones is stored again from its first remaining seq.
pub(super) fn forget_seqs_before(
    batches: &mut Table<u64, &'static [u8]>,
    new_first: LogIndex,
) -> Result<()> {
    let mut doomed = Vec::new();
    let mut rest: Option<(u64, Vec<LogIndex>)> = None;
    for item in batches.iter()? {
        let (key, value) = item?;
        let first_seq = key.value();
        let indexes = decode_seq_group(first_seq, value.value())?;
        let gone = indexes
            .iter()
            .take_while(|&&index| index < new_first)
            .count();
        if gone == 0 {
            break;
        }
        doomed.push(first_seq);
        if gone < indexes.len() {
            rest = Some((first_seq + gone as u64, indexes[gone..].to_vec()));
            break;
        }
    }
    for first_seq in doomed {
        batches.remove(first_seq)?;
    }
    if let Some((first_seq, indexes)) = rest {
        let record = encode_value(&seq_key(first_seq), &indexes);
        batches.insert(first_seq, record.as_slice())?;
    }
    Ok(())
}

/// Regroups a log stored one entry per record (formats up to 7) in place, a group at a time.
pub(super) fn regroup_log(log: &mut Table<u64, &'static [u8]>) -> Result<()> {
    let mut cursor = match log.first()? {
        Some((key, _)) => key.value(),
        None => return Ok(()),
    };
    loop {
        let mut group = LogGroup::default();
        let mut last = None;
        for item in log.range(cursor..)? {
            let (key, value) = item?;
            let index = key.value();
            if index != last.map_or(cursor, |last| last + 1) {
                return Err(missing(last.map_or(cursor, |last| last + 1)).into());
            }
            if !group.fits(value.value().len()) {
                break;
            }
            group.push(index, value.value());
            last = Some(index);
        }
        let Some(last) = last else {
            return Ok(());
        };
        log.retain_in(cursor..=last, |_, _| false)?;
        log.insert(cursor, group.bytes.as_slice())?;
        cursor = last + 1;
    }
}

/// Regroups a seq index stored one seq per record (formats up to 7) in place.
pub(super) fn regroup_seqs(batches: &mut Table<u64, &'static [u8]>) -> Result<()> {
    let mut cursor = match batches.first()? {
        Some((key, _)) => key.value(),
        None => return Ok(()),
    };
    loop {
        let mut indexes = Vec::new();
        for item in batches.range(cursor..)? {
            let (key, value) = item?;
            let seq = key.value();
            if seq != cursor + indexes.len() as u64 {
                return Err(StorageError::corrupt_state(
                    format!("seq {}", cursor + indexes.len() as u64),
                    "missing from the seq index",
                )
                .into());
            }
            let index: LogIndex = decode_value(&seq.to_be_bytes(), value.value())
                .map_err(|detail| StorageError::corrupt_state(format!("seq {seq}"), detail))?;
            indexes.push(index);
            if indexes.len() == SEQ_GROUP_ITEMS_MAX {
                break;
            }
        }
        if indexes.is_empty() {
            return Ok(());
        }
        let last = cursor + indexes.len() as u64 - 1;
        batches.retain_in(cursor..=last, |_, _| false)?;
        let record = encode_value(&seq_key(cursor), &indexes);
        batches.insert(cursor, record.as_slice())?;
        cursor = last + 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ordo_common::EntryPayload;
    use ordo_node::storage::record::encode_entry;

    /// The groups as they were built before records were encoded in place: each record encoded
    /// on its own, then copied into the group it fits.
    fn reference_groups(entries: &[Entry]) -> Vec<(LogIndex, Vec<u8>, u64)> {
        let mut groups = Vec::new();
        let mut group = LogGroup::default();
        for entry in entries {
            let record = encode_entry(entry);
            if !group.fits(record.len()) {
                groups.push(std::mem::take(&mut group));
            }
            group.push(entry.index, &record);
        }
        groups.push(group);
        groups
            .into_iter()
            .filter_map(|g| g.first.map(|first| (first, g.bytes, g.record_bytes)))
            .collect()
    }

    proptest::proptest! {
        /// Encoding in place gives the very bytes and group boundaries of the reference, for
        /// payloads small and large around the group bound, so stored logs do not change.
        #[test]
        fn groups_encoded_in_place_match_the_reference(
            sizes in proptest::collection::vec(
                proptest::prop_oneof![0usize..200, 20_000usize..70_000],
                0..24,
            ),
            noops in proptest::collection::vec(proptest::bool::ANY, 24),
            first in 1u64..1_000_000,
        ) {
            let entries: Vec<Entry> = sizes
                .iter()
                .enumerate()
                .map(|(at, size)| Entry {
                    term: 3 + at as u64 / 5,
                    index: first + at as u64,
                    payload: if noops[at] && *size < 100 {
                        EntryPayload::Noop
                    } else {
                        EntryPayload::Normal(vec![at as u8; *size].into())
                    },
                })
                .collect();
            let groups = encode_log_groups(&entries);
            proptest::prop_assert_eq!(&groups, &reference_groups(&entries));
            for (group_first, value, _) in &groups {
                let walked: Vec<_> = group_records(*group_first, value)
                    .map(|item| item.map(|(index, _)| index))
                    .collect::<std::result::Result<_, _>>()
                    .unwrap();
                proptest::prop_assert_eq!(walked.first(), Some(group_first));
            }
        }
    }
}
