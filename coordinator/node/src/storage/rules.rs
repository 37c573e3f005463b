//! The rules every write must satisfy, and retention, as pure functions shared by both stores
//! and by the group commit writer (which checks each request before merging it into a group).
//!
//! Keeping them in one place is what makes the stores agree: a store plans a write with
//! [`plan_write`] against its cached [`StoreState`], and only then touches its data.

use ordo_common::limits::ENTRY_PAYLOAD_BYTES_MAX;
use ordo_common::{EngineKind, HardState, LogId, LogIndex, Term};

use super::{
    Install, LogState, OUTCOME_BYTES_MAX, Result, Retention, StorageError, StoreState,
    TOPIC_NAME_BYTES_MAX, WriteBatch,
};

/// Checks `batch` against the state `before` it and returns the state after it, without
/// retention (see [`plan_compaction`]). `term_at` answers the term of an entry of the log as it
/// is before the batch, for indexes from the purged index (or 0) to the last index.
pub fn plan_write(
    before: &StoreState,
    batch: &WriteBatch,
    term_at: &mut dyn FnMut(LogIndex) -> Result<Term>,
) -> Result<StoreState> {
    if let Some(install) = &batch.install {
        return plan_install(before, batch, install, term_at);
    }
    let mut after = before.clone();
    if let Some(hard_state) = batch.hard_state {
        check_hard_state(&before.hard_state, &hard_state)?;
        after.hard_state = hard_state;
    }
    if !batch.entries.is_empty() {
        let last = check_entries(before, &after.hard_state, batch, term_at)?;
        after.log.last_log_id = Some(last);
    }
    if let Some(committed) = batch.committed {
        if committed < before.progress.committed {
            return Err(StorageError::invalid_write(format!(
                "commit index would go back from {} to {committed}",
                before.progress.committed
            )));
        }
        if committed > after.log.last_index() {
            return Err(StorageError::invalid_write(format!(
                "commit index {committed} is past the last index {}",
                after.log.last_index()
            )));
        }
        after.progress.committed = committed;
    }
    if let Some(state) = &batch.state {
        check_state_update(before, &after, batch, term_at)?;
        after.progress.applied = Some(state.applied);
        if let Some(&(seq, _)) = state.seqs.last() {
            after.last_seq = seq;
        }
        after.log_time_ms = state.log_time_ms;
        after.registry_floor_ms = state.registry_floor_ms;
    }
    Ok(after)
}

/// Checks an install and returns the state after it: the log through the snapshot's last entry
/// purged (all of it unless the suffix is kept), progress at the snapshot, its tables in place.
fn plan_install(
    before: &StoreState,
    batch: &WriteBatch,
    install: &Install,
    term_at: &mut dyn FnMut(LogIndex) -> Result<Term>,
) -> Result<StoreState> {
    let alone = WriteBatch {
        install: None,
        ..batch.clone()
    };
    if !alone.is_empty() {
        return Err(StorageError::invalid_write("an install is written alone"));
    }
    let last = install.last_included;
    let applied_before = before.progress.applied.map_or(0, |id| id.index);
    if last.index <= applied_before || install.state.applied != last {
        return Err(StorageError::invalid_write(format!(
            "a snapshot through {last} (state applied through {}) does not move past the \
             applied index {applied_before}",
            install.state.applied
        )));
    }
    if last.term > before.hard_state.term {
        return Err(StorageError::invalid_write(format!(
            "a snapshot through {last} is of a term above the current term {}",
            before.hard_state.term
        )));
    }
    if install.state.log_time_ms < before.log_time_ms
        || install.state.registry_floor_ms < before.registry_floor_ms
    {
        return Err(StorageError::invalid_write(
            "a snapshot's log time or registry floor is behind the stored ones",
        ));
    }
    let mut after = before.clone();
    if install.keep_suffix && before.engine == EngineKind::MultiPaxos {
        // Every slot after the snapshot keeps the value accepted for it, whatever its ballot.
        if before.log.last_index() <= last.index {
            after.log.last_log_id = Some(last);
        }
    } else if install.keep_suffix {
        let term = term_at(last.index)?;
        if term != last.term {
            return Err(StorageError::invalid_write(format!(
                "the suffix after {last} is kept, but the log's entry {} has term {term}",
                last.index
            )));
        }
        if before.log.last_index() < last.index {
            after.log.last_log_id = Some(last);
        }
    } else {
        after.log.last_log_id = Some(last);
    }
    after.log.first_index = last.index + 1;
    after.log.purged = Some(last);
    after.progress.committed = before.progress.committed.max(last.index);
    after.progress.applied = Some(last);
    after.last_seq = install.state.last_seq;
    after.log_time_ms = install.state.log_time_ms;
    after.registry_floor_ms = install.state.registry_floor_ms;
    Ok(after)
}

