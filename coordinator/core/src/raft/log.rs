//! The core's in-memory view of the log: a **window** of the most recent entries, with the
//! positions that matter — durable (locally persisted), committed, applied — and what storage
//! still holds below the window.
//!
//! ```text
//!   purged        stored_first      prev_log_id | entries (in memory) ...        last
//!   ... gone ...  [ readable from storage ... ] [ window: applied ones, then the rest ]
//! ```
//!
//! Only applied entries leave the window, oldest first, once it holds more than its byte
//! budget; a leader reads older ones back from storage for a follower that needs them, and
//! sends a snapshot to one that needs entries storage no longer holds. An installed snapshot
//! replaces everything up to its last entry.
//!
//! Invariants (checked by [`RaftLog::validate`] in debug builds and in every simulator seed):
//! `applied <= committed <= last_index`, `applied <= durable <= last_index`,
//! `prev_log_id.index <= applied`, terms do not decrease along the window, and
//! `entries[k].index == prev_log_id.index + 1 + k`.

use std::collections::VecDeque;

use ordo_common::{Entry, LogId, LogIndex, Term};

#[derive(Debug)]
pub(crate) struct RaftLog {
    /// The id of the entry just before the window: (0, 0) while the window holds the whole log.
    prev_log_id: LogId,
    entries: VecDeque<Entry>,
    /// Payload bytes in the window (the unit of its budget).
    entries_bytes: u64,
    /// The lowest index storage still holds (1 when nothing was ever purged). Entries from here
    /// up to the window can be read back; below it, only a snapshot brings a follower along.
    pub(crate) stored_first: LogIndex,
    pub(crate) durable: LogIndex,
    pub(crate) committed: LogIndex,
    pub(crate) applied: LogIndex,
}

