//! The leader's view of one follower: how far it matches, what to send next, and the bounded
//! window of appends in flight.

use std::collections::VecDeque;

use ordo_common::LogIndex;

/// How the leader replicates to a follower.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReplicationMode {
    /// The leader does not know where the follower's log matches: one append at a time, each
    /// waiting for its answer (or the next heartbeat answer).
    Probe,
    /// The follower is known to match: appends stream without waiting for acknowledgements,
    /// up to the in-flight window.
    Replicate,
    /// The follower needs entries storage no longer holds: a snapshot is on its way, and
    /// nothing else is sent until the follower acknowledges it or it times out.
    Snapshot,
}

#[derive(Debug)]
pub(crate) struct Progress {
    pub(crate) match_index: LogIndex,
    pub(crate) next_index: LogIndex,
    pub(crate) mode: ReplicationMode,
    /// In Probe mode: an append is out and unanswered, so do not send another yet.
    pub(crate) probe_sent: bool,
    /// In Replicate mode: (last index, payload bytes) of each append not yet acknowledged.
    inflight: VecDeque<(LogIndex, u64)>,
    inflight_bytes: u64,
    /// Heard from in the current check-quorum window.
    pub(crate) recently_active: bool,
    /// Leader ticks since this member last answered anything.
    pub(crate) heard_ticks: u32,
    /// The newest read round this follower has echoed in the current term.
    pub(crate) read_round_acked: u64,
    /// The commit index this follower was last told by an append.
    pub(crate) commit_sent: LogIndex,
    /// Leader ticks since this follower last acknowledged progress while behind (or, in
    /// Snapshot mode, since the snapshot was asked for).
    pub(crate) stalled_ticks: u32,
    /// Entries from this index are being read back from storage for this follower: nothing
    /// else is sent until they arrive.
    pub(crate) fetching: Option<LogIndex>,
}

impl Progress {
    pub(crate) fn new(next_index: LogIndex) -> Self {
        Self {
            match_index: 0,
            next_index,
            mode: ReplicationMode::Probe,
            probe_sent: false,
            inflight: VecDeque::new(),
            inflight_bytes: 0,
            recently_active: false,
            heard_ticks: 0,
            read_round_acked: 0,
            commit_sent: 0,
            stalled_ticks: 0,
            fetching: None,
        }
    }

    /// Whether the leader must hold further appends to this follower for now.
    pub(crate) fn is_paused(&self, messages_max: usize, bytes_max: u64) -> bool {
        if self.fetching.is_some() {
            return true;
        }
        match self.mode {
            ReplicationMode::Snapshot => true,
            ReplicationMode::Probe => self.probe_sent,
            ReplicationMode::Replicate => {
                self.inflight.len() >= messages_max || self.inflight_bytes >= bytes_max
            }
        }
    }

    /// Records an append just sent whose last entry is `last_index`.
    pub(crate) fn sent(&mut self, last_index: LogIndex, bytes: u64, carried_entries: bool) {
        match self.mode {
            ReplicationMode::Probe => self.probe_sent = true,
            ReplicationMode::Replicate if carried_entries => {
                self.next_index = last_index + 1;
                self.inflight.push_back((last_index, bytes));
                self.inflight_bytes += bytes;
            }
            ReplicationMode::Replicate | ReplicationMode::Snapshot => {}
        }
    }

    /// An acknowledgement up to `match_index`. Returns whether it told the leader anything new.
    pub(crate) fn acknowledge(&mut self, match_index: LogIndex) -> bool {
        let advanced = match_index > self.match_index;
        if advanced {
            self.match_index = match_index;
            self.stalled_ticks = 0;
        }
        self.next_index = self.next_index.max(match_index + 1);
        self.probe_sent = false;
        while let Some(&(last, bytes)) = self.inflight.front() {
            if last > match_index {
                break;
            }
            self.inflight.pop_front();
            self.inflight_bytes = self
                .inflight_bytes
                .checked_sub(bytes)
                .expect("the in-flight bytes count every append in flight");
        }
        if self.mode != ReplicationMode::Replicate {
            self.enter(ReplicationMode::Replicate);
        }
        advanced
    }