/// Whether `next` may replace `current` as the durable term and vote: the term never decreases
/// and a vote, once cast, never changes within its term.
pub fn check_hard_state(current: &HardState, next: &HardState) -> Result<()> {
    if next.term < current.term {
        return Err(StorageError::invalid_write(format!(
            "term would go back from {} to {}",
            current.term, next.term
        )));
    }
    if next.term == current.term && current.vote.is_some() && next.vote != current.vote {
        return Err(StorageError::invalid_write(format!(
            "vote in term {} would change from {:?} to {:?}",
            current.term, current.vote, next.vote
        )));
    }
    Ok(())
}

/// Checks the batch's entries and returns the id of the last one.
fn check_entries(
    before: &StoreState,
    hard_state: &HardState,
    batch: &WriteBatch,
    term_at: &mut dyn FnMut(LogIndex) -> Result<Term>,
) -> Result<LogId> {
    let start = batch.entries[0].index;
    let last_index = before.log.last_index();
    if start < before.log.first_index || start == 0 {
        return Err(StorageError::invalid_write(format!(
            "entries start at index {start}, below the first index {}",
            before.log.first_index
        )));
    }
    if start > last_index + 1 {
        return Err(StorageError::invalid_write(format!(
            "entries start at index {start}, which would leave a hole after the last index \
             {last_index}"
        )));
    }
    if start <= before.progress.committed {
        return Err(StorageError::invalid_write(format!(
            "entries start at index {start}, which would replace committed entries (commit \
             index {})",
            before.progress.committed
        )));
    }
    // Raft's terms never fall along the log; Multi-Paxos ballots may, and only the promise
    // bounds them.
    let ordered = before.engine == EngineKind::Raft;
    let mut term_floor = if ordered { term_at(start - 1)? } else { 0 };
    let mut term_max = 0;
    for (offset, entry) in batch.entries.iter().enumerate() {
        let expected = start + offset as u64;
        if entry.index != expected {
            return Err(StorageError::invalid_write(format!(
                "entry indexes are not consecutive: found {} where {expected} belongs",
                entry.index
            )));
        }
        if ordered && entry.term < term_floor {
            return Err(StorageError::invalid_write(format!(
                "entry {} has term {}, below the term {term_floor} of the entry before it",
                entry.index, entry.term
            )));
        }
        if entry.payload_bytes() > ENTRY_PAYLOAD_BYTES_MAX {
            return Err(StorageError::invalid_write(format!(
                "entry {} has {} payload bytes, over the limit of {ENTRY_PAYLOAD_BYTES_MAX}",
                entry.index,
                entry.payload_bytes()
            )));
        }
        term_floor = entry.term;
        term_max = term_max.max(entry.term);
    }
    if term_max > hard_state.term {
        return Err(StorageError::invalid_write(format!(
            "entries have term {term_max}, newer than the current term {}",
            hard_state.term
        )));
    }
    Ok(LogId::new(
        term_floor,
        start + batch.entries.len() as u64 - 1,
    ))
}