impl RaftLog {
    /// A log restored from storage: `entries` follow `prev_log_id` and are all durable;
    /// everything up to `applied` (at least `prev_log_id`) has been applied by the state
    /// machine (so it was committed). Storage holds entries from `stored_first` on.
    pub(crate) fn restore(
        prev_log_id: LogId,
        entries: Vec<Entry>,
        applied: LogIndex,
        stored_first: LogIndex,
    ) -> Self {
        let durable = entries
            .last()
            .map_or(prev_log_id.index, |entry| entry.index);
        let entries_bytes = entries.iter().map(Entry::payload_bytes).sum();
        let log = Self {
            prev_log_id,
            entries: entries.into(),
            entries_bytes,
            stored_first,
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

    /// The id of the entry just before the window.
    pub(crate) fn prev_log_id(&self) -> LogId {
        self.prev_log_id
    }

    pub(crate) fn last_log_id(&self) -> LogId {
        self.entries.back().map_or(self.prev_log_id, Entry::log_id)
    }

    pub(crate) fn last_index(&self) -> LogIndex {
        self.last_log_id().index
    }

    /// Payload bytes the window holds.
    pub(crate) fn window_bytes(&self) -> u64 {
        self.entries_bytes
    }

    /// The term of the entry at `index`, if the window holds it or it is just before the
    /// window (index 0 has term 0).
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

    /// Entries in `[low, high)` from the window, stopping early once `bytes_max` of payload or
    /// `count_max` entries are taken — but always at least one entry when the range is not
    /// empty, so an entry larger than the budget still moves.
    pub(crate) fn slice(
        &self,
        low: LogIndex,
        high: LogIndex,
        bytes_max: u64,
        count_max: usize,
    ) -> Vec<Entry> {
        slice_window(
            &self.entries,
            self.first_index(),
            low,
            high,
            bytes_max,
            count_max,
        )
    }

    /// Appends an entry at the end (leader path). Its index must be `last_index + 1`.
    pub(crate) fn push(&mut self, entry: Entry) {
        assert_eq!(
            entry.index,
            self.last_index() + 1,
            "appends must be contiguous"
        );
        assert!(
            entry.term >= self.last_log_id().term,
            "terms never decrease along the log"
        );
        self.entries_bytes += entry.payload_bytes();
        self.entries.push_back(entry);
    }

    /// Removes every entry at or after `index`. Committed entries are never removed.
    pub(crate) fn truncate_from(&mut self, index: LogIndex) {
        assert!(index > self.committed, "truncating committed entry {index}");
        let keep = usize::try_from(index - self.first_index()).expect("index within log");
        for entry in self.entries.drain(keep..) {
            self.entries_bytes -= entry.payload_bytes();
        }
        self.durable = self.durable.min(index - 1);
    }

    /// Lets applied entries leave the window, oldest first, while it holds more than
    /// `bytes_max` of payload.
    pub(crate) fn trim(&mut self, bytes_max: u64) {
        while self.entries_bytes > bytes_max {
            let Some(front) = self.entries.front() else {
                break;
            };
            if front.index > self.applied {
                break;
            }
            let front = self.entries.pop_front().expect("peeked");
            self.entries_bytes -= front.payload_bytes();
            self.prev_log_id = front.log_id();
        }
    }

    /// Everything up to `last_included` is now a snapshot: the window keeps the entries after
    /// it when `keep_suffix` (the log holds `last_included` itself, so what follows may be the
    /// leader's too), and nothing otherwise. Storage holds only what follows.
    pub(crate) fn install(&mut self, last_included: LogId, keep_suffix: bool) {
        assert!(
            last_included.index > self.committed,
            "a snapshot installs only past the commit index"
        );
        if keep_suffix {
            assert!(
                self.matches(last_included),
                "the kept suffix follows the snapshot"
            );
            while self
                .entries
                .front()
                .is_some_and(|entry| entry.index <= last_included.index)
            {
                let entry = self.entries.pop_front().expect("peeked");
                self.entries_bytes -= entry.payload_bytes();
            }
            self.durable = self.durable.max(last_included.index);
        } else {
            self.entries.clear();
            self.entries_bytes = 0;
            self.durable = last_included.index;
        }
        self.prev_log_id = last_included;
        self.stored_first = last_included.index + 1;
        self.committed = last_included.index;
        self.applied = last_included.index;
    }

    /// The last index holding `term` in the window, if any. Terms are sorted along the log, so
    /// this is a binary search.
    pub(crate) fn last_index_of_term(&self, term: Term) -> Option<LogIndex> {
        let position = self.entries.partition_point(|entry| entry.term <= term);
        let entry = self.entries.get(position.checked_sub(1)?)?;
        (entry.term == term).then_some(entry.index)
    }

    /// The first index holding the same term as `index` (walking back over that term, within
    /// the window).
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
        let last = self.last_index();
        assert!(self.applied <= self.committed, "applied > committed");
        assert!(
            self.committed <= last,
            "committed {} > last {last}",
            self.committed
        );
        assert!(self.applied <= self.durable, "applied > durable");
        assert!(self.durable <= last, "durable > last");
        assert!(
            self.prev_log_id.index <= self.applied,
            "an entry left the window before it was applied"
        );
        let mut term = self.prev_log_id.term;
        let mut bytes = 0;
        for (expected, entry) in (self.first_index()..).zip(&self.entries) {
            assert_eq!(entry.index, expected, "the window is contiguous");
            assert!(entry.term >= term, "terms never decrease along the log");
            term = entry.term;
            bytes += entry.payload_bytes();
        }
        assert_eq!(bytes, self.entries_bytes, "the window's bytes are counted");
    }
}

/// Entries in `[low, high)` of a contiguous `window` whose first entry is at `first_index`
/// (none when `low` is below it), stopping once `bytes_max` of payload or `count_max` entries are taken — but always at least
/// one when the range holds one, so an entry larger than the budget still moves.
pub(crate) fn slice_window(
    window: &VecDeque<Entry>,
    first_index: LogIndex,
    low: LogIndex,
    high: LogIndex,
    bytes_max: u64,
    count_max: usize,
) -> Vec<Entry> {
    if low < first_index {
        return Vec::new();
    }
    let start = low - first_index;
    let end = high.saturating_sub(first_index);
    let mut taken: Vec<Entry> = Vec::new();
    let mut bytes = 0u64;
    for entry in window
        .iter()
        .skip(usize::try_from(start).unwrap_or(usize::MAX))
        .take(usize::try_from(end.saturating_sub(start)).unwrap_or(usize::MAX))
    {
        bytes += entry.payload_bytes();
        if !taken.is_empty() && (bytes > bytes_max || taken.len() >= count_max) {
            break;
        }
        taken.push(entry.clone());
    }
    taken
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
        RaftLog::restore(LogId::default(), entries, 0, 1)
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
        assert_eq!(log.window_bytes(), 20);
    }

    #[test]
    fn only_applied_entries_leave_the_window_and_the_window_remembers_the_last_one() {
        let mut log = log_with_terms(&[1, 1, 2, 2, 2]);
        log.committed = 4;
        log.applied = 3;
        log.trim(15);
        assert_eq!(log.prev_log_id(), LogId::new(2, 3));
        assert_eq!(log.first_index(), 4);
        assert_eq!(log.term_at(3), Some(2));
        assert_eq!(log.term_at(2), None);
        assert_eq!(log.window_bytes(), 20);
        log.validate();
    }

    #[test]
    fn an_installed_snapshot_keeps_a_matching_suffix_and_drops_a_conflicting_log() {
        let mut log = log_with_terms(&[1, 1, 2, 2, 3]);
        log.install(LogId::new(2, 3), true);
        assert_eq!((log.first_index(), log.last_index()), (4, 5));
        assert_eq!((log.committed, log.applied, log.stored_first), (3, 3, 4));
        log.validate();
        let mut log = log_with_terms(&[1, 1, 2, 2, 3]);
        log.install(LogId::new(4, 4), false);
        assert_eq!(log.last_log_id(), LogId::new(4, 4));
        assert_eq!((log.durable, log.window_bytes()), (4, 0));
        log.validate();
    }
}