    /// A rejection of the append whose previous index was `rejected_prev_index`; `next_guess`
    /// is where the hint says to try next. Returns false when the rejection is stale (answers an
    /// append older than the leader's current idea of this follower) and so must be ignored.
    pub(crate) fn reject(&mut self, rejected_prev_index: LogIndex, next_guess: LogIndex) -> bool {
        match self.mode {
            ReplicationMode::Replicate if rejected_prev_index <= self.match_index => false,
            ReplicationMode::Probe if rejected_prev_index + 1 != self.next_index => false,
            ReplicationMode::Snapshot => false,
            _ => {
                let floor = self.match_index + 1;
                self.enter(ReplicationMode::Probe);
                self.next_index = next_guess.clamp(floor, rejected_prev_index.max(floor));
                true
            }
        }
    }

    /// Falls back to probing from just after the match point (used when the in-flight window
    /// stalls, e.g. because appends were lost).
    pub(crate) fn restart_probe(&mut self) {
        self.enter(ReplicationMode::Probe);
        self.next_index = self.match_index + 1;
    }

    /// A snapshot is asked for: hold everything else until it is acknowledged or times out.
    pub(crate) fn send_snapshot(&mut self) {
        self.enter(ReplicationMode::Snapshot);
    }

    /// The snapshot's transfer failed: probe again, but only once the follower shows it is
    /// alive (a heartbeat answer re-arms the probe), so a dead follower costs no snapshots.
    pub(crate) fn snapshot_failed(&mut self) {
        self.restart_probe();
        self.probe_sent = true;
    }

    /// The window's accounting, for the core's invariant checks.
    pub(crate) fn validate(&self, last_index: LogIndex) {
        let bytes: u64 = self.inflight.iter().map(|(_, bytes)| bytes).sum();
        assert_eq!(
            bytes, self.inflight_bytes,
            "in-flight bytes match the window"
        );
        assert!(
            self.inflight
                .iter()
                .zip(self.inflight.iter().skip(1))
                .all(|(a, b)| a.0 < b.0),
            "appends in flight end at increasing indexes"
        );
        assert!(
            self.inflight
                .back()
                .is_none_or(|(last, _)| *last < self.next_index),
            "nothing in flight at or past the next index"
        );
        assert!(
            self.mode == ReplicationMode::Replicate || self.inflight.is_empty(),
            "only replication has a window"
        );
        assert!(self.match_index < self.next_index, "next is past match");
        assert!(
            self.match_index <= last_index,
            "a follower matches only what the leader holds"
        );
    }

    fn enter(&mut self, mode: ReplicationMode) {
        self.mode = mode;
        self.stalled_ticks = 0;
        self.probe_sent = false;
        self.fetching = None;
        self.inflight.clear();
        self.inflight_bytes = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_pauses_until_answered_then_replicates() {
        let mut progress = Progress::new(5);
        assert!(!progress.is_paused(4, 1000));
        progress.sent(4, 0, false);
        assert!(progress.is_paused(4, 1000));
        assert!(progress.acknowledge(4));
        assert_eq!(progress.mode, ReplicationMode::Replicate);
        assert_eq!(progress.next_index, 5);
    }

    #[test]
    fn replicate_window_is_bounded_by_count_and_bytes() {
        let mut progress = Progress::new(1);
        progress.acknowledge(0);
        progress.sent(3, 100, true);
        progress.sent(6, 100, true);
        assert!(progress.is_paused(2, 10_000));
        assert!(progress.is_paused(10, 200));
        assert!(!progress.is_paused(10, 201));
        progress.acknowledge(3);
        assert!(!progress.is_paused(2, 10_000));
        assert_eq!(progress.next_index, 7);
    }

    #[test]
    fn stale_rejections_are_ignored() {
        let mut progress = Progress::new(1);
        progress.acknowledge(10);
        assert!(
            !progress.reject(9, 3),
            "replicate: rejection at or below match is stale"
        );
        assert!(progress.reject(12, 11));
        assert_eq!(progress.mode, ReplicationMode::Probe);
        assert_eq!(progress.next_index, 11);
        assert!(
            !progress.reject(12, 11),
            "probe: only the outstanding probe's rejection counts"
        );
        assert!(progress.reject(10, 3));
        assert_eq!(progress.next_index, 11, "never below match + 1");
    }
}