fn check_state_update(
    before: &StoreState,
    after: &StoreState,
    batch: &WriteBatch,
    term_at: &mut dyn FnMut(LogIndex) -> Result<Term>,
) -> Result<()> {
    let Some(state) = &batch.state else {
        return Ok(());
    };
    let applied = state.applied;
    let applied_before = before.progress.applied.map_or(0, |id| id.index);
    if applied.index == 0 || applied.index < applied_before {
        return Err(StorageError::invalid_write(format!(
            "applied index would go from {applied_before} to {}",
            applied.index
        )));
    }
    if applied.index > after.progress.committed {
        return Err(StorageError::invalid_write(format!(
            "applied index {} is past the commit index {}",
            applied.index, after.progress.committed
        )));
    }
    let term = match batch.entries.first() {
        Some(first) if applied.index >= first.index => {
            batch.entries[(applied.index - first.index) as usize].term
        }
        _ => term_at(applied.index)?,
    };
    if term != applied.term {
        return Err(StorageError::invalid_write(format!(
            "applied entry {applied} does not match the log, whose entry {} has term {term}",
            applied.index
        )));
    }
    if state.log_time_ms < before.log_time_ms || state.registry_floor_ms < before.registry_floor_ms
    {
        return Err(StorageError::invalid_write(format!(
            "log time or registry floor would go back (from {} / {} to {} / {})",
            before.log_time_ms,
            before.registry_floor_ms,
            state.log_time_ms,
            state.registry_floor_ms
        )));
    }
    let mut index_floor = applied_before;
    for (seq_expected, &(seq, index)) in (before.last_seq + 1..).zip(&state.seqs) {
        if seq != seq_expected {
            return Err(StorageError::invalid_write(format!(
                "seq {seq} breaks the dense sequence, which continues at {seq_expected}"
            )));
        }
        if index <= index_floor || index > applied.index {
            return Err(StorageError::invalid_write(format!(
                "seq {seq} names index {index}, outside the newly applied range ({index_floor}, \
                 {}]",
                applied.index
            )));
        }
        index_floor = index;
    }
    if let Some((_, outcome)) = state
        .registry
        .iter()
        .find(|(_, outcome)| outcome.len() as u64 > OUTCOME_BYTES_MAX)
    {
        return Err(StorageError::invalid_write(format!(
            "an outcome of {} bytes is over the limit of {OUTCOME_BYTES_MAX}",
            outcome.len()
        )));
    }
    if let Some((key, _)) = state.coord.iter().find(|(key, row)| {
        key.is_empty()
            || key.len() as u64 > COORD_KEY_BYTES_MAX
            || row
                .as_ref()
                .is_some_and(|row| row.len() as u64 > ordo_core::state::coord::COORD_ROW_BYTES_MAX)
    }) {
        return Err(StorageError::invalid_write(format!(
            "a coordination row (key of {} bytes) is empty or over its limits",
            key.len()
        )));
    }
    if let Some((topic, _)) = state
        .offsets
        .iter()
        .find(|(topic, _)| topic.len() as u64 > TOPIC_NAME_BYTES_MAX)
    {
        return Err(StorageError::invalid_write(format!(
            "a topic name of {} bytes is over the limit of {TOPIC_NAME_BYTES_MAX}",
            topic.len()
        )));
    }
    Ok(())
}

/// Longest key of a coordination row: a tag byte and a lock or election name (or a session id).
const COORD_KEY_BYTES_MAX: u64 = 1 + ordo_common::coord::MUTEX_NAME_BYTES_MAX;

/// Which indexes a log holds: what a read checks before it touches an entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Extent {
    pub first_index: LogIndex,
    pub last_index: LogIndex,
    pub purged: Option<LogId>,
}

impl Extent {
    pub fn of(log: &LogState) -> Self {
        Self {
            first_index: log.first_index,
            last_index: log.last_index(),
            purged: log.purged,
        }
    }

    /// Checks a `[lo, hi)` read: `InvalidRange`, then `Compacted`, then `OutOfRange`.
    pub fn check_range(&self, lo: LogIndex, hi: LogIndex) -> Result<()> {
        if lo > hi {
            return Err(StorageError::InvalidRange { lo, hi });
        }
        if lo < self.first_index {
            return Err(StorageError::Compacted {
                first_index: self.first_index,
            });
        }
        if hi > self.last_index + 1 {
            return Err(StorageError::OutOfRange {
                index: hi - 1,
                last_index: self.last_index,
            });
        }
        Ok(())
    }

    /// The answer to `term_at(index)` when it needs no entry: 0 before the log, the purged
    /// term, `Compacted` or `OutOfRange`. `None` means the entry itself must be read.
    pub fn term_without_entry(&self, index: LogIndex) -> Option<Result<Term>> {
        if index == 0 {
            return Some(Ok(0));
        }
        if let Some(purged) = self.purged.filter(|p| p.index == index) {
            return Some(Ok(purged.term));
        }
        if index < self.first_index {
            return Some(Err(StorageError::Compacted {
                first_index: self.first_index,
            }));
        }
        if index > self.last_index {
            return Some(Err(StorageError::OutOfRange {
                index,
                last_index: self.last_index,
            }));
        }
        None
    }
}

/// What retention deletes after a write: every entry below `first_index`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Compaction {
    pub first_index: LogIndex,
    /// Retained record bytes after the compaction, if the store counts them.
    pub retained_bytes: Option<u64>,
}

/// One stored entry record, as compaction sees it: its size and its leader stamp, if it is a
/// batch entry.
pub type RecordFacts = (u64, Option<u64>);

/// When a store checks entries' age: at most 64 times per age limit of log time, and at most
/// once a second of it, so the check costs a record read now and then, not per write.
#[derive(Clone, Copy, Debug, Default)]
pub struct AgeCheck {
    last_ms: u64,
}

impl AgeCheck {
    /// Whether to check age at log time `log_time_ms` (and, if so, remember that it did).
    pub fn due(&mut self, retention: &Retention, log_time_ms: u64) -> bool {
        let Some(age) = retention.age_ms.map(u64::from) else {
            return false;
        };
        let every = (age / 64).max(1000);
        if log_time_ms.saturating_sub(self.last_ms) < every {
            return false;
        }
        self.last_ms = log_time_ms;
        true
    }
}

