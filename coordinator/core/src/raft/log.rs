//! The core's in-memory view of the log: every entry since the first retained index, with the
//! three positions that matter — durable (locally persisted), committed, applied.
//!
//! Invariants (checked by [`RaftLog::validate`] in debug builds and in every simulator seed):
//! `applied <= committed <= last_index`, `applied <= durable <= last_index`, terms do not
//! decrease along the log, and `entries[k].index == first_index + k`.
//!
//! The whole retained log lives in memory. Log compaction (snapshots, next) bounds it: entries
//! at or below `prev_log_id` will have been folded into a snapshot.

use ordo_common::{Entry, LogId, LogIndex, Term};

#[derive(Debug)]
pub(crate) struct RaftLog {
    /// The id of the entry just before `entries[0]`: (0, 0) until compaction exists.
    prev_log_id: LogId,
    entries: Vec<Entry>,
    pub(crate) durable: LogIndex,
    pub(crate) committed: LogIndex,
    pub(crate) applied: LogIndex,
}

impl RaftLog {
    /// A log restored from storage: all of `entries` are durable, and everything up to `applied`
    /// has been applied by the state machine (so it was committed).
    pub(crate) fn restore(entries: Vec<Entry>, applied: LogIndex) -> Self {
        let first_index = entries.first().map_or(1, |entry| entry.index);
        let prev_log_id = LogId::new(0, first_index - 1);
        let durable = entries
            .last()
            .map_or(prev_log_id.index, |entry| entry.index);
        let log = Self {
            prev_log_id,
            entries,
            durable,
            committed: applied,
            applied,
        };
        log.validate();
        log
    }

    pub(crate) fn first_index(&self) -> LogIndex {
        self.prev_log_id.index + 1
    }

    pub(crate) fn last_log_id(&self) -> LogId {
        self.entries.last().map_or(self.prev_log_id, Entry::log_id)
    }

    pub(crate) fn last_index(&self) -> LogIndex {
        self.last_log_id().index
    }

    /// The term of the entry at `index`, if the log holds it (index 0 has term 0).
    pub(crate) fn term_at(&self, index: LogIndex) -> Option<Term> {
        if index == self.prev_log_id.index {
            return Some(self.prev_log_id.term);
        }
        self.entry(index).map(|entry| entry.term)
    }

    pub(crate) fn entry(&self, index: LogIndex) -> Option<&Entry> {
        let offset = index.checked_sub(self.first_index())?;
        self.entries.get(usize::try_from(offset).ok()?)
    }

    pub(crate) fn matches(&self, log_id: LogId) -> bool {
        self.term_at(log_id.index) == Some(log_id.term)
    }

    /// Entries in `[low, high)`, stopping early once `bytes_max` of payload or `count_max`
    /// entries are taken — but always at least one entry when the range is not empty, so an
    /// entry larger than the budget still moves.
    pub(crate) fn slice(
        &self,
        low: LogIndex,
        high: LogIndex,
        bytes_max: u64,
        count_max: usize,
    ) -> Vec<Entry> {
        let mut taken = Vec::new();
        let mut bytes = 0u64;
        for index in low..high.min(self.last_index() + 1) {
            let Some(entry) = self.entry(index) else {
                break;
            };
            bytes += entry.payload_bytes();
            if !taken.is_empty() && (bytes > bytes_max || taken.len() >= count_max) {
                break;
            }
            taken.push(entry.clone());
        }
        taken
    }

    /// Appends an entry at the end (leader path). Its index must be `last_index + 1`.
    pub(crate) fn push(&mut self, entry: Entry) {
        assert_eq!(
            entry.index,
            self.last_index() + 1,
            "leader appends must be contiguous"
        );
        assert!(
            entry.term >= self.last_log_id().term,
            "terms never decrease along the log"
        );
        self.entries.push(entry);
    }

    /// Removes every entry at or after `index`. Committed entries are never removed.
    pub(crate) fn truncate_from(&mut self, index: LogIndex) {
        assert!(index > self.committed, "truncating committed entry {index}");
        let keep = usize::try_from(index - self.first_index()).expect("index within log");
        self.entries.truncate(keep);
        self.durable = self.durable.min(index - 1);
    }

    /// The last index holding `term`, if any. Terms are sorted along the log, so this is a
    /// binary search.
    pub(crate) fn last_index_of_term(&self, term: Term) -> Option<LogIndex> {
        let position = self.entries.partition_point(|entry| entry.term <= term);
        let entry = self.entries.get(position.checked_sub(1)?)?;
        (entry.term == term).then_some(entry.index)
    }

    /// The first index holding the same term as `index` (walking back over that term).
    pub(crate) fn first_index_of_term_at(&self, index: LogIndex) -> LogIndex {
        let Some(term) = self.term_at(index) else {
            return index;
        };
        let position = self.entries.partition_point(|entry| entry.term < term);
        self.entries
            .get(position)
            .map_or(index, |entry| entry.index.min(index))
    }

    /// Checks the invariants in the module doc (see `Config::invariant_checks` for when).
    pub(crate) fn validate(&self) {
        {
            let last = self.last_index();
            assert!(self.applied <= self.committed, "applied > committed");
            assert!(
                self.committed <= last,
                "committed {} > last {last}",
                self.committed
            );
            assert!(
                self.applied <= self.durable.max(self.prev_log_id.index),
                "applied > durable"
            );
            assert!(self.durable <= last, "durable > last");
            for (offset, entry) in self.entries.iter().enumerate() {
                assert_eq!(entry.index, self.first_index() + offset as u64);
            }
            assert!(
                self.entries
                    .windows(2)
                    .all(|pair| pair[0].term <= pair[1].term)
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ordo_common::EntryPayload;

    fn entry(term: Term, index: LogIndex) -> Entry {
        Entry {
            term,
            index,
            payload: EntryPayload::Normal(vec![0; 10].into()),
        }
    }

    fn log_with_terms(terms: &[Term]) -> RaftLog {
        let entries = terms
            .iter()
            .enumerate()
            .map(|(i, &t)| entry(t, i as u64 + 1))
            .collect();
        RaftLog::restore(entries, 0)
    }

    #[test]
    fn term_lookups_follow_sorted_terms() {
        let log = log_with_terms(&[1, 1, 2, 2, 2, 4]);
        assert_eq!(log.term_at(0), Some(0));
        assert_eq!(log.term_at(3), Some(2));
        assert_eq!(log.term_at(7), None);
        assert_eq!(log.last_index_of_term(2), Some(5));
        assert_eq!(log.last_index_of_term(3), None);
        assert_eq!(log.first_index_of_term_at(5), 3);
        assert_eq!(log.first_index_of_term_at(6), 6);
    }

    #[test]
    fn slice_respects_budgets_but_moves_at_least_one() {
        let log = log_with_terms(&[1, 1, 1, 1]);
        assert_eq!(log.slice(1, 5, 25, 100).len(), 2);
        assert_eq!(log.slice(1, 5, 1, 100).len(), 1);
        assert_eq!(log.slice(2, 5, 1000, 2).len(), 2);
        assert!(log.slice(5, 9, 1000, 10).is_empty());
    }

    #[test]
    fn truncation_lowers_durable() {
        let mut log = log_with_terms(&[1, 1, 1, 1]);
        log.truncate_from(3);
        assert_eq!(log.last_index(), 2);
        assert_eq!(log.durable, 2);
    }
}
