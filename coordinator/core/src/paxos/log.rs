//! The Multi-Paxos engine's in-memory view of its slots: a **window** of the most recent ones,
//! each an [`Entry`] whose term is the ballot its value was accepted at, with the positions
//! that matter — decided (the contiguous prefix this node knows chosen), applied, durable —
//! and what storage still holds below the window.
//!
//! Unlike a Raft log, ballots need not grow along the slots: an acceptor that takes a new
//! leader's values for some slots keeps the values it accepted earlier for the slots after
//! them (dropping an accepted value could lose a chosen one). So a slot is rewritten in place,
//! and a write from slot `s` on carries every slot after `s` again. Durability is therefore
//! tracked by write, not by log id: two writes may end with the same entry.
//!
//! Invariants (checked by [`SlotLog::validate`]): `applied <= decided <= last_index`,
//! `applied <= durable <= last_index`, `prev.index <= applied`, the window is contiguous.

use std::collections::VecDeque;

use ordo_common::{Entry, LogId, LogIndex};

#[derive(Debug)]
pub(crate) struct SlotLog {
    /// The slot just before the window: (0, 0) while the window holds every slot.
    prev: LogId,
    entries: VecDeque<Entry>,
    /// Payload bytes in the window.
    bytes: u64,
    /// The lowest slot storage still holds (1 when nothing was ever purged).
    pub(crate) stored_first: LogIndex,
    /// Every slot up to here is chosen, and this node holds the chosen value.
    pub(crate) decided: LogIndex,
    pub(crate) applied: LogIndex,
    /// Writes emitted so far (each `PersistHardState`, `PersistEntries` and
    /// `InstallSnapshot` counts one).
    writes: u64,
    /// Entry writes not yet reported durable: (write number, first slot written).
    pending: VecDeque<(u64, LogIndex)>,
}

impl SlotLog {
    /// Slots restored from storage: `entries` follow `prev` and are all durable; everything up
    /// to `applied` (at least `prev`) was applied, so it was decided.
    pub(crate) fn restore(
        prev: LogId,
        entries: Vec<Entry>,
        applied: LogIndex,
        stored_first: LogIndex,
    ) -> Self {
        let bytes = entries.iter().map(Entry::payload_bytes).sum();
        let log = Self {
            prev,
            entries: entries.into(),
            bytes,
            stored_first,
            decided: applied,
            applied,
            writes: 0,
            pending: VecDeque::new(),
        };
        log.validate();
        log
    }

    pub(crate) fn first_index(&self) -> LogIndex {
        self.prev.index + 1
    }

    pub(crate) fn last_log_id(&self) -> LogId {
        self.entries.back().map_or(self.prev, Entry::log_id)
    }

    pub(crate) fn last_index(&self) -> LogIndex {
        self.last_log_id().index
    }

    pub(crate) fn window_bytes(&self) -> u64 {
        self.bytes
    }

    pub(crate) fn entry(&self, index: LogIndex) -> Option<&Entry> {
        let offset = index.checked_sub(self.first_index())?;
        self.entries.get(usize::try_from(offset).ok()?)
    }

    /// Every slot up to here is durable as the window holds it now.
    pub(crate) fn durable(&self) -> LogIndex {
        self.pending
            .iter()
            .map(|(_, first)| first - 1)
            .min()
            .unwrap_or(u64::MAX)
            .max(self.prev.index)
            .min(self.last_index())
    }

    /// Slots in `[low, high)` from the window, stopping once `bytes_max` of payload or
    /// `count_max` slots are taken, but always at least one when the range is not empty.
    pub(crate) fn slice(
        &self,
        low: LogIndex,
        high: LogIndex,
        bytes_max: u64,
        count_max: usize,
    ) -> Vec<Entry> {
        crate::raft::slice_window(
            &self.entries,
            self.first_index(),
            low,
            high,
            bytes_max,
            count_max,
        )
    }

    /// Puts `entries` (contiguous, the first at most one past the last slot, none decided) in
    /// their slots, keeping every slot after them. Returns the write to ask storage for: every
    /// slot from the first one on.
    pub(crate) fn overwrite(&mut self, entries: Vec<Entry>) -> Vec<Entry> {
        let Some(first) = entries.first().map(|entry| entry.index) else {
            return Vec::new();
        };
        assert!(first > self.decided, "rewriting decided slot {first}");
        assert!(
            first <= self.last_index() + 1,
            "slot {first} would leave a hole after {}",
            self.last_index()
        );
        for entry in entries {
            match self.entry(entry.index).map(Entry::payload_bytes) {
                Some(old_bytes) => {
                    let offset = (entry.index - self.first_index()) as usize;
                    self.bytes = self.bytes - old_bytes + entry.payload_bytes();
                    self.entries[offset] = entry;
                }
                None => {
                    self.bytes += entry.payload_bytes();
                    self.entries.push_back(entry);
                }
            }
        }
        self.slice(first, u64::MAX, u64::MAX, usize::MAX)
    }