/// Decides what retention deletes from the log described by `state`, which holds
/// `retained_bytes` of entry records (if the store counts them). `records` yields the facts of
/// the stored entry records in index order from the first index; it is read only as far as
/// needed. Age is checked only when `check_age` (a store checks it now and then, see
/// [`AgeCheck`], so that a write does not read the oldest record every time). Returns `None`
/// when nothing is to be deleted.
pub fn plan_compaction(
    state: &StoreState,
    retained_bytes: Option<u64>,
    retention: &Retention,
    check_age: bool,
    records: &mut dyn Iterator<Item = Result<RecordFacts>>,
) -> Result<Option<Compaction>> {
    let Some(applied) = state.progress.applied else {
        return Ok(None);
    };
    let first = state.log.first_index;
    let last = state.log.last_index();
    if last < first {
        return Ok(None);
    }
    // Entries above the applied index, and the trailing ones below it, are never deleted.
    let first_max = (applied.index.min(last) + 1).saturating_sub(retention.trailing_entries);
    if first_max <= first {
        return Ok(None);
    }
    let mut target = first;
    if let Some(entries_max) = retention.entries_max.map(u64::from)
        && last + 1 - first > entries_max
    {
        target = last + 1 - (entries_max - entries_max / 8);
    }
    let bytes_goal = match (retention.bytes_max.map(u64::from), retained_bytes) {
        (Some(bytes_max), Some(retained)) if retained > bytes_max => {
            Some(bytes_max - bytes_max / 8)
        }
        _ => None,
    };
    // Entries stamped before this are older than the age limit.
    let age_cut = retention
        .age_ms
        .filter(|_| check_age)
        .map(|age| state.log_time_ms.saturating_sub(u64::from(age)));
    let target = target.min(first_max);
    if target <= first && bytes_goal.is_none() && age_cut.is_none() {
        return Ok(None);
    }
    if retained_bytes.is_none() && bytes_goal.is_none() && age_cut.is_none() {
        // Only the count limit, and no bytes to keep count of: no record needs reading.
        return Ok(Some(Compaction {
            first_index: target,
            retained_bytes: None,
        }));
    }
    walk(
        first,
        first_max,
        target,
        bytes_goal,
        age_cut,
        retained_bytes,
        records,
    )
}

/// Walks records from `first`, deleting while below `target`, over the byte goal, or older
/// than the age cut, but never at or past `first_max`.
fn walk(
    first: LogIndex,
    first_max: LogIndex,
    target: LogIndex,
    bytes_goal: Option<u64>,
    age_cut: Option<u64>,
    retained_bytes: Option<u64>,
    records: &mut dyn Iterator<Item = Result<RecordFacts>>,
) -> Result<Option<Compaction>> {
    let mut bytes = retained_bytes.unwrap_or(0);
    let mut next = first;
    let mut last_stamp_ms = None;
    while next < first_max {
        let over_bytes = bytes_goal.is_some_and(|goal| bytes > goal);
        if next >= target && !over_bytes && age_cut.is_none() {
            break;
        }
        let Some(record) = records.next() else {
            return Err(super::mem::missing(next));
        };
        let (size, stamp) = record?;
        if next >= target && !over_bytes {
            // Only age could delete this entry: it must be stamped (or follow a stamped entry)
            // before the cut.
            let time = stamp.or(last_stamp_ms);
            if age_cut.is_none_or(|cut| time.is_none_or(|time| time >= cut)) {
                break;
            }
        }
        bytes = bytes.saturating_sub(size);
        last_stamp_ms = stamp.or(last_stamp_ms);
        next += 1;
    }
    Ok((next > first).then_some(Compaction {
        first_index: next,
        retained_bytes: retained_bytes.map(|_| bytes),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hard_state_rules() {
        let voted = HardState {
            term: 3,
            vote: Some(1),
        };
        let ok = |next: HardState| check_hard_state(&voted, &next).is_ok();
        assert!(ok(voted));
        assert!(ok(HardState {
            term: 4,
            vote: None
        }));
        assert!(!ok(HardState {
            term: 3,
            vote: Some(2)
        }));
        assert!(!ok(HardState {
            term: 3,
            vote: None
        }));
        assert!(!ok(HardState {
            term: 2,
            vote: Some(1)
        }));
        let unvoted = HardState {
            term: 3,
            vote: None,
        };
        assert!(check_hard_state(&unvoted, &voted).is_ok());
    }
}