    /// Counts a write that is durable before anything after it (hard state, snapshot).
    pub(crate) fn count_sync_write(&mut self) {
        self.writes += 1;
    }

    /// Counts an entry write from `first` on; `merged` when it joined the previous write.
    pub(crate) fn count_entry_write(&mut self, first: LogIndex, merged: bool) {
        if merged {
            let last = self.pending.back_mut().expect("a merged write is pending");
            last.1 = last.1.min(first);
            return;
        }
        self.writes += 1;
        self.pending.push_back((self.writes, first));
    }

    /// Storage made the first `writes` writes durable. Stale reports change nothing.
    pub(crate) fn writes_durable(&mut self, writes: u64) {
        while self
            .pending
            .front()
            .is_some_and(|(write, _)| *write <= writes)
        {
            self.pending.pop_front();
        }
    }

    /// Writes emitted so far.
    pub(crate) fn writes(&self) -> u64 {
        self.writes
    }

    /// Lets applied slots leave the window, oldest first, while it holds more than `bytes_max`.
    pub(crate) fn trim(&mut self, bytes_max: u64) {
        while self.bytes > bytes_max {
            let Some(front) = self.entries.front() else {
                break;
            };
            if front.index > self.applied {
                break;
            }
            let front = self.entries.pop_front().expect("peeked");
            self.bytes -= front.payload_bytes();
            self.prev = front.log_id();
        }
    }

    /// A snapshot through `last_included` (durable once installed) replaces every slot up to
    /// it; the slots after it stay, with the values accepted for them.
    pub(crate) fn install(&mut self, last_included: LogId) {
        assert!(
            last_included.index > self.decided,
            "a snapshot installs only past the decided prefix"
        );
        while self
            .entries
            .front()
            .is_some_and(|entry| entry.index <= last_included.index)
        {
            let entry = self.entries.pop_front().expect("peeked");
            self.bytes -= entry.payload_bytes();
        }
        self.prev = last_included;
        self.stored_first = last_included.index + 1;
        self.decided = last_included.index;
        self.applied = last_included.index;
    }

    pub(crate) fn validate(&self) {
        let last = self.last_index();
        assert!(self.applied <= self.decided, "applied > decided");
        assert!(
            self.decided <= last,
            "decided {} > last {last}",
            self.decided
        );
        assert!(self.applied <= self.durable(), "applied > durable");
        assert!(
            self.prev.index <= self.applied,
            "a slot left the window before it was applied"
        );
        let mut bytes = 0;
        for (expected, entry) in (self.first_index()..).zip(&self.entries) {
            assert_eq!(entry.index, expected, "the window is contiguous");
            bytes += entry.payload_bytes();
        }
        assert_eq!(bytes, self.bytes, "the window's bytes are counted");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ordo_common::EntryPayload;

    fn entry(term: u64, index: LogIndex, byte: u8) -> Entry {
        Entry {
            term,
            index,
            payload: EntryPayload::Normal(bytes::Bytes::from(vec![byte; 3])),
        }
    }

    #[test]
    fn an_overwrite_keeps_the_later_slots_and_rewrites_them() {
        let mut log = SlotLog::restore(
            LogId::default(),
            (1..=4).map(|index| entry(5, index, 0)).collect(),
            1,
            1,
        );
        let write = log.overwrite(vec![entry(9, 2, 1)]);
        assert_eq!(
            write.iter().map(|e| (e.index, e.term)).collect::<Vec<_>>(),
            [(2, 9), (3, 5), (4, 5)]
        );
        assert_eq!(log.window_bytes(), 12);
        log.validate();
    }

    #[test]
    fn durability_is_tracked_by_write_even_when_two_writes_end_alike() {
        let mut log = SlotLog::restore(LogId::default(), Vec::new(), 0, 1);
        log.overwrite((1..=4).map(|index| entry(5, index, 0)).collect());
        log.count_entry_write(1, false);
        // A second write rewrites slot 2 and keeps 3 and 4: it ends with the same entry.
        log.overwrite(vec![entry(5, 2, 7)]);
        log.count_entry_write(2, false);
        assert_eq!(log.durable(), 0);
        log.writes_durable(1);
        assert_eq!(log.durable(), 1, "the second write is not durable yet");
        log.writes_durable(2);
        assert_eq!(log.durable(), 4);
    }
}
